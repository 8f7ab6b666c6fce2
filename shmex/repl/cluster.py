"""Connecting to the NATS cluster and making sure the stream and the lease bucket exist.

Every entry point (the replicator, `shmex launch`'s start check, `shmex follow`) goes
through `connect`, which raises CannotOpen naming the servers when the cluster cannot be
reached, so that a command exits 2 with one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json

from shmex.errors import CannotOpen
from shmex.repl import names

REPLICAS = 3
CONNECT_TIMEOUT_S = 5.0
ANSWER_S = 60.0      # how long the cluster may take to answer at all (one request times out in 5 s)


def unanswered() -> tuple:
    """The exceptions that mean the cluster did not answer this time."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

    return NatsTimeout, asyncio.TimeoutError, ServiceUnavailableError, NoStreamResponseError


async def answered(make, *, deadline: float | None = None, waiting=None):
    """Await ``make()``, asked again while the cluster does not answer (a request timed out
    on a loaded machine, a stream still electing its leader, a lost quorum) until
    ``deadline`` (monotonic s; None: for as long as it takes). ``waiting()`` runs before
    each retry. Only for requests that are safe to repeat (reads, idempotent puts).
    Raises asyncio.TimeoutError past the deadline."""
    import time

    kinds = unanswered()
    while True:
        try:
            return await make()
        except kinds:
            if deadline is not None and time.monotonic() >= deadline:
                raise asyncio.TimeoutError from None
            if waiting is not None:
                waiting()
            await asyncio.sleep(0.1)


async def connect(servers, *, reconnect: bool = True):
    """-> (nc, js). Raises CannotOpen when no server answers."""
    import nats

    async def _quiet(e):        # reconnects are reported by the caller's own state
        pass

    try:
        nc = await nats.connect(servers=list(servers), connect_timeout=CONNECT_TIMEOUT_S,
                                allow_reconnect=reconnect, max_reconnect_attempts=-1 if reconnect else 0,
                                reconnect_time_wait=0.25, error_cb=_quiet)
    except Exception as e:   # noqa: BLE001 - nats-py raises several kinds; all mean "cannot reach"
        raise CannotOpen(f"NATS {','.join(servers)}: cannot connect: {e or type(e).__name__}") from None
    return nc, nc.jetstream()


async def ensure(js, stream: str, bucket: str, lease_s: float, replicas: int = REPLICAS):
    """Create the stream and the lease bucket if missing; -> the bucket (KeyValue)."""
    from nats.js import api
    from nats.js.errors import BucketNotFoundError, NotFoundError

    from nats.js.errors import APIError

    # two engines may make them at once (a primary and its follower starting): the loser's
    # create fails because the other's exists, and the next look finds it
    while True:
        try:
            await js.stream_info(stream)
            break
        except NotFoundError:
            try:
                await js.add_stream(api.StreamConfig(
                    name=stream, subjects=[names.journal_subject(stream), names.hash_subject(stream)],
                    num_replicas=replicas, storage=api.StorageType.FILE, duplicate_window=120.0))
            except APIError as e:
                if e.code != 400:
                    raise
                await asyncio.sleep(0.1)
    while True:
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            try:
                return await js.create_key_value(bucket=bucket, ttl=lease_s, history=1, replicas=replicas,
                                                 storage=api.StorageType.FILE)
            except APIError as e:
                if e.code != 400:
                    raise
                await asyncio.sleep(0.1)


async def stream_end(js, stream: str) -> tuple[int, int]:
    """-> (stream sequence, last command seq) of the journal's last message; (0, 0) when empty."""
    from nats.js.errors import NotFoundError

    try:
        m = await js.get_last_msg(stream, names.journal_subject(stream))
    except NotFoundError:
        return 0, 0
    return int(m.seq), int(m.headers[names.LAST_SEQ])


async def stream_origin(js, stream: str) -> str | None:
    """The engine that appended the journal's last message (None: empty, or unnamed)."""
    from nats.js.errors import NotFoundError

    try:
        m = await js.get_last_msg(stream, names.journal_subject(stream))
    except NotFoundError:
        return None
    return (m.headers or {}).get(names.ORIGIN)


async def stream_last_seq(js, stream: str) -> int:
    """The stream sequence of its last message on any subject (0: empty)."""
    info = await js.stream_info(stream)
    return int(info.state.last_seq)


async def put_config(kv, stream: str, book: dict, run_id: str) -> None:
    await kv.put(names.config_key(stream), json.dumps({"book": book, "run_id": run_id}).encode())


async def get_config(kv, stream: str) -> dict | None:
    from nats.js.errors import KeyNotFoundError

    try:
        return json.loads((await kv.get(names.config_key(stream))).value)
    except KeyNotFoundError:
        return None

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
            info = await js.stream_info(stream)
        except NotFoundError:
            try:
                await js.add_stream(api.StreamConfig(
                    name=stream, subjects=names.subjects(stream),
                    num_replicas=replicas, storage=api.StorageType.FILE, duplicate_window=120.0))
            except APIError as e:
                if e.code != 400:
                    raise
                await asyncio.sleep(0.1)
            continue
        missing = [s for s in names.subjects(stream) if s not in (info.config.subjects or [])]
        if not missing:
            break
        # a stream made by an engine that published fewer subjects: the others are added
        info.config.subjects = list(info.config.subjects or []) + missing
        await js.update_stream(info.config)
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


def primary_doc(book: dict, symbols_text: str | None, runs: list[dict]) -> dict:
    """What a follower needs to know of the primary beyond its journal (published on
    `names.primary_subject`): the book's configuration (the Matcher's arguments), its
    symbols file's text (the instruments of its feed and gateway), and its runs
    (`wal.manifest.feed_runs`: the feed's session and time stamps)."""
    return {"book": book, "symbols_text": symbols_text, "runs": runs}


async def last_primary(js, stream: str) -> dict | None:
    """The stream's last `primary_doc` (None: it has none yet)."""
    from nats.js.errors import NotFoundError

    try:
        m = await js.get_last_msg(stream, names.primary_subject(stream))
    except NotFoundError:
        return None
    return json.loads(m.data)

"""The primary's lease: one key in a JetStream key-value bucket whose TTL is the lease.

The holder renews it (`renew`: an update on the revision it holds) every TTL / 4. A taker
creates it (`take`: create succeeds only while no live entry exists) or, handed a revision,
replaces exactly that one. Both are compare-and-set on the key's revision inside the
stream's Raft log, so at most one of two contenders succeeds.
"""

from __future__ import annotations

import json
import os
import socket
import time

TAKE_TRIES = 50          # refused compare-and-set writes before `take` gives up for now
TAKE_PAUSE_S = 0.05


def holder(data_dir: str, run_id: str) -> dict:
    return {"host": socket.gethostname(), "data_dir": os.path.abspath(data_dir), "run_id": run_id,
            "pid": os.getpid(), "time_ns": time.time_ns()}


def origin(data_dir: str) -> str:
    """An engine's name on the journal messages it appends: its host and data directory."""
    return f"{socket.gethostname()}:{os.path.abspath(data_dir)}"


def same_engine(a: dict, b: dict) -> bool:
    """The same data directory on the same host: the same engine (a restart of it)."""
    return a.get("host") == b.get("host") and a.get("data_dir") == b.get("data_dir")


class Fenced(Exception):
    """Another engine holds the lease."""

    def __init__(self, other: dict):
        self.other = other
        super().__init__(f"the lease is held by {describe(other)}")


def describe(h: dict) -> str:
    return f"{h.get('host')}:{h.get('data_dir')} (run {h.get('run_id')}, pid {h.get('pid')})"


async def current(kv, key: str) -> tuple[int, dict | None]:
    """-> (revision, holder) of the live lease; (0, None) when it lapsed or never was."""
    from nats.js.errors import KeyNotFoundError

    try:
        e = await kv.get(key)
    except KeyNotFoundError:        # KeyDeletedError is one: an expired or deleted lease
        return 0, None
    return int(e.revision), json.loads(e.value)


async def take(kv, key: str, me: dict, *, revision: int = 0) -> int:
    """Take the lease for `me`: adopt `revision` (a promotion handed over), re-take our
    own engine's, or create it if it lapsed (also a handed-over one that lapsed while the
    engine started: nobody took it meanwhile); -> the new revision. Raises Fenced when
    another engine holds it.

    The read may be served by a replica that lags (a node just back) and the entry may
    lapse between the read and the write: the write is a compare-and-set, so a refused one
    only means the entry changed; it is read again. Raises asyncio.TimeoutError (the
    cluster did not settle: the callers ask again later) after TAKE_TRIES refusals."""
    import asyncio

    from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

    for _ in range(TAKE_TRIES):
        rev, other = await current(kv, key)
        try:
            if revision and rev == revision:
                return await kv.update(key, json.dumps(me).encode(), last=revision)
            if other is not None:
                if not same_engine(other, me):
                    raise Fenced(other)
                return await kv.update(key, json.dumps(me).encode(), last=rev)
            return await kv.create(key, json.dumps(me).encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            # refused: written or lapsed since the read (nats-py's create reports a key
            # that lapsed meanwhile as not found)
            await asyncio.sleep(TAKE_PAUSE_S)
    raise asyncio.TimeoutError(f"lease {key}: {TAKE_TRIES} compare-and-set writes refused in a row")


async def renew(kv, key: str, me: dict, revision: int) -> int:
    """-> the new revision. Raises Fenced when another engine took it; when it lapsed with
    nobody taking it, takes it again (still nobody else's)."""
    from nats.js.errors import KeyWrongLastSequenceError

    me = {**me, "time_ns": time.time_ns()}
    try:
        return await kv.update(key, json.dumps(me).encode(), last=revision)
    except KeyWrongLastSequenceError:
        return await take(kv, key, me)

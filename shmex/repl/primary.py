"""Before an engine with a replicator starts: can it be the primary of its stream?

It must reach the cluster (else exit 2 with the servers named), the lease must be free,
its own engine's, or handed to it (a promotion), and the stream must not hold seqs beyond
this data directory's log (then another engine went on after this one: it is a deposed
primary, and `shmex follow` is how it rejoins).
"""

from __future__ import annotations

import asyncio
import time

from shmex.errors import CannotOpen
from shmex.repl import cluster, lease, names


def log_end(data_dir: str) -> int:
    """The last command seq of the log in ``data_dir`` (0: none), scanning its last segment."""
    import os

    from shmex.wal.reader import WalReader
    from shmex.wal.segment import list_segments, read_header

    if not os.path.isdir(data_dir):
        return 0
    segs = list_segments(data_dir)
    if not segs:
        return 0
    for index, path in reversed(segs):
        first = int(read_header(path)["first_seq"])
        r = WalReader(data_dir)
        for _ in r.commands(first):
            pass
        if r.end.last_seq >= first or index == segs[0][0]:
            return r.end.last_seq
    return 0


async def _check(cfg) -> str | None:
    nc, js = await cluster.connect(cfg.nats, reconnect=False)
    deadline = time.monotonic() + cluster.ANSWER_S
    try:
        kv = await asyncio.wait_for(
            cluster.answered(lambda: cluster.ensure(js, cfg.nats_stream, cfg.nats_bucket, cfg.lease_s), deadline=deadline),
            cluster.ANSWER_S)
        rev, other = await cluster.answered(lambda: lease.current(kv, names.lease_key(cfg.nats_stream)), deadline=deadline)
        me = lease.holder(cfg.data_dir, cfg.run_id)
        handed_over = bool(cfg.lease_revision) and rev == cfg.lease_revision    # a promotion
        if other is not None and not lease.same_engine(other, me) and not handed_over:
            return (f"the lease in bucket {cfg.nats_bucket} is held by {lease.describe(other)}: this engine "
                    f"is not the primary of stream {cfg.nats_stream} (follow it with `shmex follow`)")
        _, shipped = await cluster.answered(lambda: cluster.stream_end(js, cfg.nats_stream), deadline=deadline)
        end = log_end(cfg.data_dir)
        if shipped > end:
            return (f"the stream {cfg.nats_stream} holds seqs up to {shipped:,}, beyond this log's end "
                    f"({end:,} in {cfg.data_dir}): another engine went on after this one; it is not the "
                    f"primary (follow the stream with `shmex follow` in a fresh directory)")
        # a log longer than the stream is this engine's own unshipped tail only if it
        # appended the stream's last message: a successor's appends (however few) mean its
        # tail and the stream part at the successor's first seq
        last_by = await cluster.answered(lambda: cluster.stream_origin(js, cfg.nats_stream), deadline=deadline)
        if last_by is not None and last_by != lease.origin(cfg.data_dir) and not handed_over:
            return (f"the stream {cfg.nats_stream}'s last append (to seq {shipped:,}) came from {last_by}: "
                    f"another engine went on after this one; it is not the primary (follow the stream "
                    f"with `shmex follow` in a fresh directory)")
        return None
    except asyncio.TimeoutError:
        return f"NATS {','.join(cfg.nats)}: JetStream did not answer in 60 s (no quorum?)"
    finally:
        await nc.close()


def check_start(cfg) -> str | None:
    """-> why this engine cannot start as the primary, or None. Raises CannotOpen."""
    try:
        return asyncio.run(_check(cfg))
    except CannotOpen:
        raise

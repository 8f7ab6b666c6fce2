"""What a log directory keeps: snapshots that agree with the log, and (retention) the WAL
segments the kept snapshots need.

- `retire_bound(dir, keep, durable_seq, window, replicated_seq)`: with ``keep`` N, the
  snapshot store keeps the newest N snapshots and recovery may fall back to the oldest of
  them, so the log is needed from its seq on; a restarted matcher also reads the last ``window`` seqs below
  the durable one (`resume.pseq_window`). Segments wholly at or below the bound may go
  (`WalWriter.retire`); until N snapshots exist, nothing goes. With a replicator, nothing
  above the seq the stream holds goes either (it reads those from the log).

- `drop_snapshots_after(dir, seq)`: a snapshot beyond the log's end holds commands the log
  does not (they were cut, or never durable); once the log grows past it again with other
  commands it would rebuild a wrong book, so it goes when the log is cut below it.
"""

from __future__ import annotations

import os

from shmex.files import fsync_dir
from shmex.recovery.recover import snapshot_dir
from shmex.snapshot import store


def drop_snapshots_after(directory, seq: int, *, dry_run: bool = False) -> list[str]:
    """Remove the snapshots at a seq above ``seq``; -> their paths (``dry_run``: only list them)."""
    snaps = snapshot_dir(directory)
    gone = [path for s, path in store.list_snapshots(snaps) if s > seq]
    if not dry_run and gone:
        for path in gone:
            os.unlink(path)
        fsync_dir(snaps)
    return gone


def retire_bound(directory, *, keep: int, durable_seq: int, window: int,
                 replicated_seq: int | None = None) -> int | None:
    """The highest seq whose segments retention may remove, or None (nothing may go:
    retention off with ``keep`` 0, or fewer than ``keep`` snapshots yet). With a
    replicator (``replicated_seq``: the highest seq the stream holds) nothing it has still
    to ship goes: a replicator behind a lost quorum, or restarted, reads it from the log."""
    snaps = store.list_snapshots(snapshot_dir(directory))
    if keep <= 0 or len(snaps) < keep:
        return None
    bound = min(snaps[-keep][0], durable_seq - window)
    return bound if replicated_seq is None else min(bound, replicated_seq)

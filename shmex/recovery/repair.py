"""`repair(dir)`: cut a damaged log at its first damage (what ``shmex repair``,
`shmex.commands.repair`, runs), holding the WAL writer's lock.

A writer and recovery refuse damage that is not a torn tail (intact records after it, a
seq reported durable, a run sealed beyond it): it lies among acknowledged records, and
dropping them is the operator's decision. Repair is that decision: it zeroes the log
from the first damage on and removes the later segments (`cut_tail` with ``force``),
removes the snapshots beyond the new end (they hold commands the log no longer has), and
brings the manifest in line: a run sealed past the cut is unsealed, a run that started
past it is dropped; each repair is listed in the manifest's ``repairs``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from shmex.errors import CannotOpen
from shmex.recovery.retention import drop_snapshots_after
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.wal.reader import Cut, cut_tail
from shmex.wal.writer import lock_directory


@dataclass
class Repaired:
    cut: Cut
    snapshots_removed: list[str] = field(default_factory=list)
    runs_unsealed: list[str] = field(default_factory=list)
    runs_dropped: list[str] = field(default_factory=list)


def repair(directory, *, dry_run: bool = False) -> Repaired:
    """Cut the log in ``directory`` at its first damage; CannotOpen if it is missing or a
    writer holds it. ``dry_run``: say what would be cut, change nothing."""
    directory = str(directory)
    if not os.path.isdir(directory):
        raise CannotOpen(f"{directory}: no such WAL directory")
    fd = lock_directory(directory)
    try:
        cut = cut_tail(directory, force=True, dry_run=dry_run)
        out = Repaired(cut)
        if cut.damage is None:
            return out
        out.snapshots_removed = drop_snapshots_after(directory, cut.last_seq, dry_run=dry_run)
        _fix_manifest(directory, out, dry_run)
        return out
    finally:
        os.close(fd)     # releases the lock


def _fix_manifest(directory, out: Repaired, dry_run: bool) -> None:
    doc = manifest.read(directory)
    if doc is None:
        return
    cut = out.cut
    kept_starts = {c.run_id for c in cut.end.controls if c.kind == wal_layout.REC_RUN_START}
    runs = []
    for run in doc["runs"]:
        if run["first_seq"] > cut.last_seq + 1 or (run["first_seq"] == cut.last_seq + 1
                                                  and run["run_id"] not in kept_starts):
            out.runs_dropped.append(run["run_id"])
            continue
        if run["sealed"] and run["last_seq"] > cut.last_seq:
            out.runs_unsealed.append(run["run_id"])
            run = {k: v for k, v in run.items() if k not in manifest.SEALED_KEYS}
            run["sealed"] = False
        runs.append(run)
    doc["runs"] = runs
    doc.setdefault("repairs", []).append({
        "at_ns": time.time_ns(), "damage": str(cut.damage), "last_seq": cut.last_seq,
        "seqs_cut": list(cut.seqs) if cut.seqs else None, "zeroed_bytes": cut.zeroed_bytes,
        "segments_removed": [os.path.basename(p) for p in cut.removed],
        "snapshots_removed": [os.path.basename(p) for p in out.snapshots_removed],
        "runs_unsealed": out.runs_unsealed, "runs_dropped": out.runs_dropped})
    if not dry_run:
        manifest.write(directory, doc)

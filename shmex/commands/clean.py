"""`shmex clean [--dry-run]`: remove the shared-memory segments of dead runs.

Only runs whose processes are all gone are touched (see `registry`); live runs are
listed as kept. Prints one line per segment removed. Exit code 0.
"""

from __future__ import annotations

import argparse
import sys

from shmex.shm.registry import list_runs, remove_dead_runs


def add_arguments(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")


def main(args: argparse.Namespace) -> int:
    dry_run = bool(args.dry_run)
    kept = [r for r in list_runs() if r.alive]
    removed = remove_dead_runs(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for s in removed:
        pid = s.creator_pid if s.creator_pid is not None else "?"
        note = f"  ({s.problem})" if s.problem else ""
        print(f"{verb} {s.name}  run={s.run_id} role={s.role} creator_pid={pid} "
              f"size={s.size_bytes}{note}")
    for r in kept:
        print(f"kept run {r.run_id}: {len(r.segments)} segment(s), alive: {r.why}", file=sys.stderr)
    runs = len({s.run_id for s in removed})
    print(f"{verb} {len(removed)} segment(s) of {runs} dead run(s); kept {len(kept)} live run(s)")
    return 0

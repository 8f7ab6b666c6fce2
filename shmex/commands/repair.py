"""``shmex repair DIR [--dry-run]``: cut a damaged WAL at its first damage.

A writer and recovery refuse damage that is not a torn tail: records in good order after
it were acknowledged, and only this explicit step drops them. It takes the WAL writer's
lock (a running engine's directory is refused), zeroes the log from the first damage on,
removes later segments and the snapshots beyond the new end, and prints what it cut.

Exit: 0 cut, or nothing to cut; 2 cannot open (missing, or a writer holds it).
"""

from __future__ import annotations

import os
import sys


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--dry-run", action="store_true", help="say what would be cut, change nothing")


def main(args) -> int:
    from shmex.errors import CannotOpen, CorruptRecord
    from shmex.recovery.repair import repair

    try:
        rep = repair(args.dir, dry_run=args.dry_run)
    except (CannotOpen, CorruptRecord) as e:
        print(f"repair: cannot open: {e}", file=sys.stderr)
        return 2
    cut = rep.cut
    if cut.damage is None:
        print(f"{args.dir}: the log is intact up to seq {cut.last_seq}: nothing to cut")
        return 0
    would = "would " if args.dry_run else ""
    what = f"seqs {cut.seqs[0]}..{cut.seqs[1]}" if cut.seqs else "the records"
    print(f"{would}cut {what} from {cut.damage.path} at offset {cut.damage.offset}: {cut.damage.what}")
    if cut.intact is not None:
        print(f"  {cut.intact.count:,} records in good order after the damage {would}go with it")
    print(f"  {cut.zeroed_bytes:,} bytes zeroed; {len(cut.removed)} later segment(s) removed"
          + (": " + ", ".join(os.path.basename(p) for p in cut.removed) if cut.removed else ""))
    if rep.snapshots_removed:
        print(f"  snapshots beyond seq {cut.last_seq} removed: "
              + ", ".join(os.path.basename(p) for p in rep.snapshots_removed))
    for rid in rep.runs_unsealed:
        print(f"  manifest: run {rid} unsealed (it was sealed past the cut)")
    for rid in rep.runs_dropped:
        print(f"  manifest: run {rid} dropped (it started past the cut)")
    print(f"  the log {'would end' if args.dry_run else 'now ends'} at seq {cut.last_seq}")
    return 0

"""``shmex verify DIR [--json PATH]``: check a run's WAL and snapshots.

Exit: 0 clean, 1 corrupt, 2 cannot open.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--json", metavar="PATH")


def main(args) -> int:
    from shmex.errors import CannotOpen, CorruptRecord
    from shmex.recovery.verify import DECODE_ERRORS, verify

    try:
        rep = verify(args.dir)
    except CannotOpen as e:
        print(f"verify: cannot open: {e}", file=sys.stderr)
        _write_json(args, {"directory": args.dir, "exit": 2, "error": str(e)})
        return 2
    except (CorruptRecord, OSError) + DECODE_ERRORS as e:
        print(f"CORRUPT: {args.dir}: {type(e).__name__}: {e}")
        _write_json(args, {"directory": args.dir, "exit": 1, "error": f"{type(e).__name__}: {e}"})
        return 1
    for f in rep.findings:
        print(f)
    span = f"seqs {rep.first_seq}..{rep.last_seq}" if rep.first_seq is not None else "no commands"
    status = "CORRUPT" if rep.corrupt else "clean"
    print(f"{rep.directory}: {rep.records:,} commands ({span}) in {rep.segments} segments, "
          f"{rep.runs} runs, {rep.snapshots} snapshots: {status}")
    code = 1 if rep.corrupt else 0
    doc = asdict(rep)
    doc["findings"] = [asdict(f) for f in rep.findings]
    doc["exit"] = code
    _write_json(args, doc)
    return code


def _write_json(args, doc) -> None:
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)

"""``shmex replay DIR [--until SEQ] [--json PATH]``: rebuild the book from a run's
snapshots and WAL and print its state hash.

Exit: 0 ok, 1 the log is damaged (replay stopped at a torn tail, or refused damage followed
by intact records), 2 cannot open (also ``--until`` a seq that retention removed: it says so).
"""

from __future__ import annotations

import json
import sys


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--until", type=int, metavar="SEQ")
    p.add_argument("--json", metavar="PATH")


def main(args) -> int:
    from shmex.errors import CannotOpen, ShmexError
    from shmex.recovery.recover import recover

    def progress(seq, n):
        print(f"replay: {n:,} commands, at seq {seq:,}", file=sys.stderr, flush=True)

    try:
        r = recover(args.dir, until=args.until, progress=progress)
    except CannotOpen as e:
        print(f"replay: cannot open: {e}", file=sys.stderr)
        return 2
    except ShmexError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 1
    m = r.matcher
    rate = r.records / r.replay_seconds if r.replay_seconds > 0 else 0.0
    src = f"snapshot {r.snapshot.path} (seq {r.snapshot.seq})" if r.snapshot else "an empty book"
    speed = (f"{r.replay_seconds:.3f} s of replay ({rate / 1e6:.2f}M commands/s)" if r.records
             else "nothing to replay after it")
    print(f"replayed {r.records:,} commands from {src} to seq {r.last_seq:,}: "
          f"{speed}, {r.seconds:.3f} s in all")
    print(f"state_hash {m.state_hash()}")
    for e in r.refused:
        print(f"refused snapshot: {e}")
    if r.damage:
        print(f"log damaged: {r.damage} -- stopped at seq {r.last_seq}")
    for f in r.mismatch:
        print(f"MISMATCH: {f}")
    for f in r.findings:
        print(f"note: {f}")
    tops = []
    for sym in range(m.config["symbols"]):
        bid, ask = m.best_bid(sym), m.best_ask(sym)
        tops.append({"symbol": sym, "best_bid": bid, "best_ask": ask})
        if sym < 20:
            print(f"  symbol {sym}: bid {bid if bid is not None else '-'}  ask {ask if ask is not None else '-'}")
    if len(tops) > 20:
        print(f"  ... {len(tops) - 20} more symbols (see --json)")
    if args.json:
        doc = {"last_seq": r.last_seq, "state_hash": m.state_hash(), "records": r.records,
               "records_per_s": rate, "seconds": r.seconds, "replay_seconds": r.replay_seconds,
               "snapshot": r.snapshot.path if r.snapshot else None,
               "snapshot_seq": r.snapshot.seq if r.snapshot else None,
               "damage": str(r.damage) if r.damage else None,
               "refused": [str(e) for e in r.refused], "mismatch": r.mismatch,
               "findings": r.findings, "top": tops}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 1 if (r.damage or r.refused or r.mismatch) else 0

"""``shmex feed DIR [--out FILE] [--symbols-file FILE] [--json PATH]``: regenerate a run's
ITCH 5.0 feed from its WAL, byte for byte what the live feed wrote, and compare the two.

The instruments come from DIR/feed/feed.json (written by the live feed), else from
``--symbols-file`` (default: the shipped example). The output has Nasdaq's sample-file
framing (2-byte length before each message): any ITCH 5.0 tool reads it.

Exit: 0 regenerated (and equal to DIR/feed/itch.bin where there is one), 1 it differs or
the log is damaged, 2 cannot open.
"""

from __future__ import annotations

import json
import os
import sys


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", metavar="FILE", help="where to write it (default DIR/feed/itch.regen.bin)")
    p.add_argument("--symbols-file", metavar="FILE", help="instruments when DIR has no feed.json")
    p.add_argument("--json", metavar="PATH")


def first_difference(a: str, b: str) -> int | None:
    """Byte offset of the first difference of two files (None: equal)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                n = min(len(x), len(y))
                return pos + next((i for i in range(n) if x[i] != y[i]), n)
            if not x:
                return None
            pos += len(x)


def main(args) -> int:
    from shmex.errors import CannotOpen, ShmexError
    from shmex.net import EXAMPLE_SYMBOLS, feedfile
    from shmex.recovery import feed
    from shmex.recovery.recover import matcher_config

    live, info = feedfile.paths(args.dir)
    if not os.path.isdir(args.dir):
        print(f"feed: cannot open: {args.dir}: no such directory", file=sys.stderr)
        return 2
    try:
        if os.path.exists(info):
            symbols = feedfile.info_symbols(feedfile.read_info(args.dir))
        else:
            symbols = feed.symbols_for(matcher_config(args.dir)["symbols"], args.symbols_file or EXAMPLE_SYMBOLS)
        out = args.out or os.path.join(os.path.dirname(live), "itch.regen.bin")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

        def progress(seq, n):
            print(f"feed: seq {seq:,}, {n:,} messages", file=sys.stderr, flush=True)

        with open(out, "wb") as f:
            msgs, size, damage = feed.regenerate(args.dir, symbols, f, progress=progress)
    except CannotOpen as e:
        print(f"feed: cannot open: {e}", file=sys.stderr)
        return 2
    except ShmexError as e:
        print(f"feed: {e}", file=sys.stderr)
        return 1
    print(f"feed: {msgs:,} ITCH 5.0 messages, {size:,} bytes -> {out}")
    code = 0
    if damage is not None:
        print(f"feed: the log is damaged: {damage}; the feed stops before it")
        code = 1
    diff = None
    if os.path.exists(live) and os.path.abspath(live) != os.path.abspath(out):
        diff = first_difference(live, out)
        if diff is None:
            print(f"feed: identical to the live feed {live}")
        else:
            print(f"feed: DIFFERS from the live feed {live} at byte {diff:,}")
            code = 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"messages": msgs, "bytes": size, "out": out, "damage": str(damage) if damage else None,
                       "live": live if os.path.exists(live) else None, "first_difference": diff}, f, indent=1)
    return code

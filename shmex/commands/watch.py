"""``shmex watch DIR [--depth N] [--no-check] [--timeout S] [--json PATH]``: join the ITCH
feed of the engine running on DIR, rebuild every symbol's book from it, show top of book
and depth live, and at the end of session check the book against the engine's.

The feed's group, port, re-request server and session come from DIR/feed/feed.json
(written by an engine launched with ``--feed``). A late join re-requests the feed from
its first message. On a terminal the view refreshes in place twice a second; otherwise a
progress line goes to stderr every 2 s. At the end: messages, packets, gaps and their
fill times, and the check: every symbol's levels (price, shares, orders) equal to the
book rebuilt from DIR's WAL.

Exit: 0 the book matches, 1 it does not (or the feed ended before the session did), 2
cannot open or no feed heard within --timeout.
"""

from __future__ import annotations

import json
import sys
import time


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--depth", type=int, default=5, metavar="N", help="levels shown per side (default 5)")
    p.add_argument("--no-check", action="store_true", help="do not compare with the engine's book at the end")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="give up after S seconds without a packet (default 30)")
    p.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="wait this long for DIR/feed/feed.json to appear (default 30)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--quiet", action="store_true", help="no live view")


def _price(units: int) -> str:
    return f"{units // 10_000}.{units % 10_000:04d}"


def view(book, symbols, depth: int) -> list[str]:
    """The compact L2 view: per symbol, `depth` bid and ask levels side by side."""
    from shmex.net import itch

    lines = []
    for k, s in enumerate(symbols):
        bids, asks = itch.levels(book, k, "B", depth), itch.levels(book, k, "S", depth)
        top = (f"{_price(bids[0][0]) if bids else '-':>12} | {_price(asks[0][0]) if asks else '-':<12}")
        lines.append(f"{s.name:<8} {top}")
        for i in range(max(len(bids), len(asks))):
            b = f"{bids[i][1]:>10,} @ {_price(bids[i][0]):>11}" if i < len(bids) else ""
            a = f"{_price(asks[i][0]):<11} x {asks[i][1]:<10,}" if i < len(asks) else ""
            lines.append(f"  {b:>25} | {a}")
    return lines


def check(book, data_dir, symbols) -> list[str]:
    """The differences between the subscriber's book and the one rebuilt from the WAL."""
    from shmex.net import itch
    from shmex.recovery import feed
    from shmex.recovery.recover import recover
    from shmex.schema import Side

    resting = recover(data_dir).matcher.resting()
    out = []
    for k, s in enumerate(symbols):
        for code, side in (("B", Side.BUY), ("S", Side.SELL)):
            want, got = feed.book_levels(resting, k, side, s.tick, s.lot), itch.levels(book, k, code)
            if want != got:
                first = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]), min(len(want), len(got)))
                out.append(f"{s.name} {'bid' if code == 'B' else 'ask'}: level {first}: feed "
                           f"{got[first] if first < len(got) else 'none'}, engine {want[first] if first < len(want) else 'none'} "
                           f"({len(got)} levels in the feed, {len(want)} in the engine)")
    return out


def main(args) -> int:
    import numpy as np

    from shmex.errors import CannotOpen
    from shmex.net import feedfile, itch
    from shmex.net.subscriber import Subscriber

    deadline = time.monotonic() + args.wait
    while True:
        try:
            info = feedfile.read_info(args.dir)
            break
        except CannotOpen as e:
            if time.monotonic() > deadline:
                print(f"watch: cannot open: {e}", file=sys.stderr)
                return 2
            time.sleep(0.1)
    symbols = feedfile.info_symbols(info)
    tty = sys.stdout.isatty() and not args.quiet
    book = itch.new_book()
    sub = Subscriber(info["group"], int(info["port"]), tuple(info["rerequest"]), iface=info["iface"],
                     session=info["session"], idle_timeout=args.timeout)
    t0 = last = time.monotonic()
    try:
        for first, block, count in sub.blocks():
            itch.apply(book, np.frombuffer(block, np.uint8))
            now = time.monotonic()
            if now - last >= (0.5 if tty else 2.0) and not args.quiet:
                last = now
                status = (f"session {info['session']}  seq {sub.expected - 1:,}  {sub.stats.messages / (now - t0):,.0f} msg/s  "
                          f"gaps {sub.stats.gaps}  re-requests {sub.stats.rerequests}  live orders {len(book.ids):,}")
                if tty:
                    sys.stdout.write("\x1b[H\x1b[J" + status + "\n" + "\n".join(view(book, symbols, args.depth)) + "\n")
                    sys.stdout.flush()
                else:
                    print(f"watch: {status}", file=sys.stderr, flush=True)
    except TimeoutError as e:
        print(f"watch: {e}", file=sys.stderr)
        sub.close()
        return 2
    finally:
        sub.close()
    secs = time.monotonic() - t0
    fills = sorted(sub.stats.gap_fill_ns)
    pct = (lambda q: fills[min(len(fills) - 1, int(q * len(fills)))] / 1e6) if fills else (lambda q: 0.0)
    print("\n".join(view(book, symbols, args.depth)))
    print(f"watch: end of session {info['session']}: {sub.stats.messages:,} messages in {sub.stats.packets:,} packets "
          f"({secs:.1f} s); {sub.stats.gaps} gaps, {sub.stats.rerequests:,} re-requests, "
          f"{sub.stats.duplicates} duplicates; gap filled in p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
          f"max {fills[-1] / 1e6 if fills else 0:.2f} ms")
    diffs = [] if args.no_check else check(book, args.dir, symbols)
    if not args.no_check:
        print("watch: book check: " + ("equal to the engine's book (every level of every symbol)" if not diffs
                                       else f"{len(diffs)} DIFFERENCES: " + "; ".join(diffs[:5])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"session": info["session"], "messages": sub.stats.messages, "packets": sub.stats.packets,
                       "gaps": sub.stats.gaps, "rerequests": sub.stats.rerequests,
                       "duplicates": sub.stats.duplicates, "gap_fill_ms": [x / 1e6 for x in fills],
                       "book_equal": None if args.no_check else not diffs, "differences": diffs}, f, indent=1)
    return 1 if diffs else 0

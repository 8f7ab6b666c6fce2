"""Test helpers: a random mixed command stream; itchfeed reading a feed."""

from __future__ import annotations

import numpy as np

from shmex.schema import COMMAND, Kind, OrderType, Side, Stp, Tif


def mixed_stream(n: int, seed: int, *, symbols: int = 2, producers: int = 3, lo: int = 90,
                 hi: int = 110) -> np.ndarray:
    """n commands of every kind: limit orders of each time in force, market orders, cancels
    and replaces (reductions, price moves, increases), self-trade prevention of each mode."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, COMMAND)
    live: list[tuple[int, int, int]] = []     # (producer, client id, symbol) sent as NEW
    nxt = 1
    for i in range(n):
        c = out[i]
        c["seq"] = i + 1
        c["engine_ns"] = 1_000_000_000 + 1000 * i
        c["pseq"] = i + 1
        u = rng.random()
        if live and u < 0.2:
            p, cid, sym = live[rng.integers(len(live))]
            c["kind"], c["producer"], c["client_id"], c["symbol"] = Kind.CANCEL, p, cid, sym
            continue
        if live and u < 0.4:
            p, cid, sym = live[rng.integers(len(live))]
            c["kind"], c["producer"], c["client_id"], c["symbol"] = Kind.REPLACE, p, cid, sym
            c["price"] = int(rng.integers(lo, hi + 1))
            c["qty"] = int(rng.integers(1, 20))
            c["stp"] = int(rng.integers(0, 5))
            continue
        p = int(rng.integers(1, producers + 1))
        sym = int(rng.integers(0, symbols))
        c["kind"], c["producer"], c["client_id"], c["symbol"] = Kind.NEW, p, nxt, sym
        c["side"] = Side.BUY if rng.random() < 0.5 else Side.SELL
        c["order_type"] = OrderType.MARKET if rng.random() < 0.05 else OrderType.LIMIT
        c["tif"] = int(rng.choice([Tif.GTC] * 6 + [Tif.IOC, Tif.FOK, Tif.POST_ONLY]))
        if c["order_type"] == OrderType.MARKET and c["tif"] == Tif.POST_ONLY:
            c["tif"] = Tif.IOC
        c["price"] = int(rng.integers(lo, hi + 1))
        c["qty"] = int(rng.integers(1, 30))
        c["account"] = p % 2 + 1
        c["stp"] = int(rng.integers(0, 5)) if rng.random() < 0.3 else Stp.NONE
        live.append((p, nxt, sym))
        nxt += 1
    return out


def assert_itchfeed_reads(data: bytes, lot: int | None = None) -> int:
    """A third-party parser (itchfeed) reads every message of a framed ITCH block with the
    fields our decoder reads; -> messages."""
    import io

    from itch.parser import MessageParser
    from shmex.net import itch

    ours = itch.messages(data)
    theirs = list(MessageParser().parse_file(io.BytesIO(data)))
    assert len(theirs) == len(ours)
    for mine, t in zip(ours, theirs):
        d = itch.decode(mine)
        assert t.message_type.decode() == d["type"]
        assert t.stock_locate == d["locate"] and t.timestamp == d["timestamp"]
        if d["type"] in ("A", "E", "X", "D", "U"):
            assert t.order_reference_number == d["ref"]
        if d["type"] == "A":
            assert (t.shares, t.price, t.stock.decode().rstrip()) == (d["shares"], d["price"], d["stock"])
        if d["type"] == "E":
            assert (t.executed_shares, t.match_number) == (d["shares"], d["match"])
        if d["type"] == "U":
            assert (t.new_order_reference_number, t.shares, t.price) == (d["new_ref"], d["shares"], d["price"])
        if d["type"] == "S":
            assert t.event_code.decode() == d["event"]
        if d["type"] == "R" and lot is not None:
            assert t.round_lot_size == lot
    return len(ours)

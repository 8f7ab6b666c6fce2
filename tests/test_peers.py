"""Each PyPI order book, through its adapter, gives the fills of a plain price-time book.

The peers come with the test command's `shmex[bench]` extra: a peer missing here fails
its test. A peer that needs a newer Python than this one is not run; a test pins down
that it says so. The reference here is a tiny obvious book, not shmex's matcher, so that
these tests check the adapters alone.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from shmex.bench import peers
from shmex.schema import (BUY, COMMAND, GTC, K_CANCEL, K_NEW, LIMIT, MAKER, MARKET, R_ACK, R_FILL,
                          REPORT, SELL, TAKER)

# ------------------------------------------------------------------ workload and reference


def new(cid: int, side: int, price: int, qty: int) -> tuple:
    return (K_NEW, side, price, qty, cid)


def cancel(cid: int) -> tuple:
    return (K_CANCEL, 0, 0, 0, cid)


def commands(rows: list[tuple]) -> np.ndarray:
    cmds = np.zeros(len(rows), dtype=COMMAND)
    for c, (kind, side, price, qty, cid) in zip(cmds, rows):
        c["kind"], c["client_id"] = kind, cid
        if kind == K_NEW:
            c["side"], c["order_type"], c["tif"], c["price"], c["qty"] = side, LIMIT, GTC, price, qty
    return cmds


def workload(n: int, seed: int, mid: int = 1_000) -> np.ndarray:
    """~55% passive limits 1..10 ticks behind mid, ~25% cancels of earlier ids (some filled,
    some already cancelled, a few never issued), ~20% orders 0..3 ticks through mid that
    sweep levels; mid drifts."""
    rng = np.random.default_rng(seed)
    rows, cid = [], 0
    for _ in range(n):
        roll = rng.integers(100)
        if roll < 25 and cid:
            rows.append(cancel(int(rng.integers(1, cid + 1)) if roll else 10**12 + cid))
            continue
        cid += 1
        side = BUY if rng.integers(2) else SELL
        sign = 1 if side == BUY else -1
        if roll < 80:
            price, qty = mid - sign * int(rng.integers(1, 11)), int(rng.integers(1, 101))
        else:
            price, qty = mid + sign * int(rng.integers(0, 4)), int(rng.integers(1, 301))
        rows.append(new(cid, side, price, qty))
        mid += int(rng.integers(-1, 2))
    return commands(rows)


def reference(cmds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fills (taker, maker, price, qty) and resting (side, price, cid, leaves) of a plain
    price-time book: best price first, FIFO within a level, at the resting order's price."""
    book: dict[int, list[list[int]]] = {BUY: [], SELL: []}  # [cid, price, leaves], arrival order
    fills = []
    for kind, side, price, qty, cid in zip(*(cmds[f].tolist() for f in ("kind", "side", "price", "qty", "client_id"))):
        if kind == K_CANCEL:
            for s in (BUY, SELL):
                book[s] = [o for o in book[s] if o[0] != cid]
            continue
        other = SELL if side == BUY else BUY
        while qty:
            crossing = [o for o in book[other] if (o[1] <= price if side == BUY else o[1] >= price)]
            if not crossing:
                break
            best = min(crossing, key=lambda o: o[1] if side == BUY else -o[1])  # first = FIFO
            take = min(qty, best[2])
            fills.append((cid, best[0], best[1], take))
            qty -= take
            best[2] -= take
            if not best[2]:
                book[other].remove(best)
        if qty:
            book[side].append([cid, price, qty])
    resting = [(s, o[1], o[0], o[2]) for s in (BUY, SELL) for o in book[s]]
    return (np.array(fills, dtype=np.int64).reshape(-1, 4),
            np.array(sorted(resting), dtype=np.int64).reshape(-1, 4))


# ------------------------------------------------------------------ the peers

SCENARIO = [  # FIFO within a level, a multi-level sweep with a partial, cancels of every kind
    new(1, SELL, 101, 5), new(2, SELL, 101, 7), new(3, SELL, 102, 4), new(4, SELL, 104, 9),
    new(5, BUY, 99, 3), new(6, BUY, 103, 14),   # 5@101 (1), 7@101 (2), 2@102 (3)
    cancel(1),                                  # already filled: a no-op
    new(7, SELL, 98, 6),                        # 3@99 (5); 3 rest at 98
    cancel(3), cancel(3), cancel(99),           # live, then already cancelled, then unknown
    new(8, BUY, 110, 20),                       # 3@98 (7), 9@104 (4); 8 rest at 110
]


RUNNABLE = [n for n, p in peers.PEERS.items() if sys.version_info[:2] >= p.requires_python]
TOO_NEW = [n for n in peers.PEERS if n not in RUNNABLE]


def run_peer(name: str, cmds: np.ndarray):
    peer = peers.PEERS[name]
    ok, why = peer.available()
    assert ok, why   # installed by the bench extra and runnable on this Python
    raw = peer.run(peer.prepare(cmds))
    return peer, raw


def test_peers_that_need_a_newer_python_say_so():
    for name in TOO_NEW:
        ok, why = peers.PEERS[name].available()
        assert not ok
        assert "needs Python >=" in why and f"{sys.version_info.major}.{sys.version_info.minor}" in why
    assert "limit-order-book" in RUNNABLE and "pyorderbook" in RUNNABLE


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize("cmds", [commands(SCENARIO), workload(3_000, 1), workload(3_000, 2)],
                         ids=["scenario", "workload-1", "workload-2"])
def test_peer_agrees_with_reference(name, cmds):
    peer, raw = run_peer(name, cmds)
    want_fills, want_resting = reference(cmds)
    assert len(want_fills) > 0
    if peer.reports_fills:
        assert peer.fills(raw).tolist() == want_fills.tolist()
    else:
        assert peer.fills(raw) is None
    got = peer.resting(raw)
    if got is not None:
        assert got.tolist() == want_resting.tolist()
    ok, what = peers.verify(name, raw, want_fills, want_resting)
    assert ok, what


def test_limit_order_book_levels_agree_with_reference():
    cmds = workload(3_000, 3)
    _, raw = run_peer("limit-order-book", cmds)
    _, resting = reference(cmds)
    want = {}
    for side, price, _, leaves in resting.tolist():
        q, n = want.get((side, price), (0, 0))
        want[(side, price)] = (q + leaves, n + 1)
    assert peers.lob_levels(raw).tolist() == [[s, p, q, n] for (s, p), (q, n) in sorted(want.items())]


def test_run_twice_from_one_prepare_gives_the_same_fills():
    for name, peer in peers.PEERS.items():
        if peer.available()[0] and peer.reports_fills:
            prepared = peer.prepare(workload(500, 4))
            assert peer.fills(peer.run(prepared)).tolist() == peer.fills(peer.run(prepared)).tolist()


def test_prepare_rejects_what_peers_cannot_run():
    cmds = commands([new(1, BUY, 100, 1)])
    cmds["order_type"] = MARKET
    with pytest.raises(ValueError, match="order_type"):
        peers._ops(cmds)
    cmds = commands([new(1, BUY, 0, 1)])
    with pytest.raises(ValueError, match="price"):
        peers._ops(cmds)


def test_fills_of_keeps_taker_fills_in_order():
    reports = np.zeros(5, dtype=REPORT)
    rows = [(R_ACK, 0, 7, 0, 0, 0), (R_FILL, TAKER, 7, 3, 101, 5), (R_FILL, MAKER, 3, 7, 101, 5),
            (R_FILL, TAKER, 7, 4, 102, 2), (R_FILL, MAKER, 4, 7, 102, 2)]
    for r, (kind, liq, cid, contra, price, qty) in zip(reports, rows):
        r["kind"], r["liquidity"], r["client_id"], r["contra_client_id"] = kind, liq, cid, contra
        r["price"], r["qty"] = price, qty
    assert peers.fills_of(reports).tolist() == [[7, 3, 101, 5], [7, 4, 102, 2]]


def test_version_of_a_missing_distribution_is_none():
    assert peers.version("shmex-no-such-distribution") is None
    assert peers.version("numpy")

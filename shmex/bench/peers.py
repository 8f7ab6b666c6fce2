"""Order books from PyPI, driven through their own APIs, for the matcher benchmark.

The benchmark feeds one workload (COMMAND records: LIMIT GTC NEWs and CANCELs on one
symbol) through shmex and through each book below, and checks that every peer gives
the same fills in the same order: ``(taker_client_id, maker_client_id, price_ticks,
qty)``. Each adapter splits the work so that only the peer's own code is timed:

    prepare(cmds) -> prepared   numpy records -> the peer's native inputs (untimed)
    run(prepared) -> raw        a fresh book; every command through the real API (TIMED)
    fills(raw)    -> (n, 4) int64 fills, or None where the peer reports none (untimed)
    resting(raw)  -> (n, 4) int64 (side, price_ticks, client_id, leaves) end state,
                     sorted by side, price, client_id, or None (untimed)

``fills_of(reports)`` and ``resting_of(matcher.resting())`` put shmex's output in the
same shape; ``verify(name, raw, fills, resting)`` compares (fills, then end state; L2 only
for limit-order-book 3.x); ``measure(name, cmds)`` is a best-of-N timing of ``run``.
Semantics, ids and known bugs of each peer are in the comment above its adapter.

Prices: shmex works in integer ticks. Where a peer's documented price type is Decimal
or float, ``prepare`` converts ticks once with TICK (0.01): tick t -> Decimal(t)/100
or t * 0.01, and ``fills`` converts back exactly. Peers that assign their own order
ids get a client_id -> peer id dict inside ``run`` (a user needs one to cancel).
Every peer here treats price 0 as special or invalid, so prices must be > 0 ticks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shmex.schema import BUY, GTC, K_CANCEL, K_NEW, LIMIT, R_FILL, SELL, TAKER

TICK_PLACES = 2  # Decimal/float peers see price_ticks * 10**-TICK_PLACES
_SYMBOL = "SHMX"
_NO_FILLS = np.zeros((0, 4), dtype=np.int64)


def _ops(cmds: np.ndarray) -> tuple[list, list, list, list, list]:
    """Columns of the workload as Python lists; rejects what the peers cannot run."""
    kind = cmds["kind"]
    new = kind == K_NEW
    bad = ~(new | (kind == K_CANCEL))
    if bad.any():
        raise ValueError(f"kind: only NEW and CANCEL are supported, found {int(kind[bad][0])}")
    if new.any():
        if (cmds["order_type"][new] != LIMIT).any() or (cmds["tif"][new] != GTC).any():
            raise ValueError("order_type/tif: peers run LIMIT GTC orders only")
        if not np.isin(cmds["side"][new], (BUY, SELL)).all():
            raise ValueError("side: expected BUY or SELL")
        if (cmds["price"][new] <= 0).any():
            raise ValueError("price: peers need prices > 0 ticks (0 means market to some)")
        if (cmds["qty"][new] <= 0).any():
            raise ValueError("qty: must be > 0")
    return (new.tolist(), (cmds["side"] == BUY).tolist(), cmds["client_id"].tolist(),
            cmds["qty"].tolist(), cmds["price"].tolist())


def _as_fills(rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4) if rows else _NO_FILLS.copy()


def _as_resting(rows: list) -> np.ndarray:
    if not rows:
        return np.zeros((0, 4), dtype=np.int64)
    a = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return a[np.lexsort((a[:, 2], a[:, 1], a[:, 0]))]


def _dec(ticks: int) -> Decimal:
    return Decimal(ticks).scaleb(-TICK_PLACES)


def _dec_ticks(price: Decimal) -> int:
    return int(Decimal(price).scaleb(TICK_PLACES))


@dataclass
class Adapter:
    """One PyPI order book. ``dist`` is the pip name, ``module`` the import name."""

    dist: str
    module: str
    impl: str                 # "C++ via ctypes", "Cython", "pure Python"
    price_type: str           # what the peer's API takes, and how ticks are converted
    notes: str
    prepare: Callable[[np.ndarray], Any]
    run: Callable[[Any], Any]
    fills: Callable[[Any], np.ndarray | None]
    resting: Callable[[Any], np.ndarray | None]
    requires_python: tuple[int, int] = (3, 11)
    reports_fills: bool = True  # False: fills() gives None; check resting() instead
    name: str = field(default="")

    def __post_init__(self) -> None:
        self.name = self.name or self.dist

    def available(self) -> tuple[bool, str]:
        """(True, version) if the package imports on this Python, else (False, why)."""
        if sys.version_info[:2] < self.requires_python:
            need = ".".join(map(str, self.requires_python))
            return False, (f"{self.dist} needs Python >= {need}, this is "
                           f"{sys.version_info.major}.{sys.version_info.minor}")
        try:
            importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            return False, f"{self.dist} not installed (pip install 'shmex[bench]'): {exc}"
        except (ImportError, OSError, SyntaxError) as exc:  # a wheel that cannot load here
            return False, f"{self.dist} {version(self.dist)} is broken here: {exc!r}"
        return True, version(self.dist) or "?"


def version(name: str) -> str | None:
    """The installed version of a peer (registry name or distribution), or None."""
    try:
        return importlib.metadata.version(PEERS[name].dist if name in PEERS else name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- limit-order-book (C++)
# API: LimitOrderBook().limit_buy/limit_sell(order_id, quantity, price), has(id),
# cancel(id); integer prices (uint64) and quantities (uint32): ticks pass as they are.
# It reports no fills at all (the C++ fill callback only erases the filled order), so
# the benchmark can only verify its end state. 2.0.0 aborts the process on cancel of an
# unknown id (std::out_of_range through ctypes), so every cancel asks has() first.

def _lob_prepare(cmds: np.ndarray) -> tuple:
    new, buy, cid, qty, price = _ops(cmds)
    ops = [(1 if b else 2, c, q, p) if n else (0, c, 0, 0)
           for n, b, c, q, p in zip(new, buy, cid, qty, price)]
    return ops, sorted(set(p for n, p in zip(new, price) if n)), [c for n, c in zip(new, cid) if n]


def _lob_run(prepared: tuple) -> tuple:
    from limit_order_book import LimitOrderBook
    ops = prepared[0]
    book = LimitOrderBook()
    limit_buy, limit_sell, has, cancel = book.limit_buy, book.limit_sell, book.has, book.cancel
    for op, cid, qty, price in ops:
        if op == 1:
            limit_buy(cid, qty, price)
        elif op == 2:
            limit_sell(cid, qty, price)
        elif has(cid):
            cancel(cid)
    return book, prepared


def _lob_resting(raw: tuple) -> np.ndarray | None:
    """Every live order, read from the C++ Order struct (2.x: ctypes `get`)."""
    book, (_, _, new_cids) = raw
    try:
        from limit_order_book.library import Library  # 2.x only; 3.x has no pointer API
    except ImportError:
        return None
    import ctypes
    rows = []
    for cid in new_cids:
        if book.has(cid):
            ptr = Library.functions.get(book._book, cid)
            # struct Order : DLL::Node {prev, next; uid u64; side bool; quantity u32; price u64}
            uid = ctypes.c_uint64.from_address(ptr + 16).value
            side = ctypes.c_bool.from_address(ptr + 24).value
            qty = ctypes.c_uint32.from_address(ptr + 28).value
            price = ctypes.c_uint64.from_address(ptr + 32).value
            if uid != cid:
                raise AssertionError(f"Invariant: limit-order-book get({cid}) gave uid {uid}")
            rows.append((BUY if side else SELL, price, cid, qty))
    return _as_resting(rows)


def lob_levels(raw: tuple) -> np.ndarray:
    """L2 end state (side, price_ticks, qty, orders) through the public API (2.x and 3.x)."""
    book, (_, prices, _) = raw
    rows = []
    for p in prices:
        vb, vs = book.volume_buy(p), book.volume_sell(p)
        if vb:
            rows.append((BUY, p, vb, book.count_at(p)))
        if vs:
            rows.append((SELL, p, vs, book.count_at(p)))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


# ---------------------------------------------------------------- cython-orderbook
# API: OrderBook().add_limit_order(Order(OrderSide.BID|ASK, qty, price)), cancel_order(id)
# -> bool; ids are assigned by the library (a global counter, as str). Fills land in
# book.trade_log as Trade(price, quantity_filled, aggressor_side, aggressor_id,
# filler_id, trade_type, timestamp=datetime.now()). Price: declared Decimal (best_bid()
# -> Decimal): ticks -> Decimal(ticks) / 100 in prepare.

def _cob_prepare(cmds: np.ndarray) -> list:
    from cython_orderbook import OrderSide
    new, buy, cid, qty, price = _ops(cmds)
    bid, ask = OrderSide.BID, OrderSide.ASK
    return [((bid if b else ask), c, q, _dec(p)) if n else (None, c, 0, None)
            for n, b, c, q, p in zip(new, buy, cid, qty, price)]


def _cob_run(ops: list) -> tuple:
    from cython_orderbook import Order, OrderBook
    book = OrderBook()
    add, cancel = book.add_limit_order, book.cancel_order
    ids: dict[int, str] = {}
    for side, cid, qty, price in ops:
        if side is not None:
            o = Order(side, qty, price)
            ids[cid] = o.order_id
            add(o)
        else:
            oid = ids.get(cid)
            if oid is not None:
                cancel(oid)  # returns False when the order is no longer in the book
    return book, ids


def _cob_fills(raw: tuple) -> np.ndarray:
    book, ids = raw
    cid_of = {v: k for k, v in ids.items()}
    return _as_fills([(cid_of[t.aggressor_id], cid_of[t.filler_id], _dec_ticks(t.price),
                       t.quantity_filled) for t in book.trade_log])


def _cob_resting(raw: tuple) -> np.ndarray:
    from cython_orderbook import OrderSide
    book, ids = raw
    cid_of = {v: k for k, v in ids.items()}
    return _as_resting([(BUY if o.side == OrderSide.BID else SELL, _dec_ticks(o.price),
                         cid_of[oid], o.remaining_quantity)
                        for oid, (_, o) in book.orders.items()])


# ---------------------------------------------------------------- pyorderbook
# API: Book().match(Order(Side.BID|ASK, symbol, price, quantity)) -> TradeBlotter with
# .trades [Trade(incoming_order_id, standing_order_id, fill_quantity, fill_price)];
# Book().cancel(order) takes the Order object. Ids are uuid4s made by the library.
# Price: Order() does Decimal(str(price)); we pass Decimal(ticks) / 100 from prepare.
# Cancel of a filled order raises KeyError after logging an ERROR line (and importing
# pyorderbook runs logging.basicConfig(INFO)), so the adapter cancels only orders whose
# own quantity is still > 0 and that it has not cancelled before, as a user holding the
# Order object would; the KeyError is caught for safety.

def _pob_prepare(cmds: np.ndarray) -> tuple:
    from pyorderbook import Side
    new, buy, cid, qty, price = _ops(cmds)
    ops = [((Side.BID if b else Side.ASK), c, q, _dec(p)) if n else (None, c, 0, None)
           for n, b, c, q, p in zip(new, buy, cid, qty, price)]
    return ops, [c for n, c in zip(new, cid) if n]


def _pob_run(prepared: tuple) -> tuple:
    from pyorderbook import Book, Order
    ops = prepared[0]
    book = Book()
    match, cancel = book.match, book.cancel
    live: dict[int, Any] = {}
    blotters = []
    for side, cid, qty, price in ops:
        if side is not None:
            o = Order(side, _SYMBOL, price, qty)
            live[cid] = o
            blotters.append(match(o))
        else:
            o = live.pop(cid, None)
            if o is not None and o.quantity:
                try:
                    cancel(o)
                except KeyError:
                    pass
    return book, blotters, prepared[1]


def _pob_fills(raw: tuple) -> np.ndarray:
    _, blotters, new_cids = raw
    cid_of = {b.order.id: c for b, c in zip(blotters, new_cids)}
    return _as_fills([(cid_of[t.incoming_order_id], cid_of[t.standing_order_id],
                       _dec_ticks(t.fill_price), t.fill_quantity)
                      for b in blotters for t in b.trades])


def _pob_resting(raw: tuple) -> np.ndarray:
    from pyorderbook import Side
    book, blotters, new_cids = raw
    cid_of = {b.order.id: c for b, c in zip(blotters, new_cids)}
    return _as_resting([(BUY if o.side == Side.BID else SELL, _dec_ticks(o.price),
                         cid_of[oid], o.quantity) for oid, o in book.order_map.items()])


# ---------------------------------------------------------------- lightmatchingengine
# API: LightMatchingEngine().add_order(instmt, price, qty, side) -> (order, trades);
# cancel_order(order_id, instmt) -> order or None. Ids are assigned by the engine (1, 2,
# ...). A filled order stays in its order_id_map, so cancelling it after its price level
# emptied fails the library's own `assert order_price in ...` (AssertionError; KeyError
# under -O): the adapter catches exactly those; if the level still exists it returns None. Per crossed level it reports one aggregated taker
# Trade, then one Trade per maker (trade_side = the maker's side): fills are the maker
# trades, paired with the taker. Price: float (0.0 means market): ticks * 0.01.

def _lme_prepare(cmds: np.ndarray) -> tuple:
    new, buy, cid, qty, price = _ops(cmds)
    scale = 10.0 ** -TICK_PLACES
    ops = [((1 if b else 2), c, q, p * scale) if n else (0, c, 0, 0.0)
           for n, b, c, q, p in zip(new, buy, cid, qty, price)]
    return ops, [c for n, c in zip(new, cid) if n]


def _lme_run(prepared: tuple) -> tuple:
    from lightmatchingengine.lightmatchingengine import LightMatchingEngine
    ops = prepared[0]
    engine = LightMatchingEngine()
    add, cancel = engine.add_order, engine.cancel_order
    ids: dict[int, int] = {}
    results = []
    for side, cid, qty, price in ops:
        if side:
            order, trades = add(_SYMBOL, price, qty, side)
            ids[cid] = order.order_id
            results.append(trades)
        else:
            oid = ids.get(cid)
            if oid is not None:
                try:
                    cancel(oid, _SYMBOL)
                except (AssertionError, KeyError):  # already filled, its level gone
                    pass
    return engine, ids, results, prepared[1]


def _lme_fills(raw: tuple) -> np.ndarray:
    _, ids, results, new_cids = raw
    cid_of = {v: k for k, v in ids.items()}
    scale = 10 ** TICK_PLACES
    rows = []
    for taker, trades in zip(new_cids, results):
        if trades:
            taker_side = trades[0].trade_side  # the first trade of a call is the taker's
            rows.extend((taker, cid_of[t.order_id], round(t.trade_price * scale), t.trade_qty)
                        for t in trades if t.trade_side != taker_side)
    return _as_fills(rows)


def _lme_resting(raw: tuple) -> np.ndarray:
    engine, ids, _, _ = raw
    cid_of = {v: k for k, v in ids.items()}
    book = engine.order_books.get(_SYMBOL)
    scale = 10 ** TICK_PLACES
    return _as_resting([] if book is None else [
        (BUY if o.side == 1 else SELL, round(o.price * scale), cid_of[oid], o.leaves_qty)
        for oid, o in book.order_id_map.items() if o.leaves_qty > 0])  # map keeps filled ones


# ---------------------------------------------------------------- matching-engine
# API: MatchingEngine().process(SequencedCommand) -> [events]; Sequencer().stamp(cmd)
# gives seq and ts (time.time_ns per command). Commands are msgspec structs built in
# prepare: NewOrder(order_id=client_id, account=1, side, price=ticks, qty, stp=NONE) —
# the default stp, CANCEL_TAKER, would cancel every cross in a one-account workload —
# and CancelOrder(client_id, 1); a cancel of a filled order is an OrderRejected event.
# Integer ticks and lots natively. Needs Python >= 3.12 (PEP 695 `type` statements).
# "matching-engine": the engine as its own bench drives it (sequencer + engine, no I/O).
# "matching-engine+wal": as its gateway worker does, minus asyncio: groups of WAL_BATCH
# commands appended to its WAL with one write per group (fsync off: page cache only), then
# applied; a snapshot every SNAPSHOT_EVERY commands (encode + write, fsync off).

WAL_BATCH, SNAPSHOT_EVERY = 512, 100_000


def _me_prepare(cmds: np.ndarray) -> list:
    from matching_engine import CancelOrder, NewOrder, SelfTradePrevention, Side
    new, buy, cid, qty, price = _ops(cmds)
    none = SelfTradePrevention.NONE
    return [NewOrder(c, 1, Side.BUY if b else Side.SELL, p, q, stp=none) if n
            else CancelOrder(c, 1) for n, b, c, q, p in zip(new, buy, cid, qty, price)]


def _me_run(cmds: list) -> tuple:
    from matching_engine.engine import MatchingEngine
    from matching_engine.sequencer import Sequencer
    engine = MatchingEngine()
    process, stamp = engine.process, Sequencer().stamp
    return engine, [process(stamp(c)) for c in cmds]


def _me_wal_run(cmds: list) -> tuple:
    from matching_engine.engine import MatchingEngine
    from matching_engine.journal import Journal
    from matching_engine.sequencer import Sequencer
    from matching_engine.snapshot import encode_snapshot
    engine, sequencer = MatchingEngine(), Sequencer()
    process, stamp = engine.process, sequencer.stamp
    out = []
    with tempfile.TemporaryDirectory(prefix="shmex-peer-me-") as root:
        journal = Journal(Path(root), fsync=False)
        journal.open(1)
        append, since = journal.append, 0
        for i in range(0, len(cmds), WAL_BATCH):
            stamped = [stamp(c) for c in cmds[i:i + WAL_BATCH]]
            for sc in stamped:
                append(sc)
            journal.sync()
            out.extend(process(sc) for sc in stamped)
            since += len(stamped)
            if since >= SNAPSHOT_EVERY:
                journal.checkpoint(encode_snapshot(engine, sequencer.last_ts), engine.last_seq)
                since = 0
        journal.close()
    return engine, out


def _me_fills(raw: tuple) -> np.ndarray:
    from matching_engine.events import Trade
    _, out = raw
    return _as_fills([(e.taker_order_id, e.maker_order_id, e.price, e.qty)
                      for events in out for e in events if type(e) is Trade])


def _me_resting(raw: tuple) -> np.ndarray:
    from matching_engine import Side
    engine, _ = raw
    return _as_resting([(BUY if e.side is Side.BUY else SELL, e.price, e.order_id, e.qty)
                        for e in engine.book.entries()])


PEERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("limit-order-book", "limit_order_book", "C++ (2.x via ctypes; 3.x Cython)",
            "uint64 integer price: ticks as they are",
            "reports no fills: only its end state (resting orders, L2) can be checked; "
            "3.x needs Python >= 3.13, so 3.11 gets 2.0.0",
            _lob_prepare, _lob_run, lambda raw: None, _lob_resting, reports_fills=False),
    Adapter("cython-orderbook", "cython_orderbook", "Cython (+ sortedcontainers)",
            "Decimal: ticks / 100", "library-assigned str ids; a client_id map in the loop",
            _cob_prepare, _cob_run, _cob_fills, _cob_resting),
    Adapter("pyorderbook", "pyorderbook", "pure Python", "Decimal: ticks / 100",
            "uuid4 ids; cancel takes the Order object", _pob_prepare, _pob_run,
            _pob_fills, _pob_resting),
    Adapter("lightmatchingengine", "lightmatchingengine", "pure Python",
            "float: ticks * 0.01", "engine-assigned ids; best price by min()/max() over "
            "levels and cancel by linear scan of the level", _lme_prepare, _lme_run,
            _lme_fills, _lme_resting),
    Adapter("matching-engine", "matching_engine", "pure Python (msgspec)",
            "integer ticks natively", "sequencer + engine in memory, no WAL",
            _me_prepare, _me_run, _me_fills, _me_resting, requires_python=(3, 12)),
    Adapter("matching-engine", "matching_engine", "pure Python (msgspec)",
            "integer ticks natively", f"WAL group commit every {WAL_BATCH} (fsync off), "
            f"snapshot every {SNAPSHOT_EVERY:,}", _me_prepare, _me_wal_run, _me_fills,
            _me_resting, requires_python=(3, 12), name="matching-engine+wal"),
)}



def fills_of(reports: np.ndarray) -> np.ndarray:
    """shmex REPORT records -> the (taker, maker, price_ticks, qty) fills peers are held to."""
    f = reports[(reports["kind"] == R_FILL) & (reports["liquidity"] == TAKER)]
    return np.stack([f["client_id"], f["contra_client_id"], f["price"], f["qty"]],
                    axis=1).astype(np.int64).reshape(-1, 4)


def resting_of(resting: np.ndarray) -> np.ndarray:
    """shmex `Matcher.resting()` -> (side, price_ticks, client_id, leaves), as resting()."""
    a = np.stack([resting["side"], resting["price"], resting["client_id"], resting["leaves"]],
                 axis=1).astype(np.int64).reshape(-1, 4)
    return a[np.lexsort((a[:, 2], a[:, 1], a[:, 0]))]


def verify(name: str, raw: Any, want_fills: np.ndarray, want_resting: np.ndarray) -> tuple[bool, str]:
    """Check a peer's run against shmex: (ok, what was compared and how it went).

    Fills must be equal, in order; the end state too where the peer exposes it. A peer
    that reports no fills (limit-order-book) is checked on its resting orders, or on 3.x
    on its L2 levels only, and says so.
    """
    peer = PEERS[name]
    checks = []
    if peer.reports_fills:
        got = peer.fills(raw)
        checks.append(("fills", np.array_equal(got, want_fills), f"{len(got)} vs {len(want_fills)}"))
    rest = peer.resting(raw)
    if rest is not None:
        checks.append(("resting", np.array_equal(rest, want_resting),
                       f"{len(rest)} vs {len(want_resting)}"))
    elif peer.dist == "limit-order-book":
        want = {}
        for side, price, _, leaves in want_resting.tolist():
            q, n = want.get((side, price), (0, 0))
            want[(side, price)] = (q + leaves, n + 1)
        want_l2 = [[s, p, q, n] for (s, p), (q, n) in sorted(want.items())]
        got_l2 = lob_levels(raw).tolist()
        checks.append(("L2 levels", got_l2 == want_l2, f"{len(got_l2)} vs {len(want_l2)}"))
    ok = bool(checks) and all(c[1] for c in checks)
    text = ", ".join(f"{what} {'equal' if same else 'DIFFER (' + n + ')'}" for what, same, n in checks)
    if not peer.reports_fills:
        text = "no fills reported; " + text
    return ok, text


def measure(name: str, cmds: np.ndarray, repeats: int = 3) -> dict:
    """Prepare once, run `repeats` times on a fresh book; the best time and its result."""
    import time
    peer = PEERS[name]
    prepared = peer.prepare(cmds)
    best, raw = float("inf"), None
    for _ in range(repeats):
        raw = None  # drop the previous book before building the next
        t0 = time.perf_counter()
        raw = peer.run(prepared)
        best = min(best, time.perf_counter() - t0)
    return {"name": name, "version": version(peer.dist), "seconds": best,
            "commands_per_s": len(cmds) / best, "raw": raw}

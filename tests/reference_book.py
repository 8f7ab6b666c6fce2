"""A slow, obviously correct order book: the matcher's specification in plain Python.

Resting orders are kept in one list in arrival order; "the best order" is found by sorting.
Nothing here is clever, so that a disagreement with the numba matcher points at the
matcher (or at an ambiguity worth writing down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shmex.schema import (REPORT, RESTING, Kind, Liquidity, OrderType, Reason, ReportKind, Side,
                          Stp, Tif)


@dataclass
class Order:
    producer: int
    client_id: int
    symbol: int
    side: int
    price: int
    leaves: int
    account: int
    arrival: int  # time priority: smaller is earlier
    post_only: bool = False  # entered post-only: a replace may not make it take


class ReferenceBook:
    def __init__(self, symbols: int, price_lo: int, price_hi: int, capacity: int):
        self.symbols, self.lo, self.hi, self.capacity = symbols, price_lo, price_hi, capacity
        self.orders: dict[tuple[int, int], Order] = {}
        self.clock = 0
        self.last_seq = 0

    # -------------------------------------------------------------- queries

    def best_first(self, symbol: int, side: int) -> list[Order]:
        """Resting orders of one side in priority order."""
        mine = [o for o in self.orders.values() if o.symbol == symbol and o.side == side]
        if side == Side.BUY:
            return sorted(mine, key=lambda o: (-o.price, o.arrival))
        return sorted(mine, key=lambda o: (o.price, o.arrival))

    def resting(self) -> np.ndarray:
        rows = []
        for sym in range(self.symbols):
            for side in (Side.BUY, Side.SELL):
                for o in self.best_first(sym, side):
                    rows.append((o.symbol, o.side, o.price, o.producer, o.client_id, o.leaves,
                                 o.account))
        return np.array(rows, dtype=RESTING)

    # -------------------------------------------------------------- commands

    def process(self, commands: np.ndarray) -> np.ndarray:
        out: list[tuple] = []
        for c in commands:
            self.last_seq += 1
            self.seq = self.last_seq
            self.cmd = c
            kind = int(c["kind"])
            if kind == Kind.NEW:
                self.new(c, out)
            elif kind == Kind.CANCEL:
                self.cancel(c, out)
            elif kind == Kind.REPLACE:
                self.replace(c, out)
            elif kind == Kind.CANCEL_ALL:
                self.cancel_all(c, out)
            else:
                self.reject(c, Reason.BAD_FIELD, out)
        return np.array(out, dtype=REPORT) if out else np.zeros(0, REPORT)

    def report(self, out, kind, reason, side, liq, producer, contra_producer, symbol, price, qty,
               leaves, client_id, contra_client_id, echo: bool):
        c = self.cmd
        out.append((kind, reason, side, liq, producer, contra_producer, symbol, price, qty, leaves,
                    client_id, contra_client_id, self.seq,
                    int(c["pseq"]) if echo else 0, int(c["sent_ns"]) if echo else 0))

    def cancel_all(self, c, out):
        """Every resting order of the command's producer, in book order; then an ACK of the count."""
        prod, n = int(c["producer"]), 0
        for sym in range(self.symbols):
            for side in (Side.BUY, Side.SELL):
                for o in self.best_first(sym, side):
                    if o.producer == prod:
                        self.report(out, ReportKind.CANCELED, Reason.DISCONNECTED, o.side, 0, o.producer, 0,
                                    o.symbol, o.price, o.leaves, 0, o.client_id, 0, True)
                        del self.orders[(o.producer, o.client_id)]
                        n += 1
        self.report(out, ReportKind.ACK, Reason.NONE, 0, 0, prod, 0, c["symbol"], 0, n, 0, c["client_id"], 0, True)

    def reject(self, c, reason, out):
        self.report(out, ReportKind.REJECTED, reason, c["side"], 0, c["producer"], 0, c["symbol"],
                    c["price"], c["qty"], 0, c["client_id"], 0, True)

    def to_owner(self, o: Order, kind, reason, qty, leaves, out):
        self.report(out, kind, reason, o.side, 0, o.producer, 0, o.symbol, o.price, qty, leaves,
                    o.client_id, 0, False)

    def in_band(self, price) -> bool:
        return self.lo <= price <= self.hi

    def crosses(self, side, limit, resting_price) -> bool:
        if limit is None:  # market
            return True
        return resting_price <= limit if side == Side.BUY else resting_price >= limit

    def new(self, c, out):
        side, otype, tif, stp = int(c["side"]), int(c["order_type"]), int(c["tif"]), int(c["stp"])
        if (side not in (1, 2) or otype not in (1, 2) or tif not in (1, 2, 3, 4)
                or stp not in (0, 1, 2, 3, 4)):
            return self.reject(c, Reason.BAD_FIELD, out)
        sym, qty, price = int(c["symbol"]), int(c["qty"]), int(c["price"])
        if sym >= self.symbols:
            return self.reject(c, Reason.UNKNOWN_SYMBOL, out)
        if qty <= 0:
            return self.reject(c, Reason.BAD_QTY, out)
        is_limit = otype == OrderType.LIMIT
        if not is_limit and tif == Tif.POST_ONLY:
            return self.reject(c, Reason.BAD_FIELD, out)
        if is_limit and not self.in_band(price):
            return self.reject(c, Reason.PRICE_BAND, out)
        key = (int(c["producer"]), int(c["client_id"]))
        if key in self.orders:
            return self.reject(c, Reason.DUPLICATE_ID, out)
        limit = price if is_limit else None
        opposite = self.best_first(sym, 3 - side)
        if is_limit and tif == Tif.POST_ONLY and opposite and self.crosses(side, limit, opposite[0].price):
            return self.reject(c, Reason.POST_ONLY_WOULD_CROSS, out)
        rests = is_limit and tif in (Tif.GTC, Tif.POST_ONLY)
        if rests and len(self.orders) >= self.capacity:
            return self.reject(c, Reason.BOOK_FULL, out)
        self.report(out, ReportKind.ACK, 0, side, 0, key[0], 0, sym, price, qty, qty, key[1], 0, True)
        if tif == Tif.FOK:
            available = sum(o.leaves for o in opposite if self.crosses(side, limit, o.price))
            if available < qty:
                return self.report(out, ReportKind.EXPIRED, 0, side, 0, key[0], 0, sym, price, qty,
                                   0, key[1], 0, True)
        taker = Order(key[0], key[1], sym, side, price, qty, int(c["account"]), 0, tif == Tif.POST_ONLY)
        self.match(taker, limit, stp, rests, out)

    def match(self, taker: Order, limit, stp: int, rests: bool, out):
        """Trade while crossing; then rest or expire. Reports as the spec says."""
        while taker.leaves > 0:
            opposite = self.best_first(taker.symbol, 3 - taker.side)
            if not opposite or not self.crosses(taker.side, limit, opposite[0].price):
                break
            maker = opposite[0]
            if taker.account != 0 and maker.account == taker.account and stp != Stp.NONE:
                if stp == Stp.CANCEL_NEWEST:
                    return self.to_taker(taker, ReportKind.CANCELED, Reason.SELF_TRADE, taker.leaves, out)
                if stp == Stp.CANCEL_OLDEST:
                    self.to_owner(maker, ReportKind.CANCELED, Reason.SELF_TRADE, maker.leaves, 0, out)
                    self.drop(maker)
                    continue
                if stp == Stp.CANCEL_BOTH:
                    self.to_owner(maker, ReportKind.CANCELED, Reason.SELF_TRADE, maker.leaves, 0, out)
                    self.drop(maker)
                    return self.to_taker(taker, ReportKind.CANCELED, Reason.SELF_TRADE, taker.leaves, out)
                # DECREMENT
                d = min(taker.leaves, maker.leaves)
                taker.leaves -= d
                maker.leaves -= d
                if maker.leaves == 0:
                    self.to_owner(maker, ReportKind.CANCELED, Reason.SELF_TRADE, d, 0, out)
                    self.drop(maker)
                else:
                    self.to_owner(maker, ReportKind.REPLACED, Reason.SELF_TRADE, maker.leaves,
                                  maker.leaves, out)
                if taker.leaves == 0:
                    return self.to_taker(taker, ReportKind.CANCELED, Reason.SELF_TRADE, d, out)
                continue
            q = min(taker.leaves, maker.leaves)
            taker.leaves -= q
            maker.leaves -= q
            self.report(out, ReportKind.FILL, 0, taker.side, Liquidity.TAKER, taker.producer,
                        maker.producer, taker.symbol, maker.price, q, taker.leaves,
                        taker.client_id, maker.client_id, True)
            self.report(out, ReportKind.FILL, 0, maker.side, Liquidity.MAKER, maker.producer,
                        taker.producer, taker.symbol, maker.price, q, maker.leaves,
                        maker.client_id, taker.client_id, False)
            # the maker's report carries the fill's index within the command (match number)
            k = sum(1 for r in out if r[0] == ReportKind.FILL and r[3] == Liquidity.TAKER and r[12] == self.seq)
            out[-1] = out[-1][:-1] + (k,)
            if maker.leaves == 0:
                self.drop(maker)
        if taker.leaves == 0:
            return
        if rests:
            self.clock += 1
            taker.arrival = self.clock
            self.orders[(taker.producer, taker.client_id)] = taker
        else:
            self.to_taker(taker, ReportKind.EXPIRED, 0, taker.leaves, out)

    def to_taker(self, taker: Order, kind, reason, qty, out):
        self.report(out, kind, reason, taker.side, 0, taker.producer, 0, taker.symbol,
                    int(self.cmd["price"]), qty, 0, taker.client_id, 0, True)

    def drop(self, o: Order):
        del self.orders[(o.producer, o.client_id)]

    def live(self, c) -> Order | None:
        o = self.orders.get((int(c["producer"]), int(c["client_id"])))
        return o if o is not None and o.symbol == int(c["symbol"]) else None

    def cancel(self, c, out):
        o = self.live(c)
        if o is None:
            return self.reject(c, Reason.UNKNOWN_ORDER, out)
        self.report(out, ReportKind.CANCELED, 0, o.side, 0, o.producer, 0, o.symbol, o.price,
                    o.leaves, 0, o.client_id, 0, True)
        self.drop(o)

    def replace(self, c, out):
        o = self.live(c)
        if o is None:
            return self.reject(c, Reason.UNKNOWN_ORDER, out)
        qty, price, stp = int(c["qty"]), int(c["price"]), int(c["stp"])
        if qty <= 0:
            return self.reject(c, Reason.BAD_QTY, out)
        if not self.in_band(price):
            return self.reject(c, Reason.PRICE_BAND, out)
        if stp not in (0, 1, 2, 3, 4):
            return self.reject(c, Reason.BAD_FIELD, out)
        opposite = self.best_first(o.symbol, 3 - o.side)
        if o.post_only and opposite and self.crosses(o.side, price, opposite[0].price):
            return self.reject(c, Reason.POST_ONLY_WOULD_CROSS, out)
        self.report(out, ReportKind.REPLACED, 0, o.side, 0, o.producer, 0, o.symbol, price, qty,
                    qty, o.client_id, 0, True)
        if price == o.price and qty <= o.leaves:
            o.leaves = qty
            return
        self.drop(o)
        taker = Order(o.producer, o.client_id, o.symbol, o.side, price, qty, o.account, 0, o.post_only)
        self.match(taker, price, stp, True, out)

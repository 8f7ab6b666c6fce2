"""The reference workload: seeded, one symbol, a realistic mix around the touch.

    ~55%  passive limit orders 1..10 ticks behind the touch, qty 1..100
    ~25%  cancels of orders that are live at that moment
    ~20%  aggressive limit orders priced 0..3 ticks through the touch, qty 1..300
          (partial fills and multi-level sweeps; a remainder rests, as GTC does)

Only LIMIT GTC orders and cancels, so that every PyPI order book can run it too.
The generator drives a scratch matcher while it writes, so it knows which orders are
live when it picks a cancel: every cancel names a live order. Same seed, same workload.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shmex.matcher import Matcher
from shmex.matcher._kernels import _id_find, _run
from shmex.schema import BUY, COMMAND, GTC, K_CANCEL, K_NEW, LIMIT, REPORT, SELL

PRICE_LO, PRICE_HI, MID = 1, 20_000, 10_000
PASSIVE_PCT, CANCEL_PCT = 55, 25  # the rest is aggressive


@njit(cache=True, _nrt=False)
def _generate(b, cmds, seed, scratch, pool):
    """pool: room for n ids of orders that may still be live."""
    np.random.seed(seed)
    n = cmds.shape[0]
    npool = 0
    next_id = np.uint64(1)
    for i in range(n):
        c = cmds[i]
        roll = np.random.randint(0, 100)
        if PASSIVE_PCT <= roll < PASSIVE_PCT + CANCEL_PCT:
            found = False
            while npool > 0 and not found:
                k = np.random.randint(0, npool)
                cid = pool[k]
                if _id_find(b, 0, cid) >= 0:
                    found = True
                    c.kind = K_CANCEL
                    c.client_id = cid
                    pool[k] = pool[npool - 1]  # it will be gone after this cancel
                    npool -= 1
                else:
                    pool[k] = pool[npool - 1]
                    npool -= 1
            if found:
                _run(b, cmds, i, i + 1, scratch, 0, True, 0)
                continue
            roll = 0  # nothing live to cancel: send a passive order instead
        side = BUY if np.random.randint(0, 2) == 0 else SELL
        bid = b.best[0]
        ask = b.best[1]
        bid = bid + PRICE_LO if bid >= 0 else (ask + PRICE_LO - 1 if ask >= 0 else MID - 1)
        ask = ask + PRICE_LO if ask >= 0 else bid + 1
        if roll < PASSIVE_PCT:
            off = np.random.randint(0, 10)
            price = ask - 1 - off if side == BUY else bid + 1 + off
            qty = np.random.randint(1, 101)
        else:
            through = np.random.randint(0, 4)
            price = ask + through if side == BUY else bid - through
            qty = np.random.randint(1, 301)
        price = min(max(price, PRICE_LO), PRICE_HI)
        c.kind = K_NEW
        c.side = side
        c.order_type = LIMIT
        c.tif = GTC
        c.price = price
        c.qty = qty
        c.client_id = next_id
        pool[npool] = next_id
        npool += 1
        next_id += np.uint64(1)
        _run(b, cmds, i, i + 1, scratch, 0, True, 0)


def reference_workload(n: int, seed: int = 1, capacity: int = 1 << 20) -> np.ndarray:
    """n COMMAND records of the reference mix (seq and engine_ns left 0)."""
    cmds = np.zeros(n, dtype=COMMAND)
    scratch = Matcher(symbols=1, price_lo=PRICE_LO, price_hi=PRICE_HI, capacity=capacity)
    _generate(scratch.book, cmds, seed, np.zeros(2 * capacity + 3, dtype=REPORT),
              np.zeros(n, dtype=np.uint64))
    cmds["seq"] = 0
    cmds["engine_ns"] = 0
    return cmds


def book_config(capacity: int = 1 << 20) -> dict:
    """The matcher configuration the reference workload is meant for."""
    return dict(symbols=1, price_lo=PRICE_LO, price_hi=PRICE_HI, capacity=capacity)

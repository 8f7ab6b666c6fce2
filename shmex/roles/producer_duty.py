"""The built-in load generator: seeded, per producer, numba; it never sees the book.

Each producer draws, per order (the reference mix of the matcher benchmark, spread
over K symbols, each with a fixed mid ``MID + 50 * symbol``):

    ~55%  passive GTC limit 1..10 ticks behind its symbol's mid, qty 1..100
    ~25%  cancel of one of its own last POOL passive orders (it may have traded
          already: the answer is then a REJECTED UNKNOWN_ORDER, which is fine load)
    ~20%  aggressive GTC limit 0..3 ticks through the mid, qty 1..300 (fills, sweeps)

Client ids are ``cid_base + 1, 2, ...`` per producer (cid_base holds a launch epoch in
the high bits so that a relaunch on a recovered book never collides), ``pseq`` is
1, 2, ... and ``sent_ns`` is the *intended* send time: ``t0 + (pseq - 1) * period_ns``
open loop, or the generation time when ``period_ns`` is 0 (as fast as the ring takes).
Same seed, same order stream, whatever the batch sizes.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from shmex.schema import (BUY, GTC, K_CANCEL, K_NEW, LIMIT, R_ACK, R_CANCELED, R_EXPIRED, R_FILL,
                          R_REJECTED, R_REPLACED, SELL, TAKER)
from shmex.engine._sys import mono_ns, sched_yield
from shmex.engine.latency import bucket_of
from shmex.ring import _kernels as ring_kernels
from shmex.ring import layout as ring_layout
from shmex.engine.cells import (C_ACKS, C_ANSWERED, C_SENT, C_CANCELED, C_EXPIRED, C_FILLS_MAKER,
                                C_FILLS_TAKER, C_LAST_ANSWER_NS, C_LAST_ANSWERED, C_QTY_MAKER,
                                C_QTY_TAKER, C_REJECTS, C_REPLACED, C_REPORTS)

from shmex.engine.config import MID, SYMBOL_STEP

POOL = 4096
PASSIVE_PCT, CANCEL_PCT = 55, 25

# generator state cells (a private int64 array per producer)
S_NEXT_CID, S_NEXT_PSEQ, S_POOL_N, S_POOL_POS = range(4)
STATE_CELLS = 8


@njit(cache=True, nogil=True)
def seed_rng(seed):
    np.random.seed(seed)


@njit(cache=True, nogil=True)
def gen_batch(out, n, st, pool_cid, pool_sym, producer, nsym, cid_base, t0_ns, period_ns, now_ns):
    """Write n commands into out[:n]; advances the generator state `st`."""
    for i in range(n):
        c = out[i]
        pseq = st[S_NEXT_PSEQ]
        st[S_NEXT_PSEQ] = pseq + 1
        c.producer = producer
        c.pseq = pseq
        c.sent_ns = t0_ns + (pseq - 1) * period_ns if period_ns > 0 else now_ns
        c.seq = 0
        c.engine_ns = 0
        c.account = 0
        c.stp = 0
        roll = np.random.randint(0, 100)
        if PASSIVE_PCT <= roll < PASSIVE_PCT + CANCEL_PCT and st[S_POOL_N] > 0:
            j = np.random.randint(0, st[S_POOL_N])
            c.kind = K_CANCEL
            c.side = 0
            c.order_type = 0
            c.tif = 0
            c.symbol = pool_sym[j]
            c.client_id = pool_cid[j]
            c.price = 0
            c.qty = 0
            last = st[S_POOL_N] - 1          # forget it: one cancel per id
            pool_cid[j] = pool_cid[last]
            pool_sym[j] = pool_sym[last]
            st[S_POOL_N] = last
            continue
        sym = np.random.randint(0, nsym)
        mid = MID + SYMBOL_STEP * sym
        side = BUY if np.random.randint(0, 2) == 0 else SELL
        if roll < PASSIVE_PCT + CANCEL_PCT:
            off = 1 + np.random.randint(0, 10)
            price = mid - off if side == BUY else mid + off
            qty = 1 + np.random.randint(0, 100)
        else:
            through = np.random.randint(0, 4)
            price = mid + through if side == BUY else mid - through
            qty = 1 + np.random.randint(0, 300)
        cid = cid_base + st[S_NEXT_CID]
        st[S_NEXT_CID] += 1
        c.kind = K_NEW
        c.side = side
        c.order_type = LIMIT
        c.tif = GTC
        c.symbol = sym
        c.client_id = cid
        c.price = price
        c.qty = qty
        if roll < PASSIVE_PCT + CANCEL_PCT:
            if st[S_POOL_N] < POOL:
                k = st[S_POOL_N]
                st[S_POOL_N] = k + 1
            else:
                k = st[S_POOL_POS]
                st[S_POOL_POS] = (k + 1) % POOL
            pool_cid[k] = cid
            pool_sym[k] = sym
    return n


@njit(cache=True, nogil=True)
def stamp_sent(cmds, lo, hi, now_ns):
    """engine_ns = the actual send time, just before publishing (the matcher reads it for
    the 'to_matcher' stage, then overwrites it with its stamp)."""
    for i in range(lo, hi):
        cmds[i].engine_ns = now_ns


@njit(cache=True, nogil=True)
def note_sent(cmds, lo, hi, now_ns, hist):
    """'queue' stage: intended send time -> published, for cmds[lo:hi] (just published)."""
    for i in range(lo, hi):
        hist[bucket_of(now_ns - cmds[i].sent_ns)] += 1


@njit(cache=True, nogil=True)
def scan_reports(reps, n, now_ns, cnt, hist):
    """Count a batch of reports into `cnt` and record each command's first report's
    tick-to-trade (now_ns - intended send time) into `hist`."""
    for i in range(n):
        _count(reps[i], now_ns, cnt, hist)
    return n


@njit(cache=True, nogil=True)
def scan_reports_staged(reps, n, now_ns, cnt, hist, st_hist, dtab):
    """scan_reports, and the 'to_report' stage (durable -> read) into st_hist from the
    WAL writer's durable table (see `latency`)."""
    mask = dtab.shape[0] - 1
    for i in range(n):
        r = reps[i]
        if _count(r, now_ns, cnt, hist):
            s = r.cmd_seq
            j = s & mask
            if dtab[j, 0] == s:
                t = dtab[j, 1]
                if 0 < t <= now_ns:
                    st_hist[bucket_of(now_ns - t)] += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _count(r, now_ns, cnt, hist):
    """Count one report; -> True if it is its command's first (latency recorded)."""
    first = False
    cnt[C_REPORTS] += 1
    p = np.int64(r.pseq)
    if p > cnt[C_LAST_ANSWERED]:       # reports come in pseq order: the first one
        cnt[C_LAST_ANSWERED] = p
        cnt[C_ANSWERED] += 1
        cnt[C_LAST_ANSWER_NS] = now_ns
        hist[bucket_of(now_ns - r.sent_ns)] += 1
        first = True
    k = r.kind
    if k == R_ACK:
        cnt[C_ACKS] += 1
    elif k == R_FILL:
        if r.liquidity == TAKER:
            cnt[C_FILLS_TAKER] += 1
            cnt[C_QTY_TAKER] += r.qty
        else:
            cnt[C_FILLS_MAKER] += 1
            cnt[C_QTY_MAKER] += r.qty
    elif k == R_REJECTED:
        cnt[C_REJECTS] += 1
    elif k == R_CANCELED:
        cnt[C_CANCELED] += 1
    elif k == R_EXPIRED:
        cnt[C_EXPIRED] += 1
    elif k == R_REPLACED:
        cnt[C_REPLACED] += 1
    return first


# ---- the producer's duty cycle, all in numba ----------------------------------------------
# private state cells of `duty` (an int64 array per producer)
D_LO, D_HI, D_GENERATED, D_SENDING = range(4)
DUTY_CELLS = 8
# why `duty` returned
RET_BUDGET, RET_POST, RET_DONE, RET_SLEEP, RET_FULL, RET_IDLE = range(6)
YIELD_BELOW_NS = 60_000     # next order due sooner than this: sched_yield, do not sleep


# duty()'s named inputs besides the rings (`views.Ring`): what the load sends (the
# generator's pools, or `src`, a replayed day; this producer's id, the symbols, the first
# client id, the start of the open-loop schedule, its period, how many orders: < 0 no
# limit), and where the producer counts (its control cells, histograms, durable table)
Load = namedtuple("Load", "pool_cid pool_sym src producer nsym cid_base t0 period orders")
Stats = namedtuple("Stats", "cnt hist h_queue h_report dtab")


@njit(cache=True, nogil=True)
def duty(buf, bufw, rbuf, rbufw, inr, rep, ds, st, load, stats, budget_ns):
    """Send what is due on `inr`, read the reports from `rep`, until there is nothing to do
    for a while or `budget_ns` passed; -> RET_* (what the caller should do next).

    The orders come from the generator, or, when `src` is not empty, from `src` in its
    order (a replayed day, see `replay_batch`; `period` then only says paced or not).

    One call replaces thousands of Python iterations: the time a report waits in the ring
    or an order waits for its send is the scheduler's, not the interpreter's. While the
    next order is due in less than YIELD_BELOW_NS it yields the core (shared with the WAL
    writer and the other producers: it never spins without yielding); a longer wait, a full
    input ring or a finished load returns to the caller, which blocks on the report ring's
    semaphore. A peer to wake (its semaphore) returns RET_POST: the caller posts it.
    """
    pool_cid, pool_sym, src, producer, nsym = load.pool_cid, load.pool_sym, load.src, load.producer, load.nsym
    cid_base, t0, period, orders = load.cid_base, load.t0, load.period, load.orders
    cnt, hist, h_queue, h_report, dtab = stats.cnt, stats.hist, stats.h_queue, stats.h_report, stats.dtab
    start = mono_ns()
    nbuf = buf.shape[0]
    while True:
        now = mono_ns()
        work = 0
        lo = ds[D_LO]
        hi = ds[D_HI]
        if ds[D_SENDING]:
            if lo == hi:
                gen = ds[D_GENERATED]
                left = nbuf if orders < 0 else min(nbuf, orders - gen)
                if src.shape[0]:
                    due = replay_due(src, gen, left, now - t0, period)
                    if due > 0:
                        replay_batch(buf, due, src, gen, st, producer, t0, period, now)
                else:
                    due = left if period == 0 else min(left, (now - t0) // period + 1 - gen)
                    if due > 0:
                        gen_batch(buf, due, st, pool_cid, pool_sym, producer, nsym, cid_base, t0, period, now)
                if due > 0:
                    lo = 0
                    hi = due
                    ds[D_GENERATED] = gen + due
            if lo < hi:
                t = mono_ns()
                stamp_sent(buf, lo, hi, t)
                s = ring_kernels._publish_range(inr.slots, inr.ctl, inr.loc, bufw, lo, hi, True)
                note_sent(buf, lo, lo + s, t, h_queue)
                lo += s
                cnt[C_SENT] += s
                work += s
            ds[D_LO] = lo
            ds[D_HI] = hi
        r = ring_kernels._consume_batch(rep.slots, rep.ctl, rep.loc, rbufw, False, True)
        if r:
            scan_reports_staged(rbuf, r, mono_ns(), cnt, hist, h_report, dtab)
            ring_kernels._release_upto(rep.ctl, rep.loc, rep.loc[ring_layout.L_POS], True)   # counted: release
            work += r
        if inr.loc[ring_layout.L_WAKE] or rep.loc[ring_layout.L_WAKE]:
            return RET_POST
        if ds[D_SENDING] and lo == hi and orders >= 0 and ds[D_GENERATED] >= orders:
            return RET_DONE
        if now - start >= budget_ns:
            return RET_BUDGET
        if work:
            continue
        if not ds[D_SENDING]:
            return RET_IDLE
        if lo < hi:
            return RET_FULL
        if period > 0:
            if next_due_ns(src, ds[D_GENERATED], t0, period) - now >= YIELD_BELOW_NS:
                return RET_SLEEP
            sched_yield()


@njit(cache=True, nogil=True)
def next_due_ns(src, gen, t0, period):
    """When order `gen` (0-based) is due, open loop."""
    if src.shape[0]:
        return t0 + src[min(gen, src.shape[0] - 1)].sent_ns
    return t0 + gen * period


@njit(cache=True, nogil=True)
def replay_due(src, gen, left, elapsed_ns, period):
    """How many of src[gen:gen + left] are due after elapsed_ns (all of them unpaced)."""
    n = min(left, src.shape[0] - gen)
    if period == 0:
        return n
    k = 0
    while k < n and src[gen + k].sent_ns <= elapsed_ns:
        k += 1
    return k


@njit(cache=True, nogil=True)
def replay_batch(out, n, src, gen, st, producer, t0_ns, period, now_ns):
    """out[:n] = src[gen:gen + n] as this producer's next commands: its id and pseq, and
    sent_ns the intended time (t0 + the command's offset) paced, the generation time not."""
    for i in range(n):
        out[i] = src[gen + i]
        c = out[i]
        pseq = st[S_NEXT_PSEQ]
        st[S_NEXT_PSEQ] = pseq + 1
        c.producer = producer
        c.pseq = pseq
        c.sent_ns = t0_ns + src[gen + i].sent_ns if period else now_ns
        c.seq = 0
        c.engine_ns = 0
    return n

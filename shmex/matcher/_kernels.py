"""The match loop: numba kernels over the arrays of `book.Book`.

Compilation choices (their figures are in PERFORMANCE.md):
- `_nrt=False`: no reference counting. Kernels never allocate; with NRT on, every call
  that passes the Book increfs and decrefs its ~20 arrays (atomic ops).
- `inline="always"` on every helper: a call that passes the Book flattens ~150 words of
  array structs into arguments, a cost paid on every call. The price is one long
  compile, cached on disk.

Kernels return counts and status codes; business outcomes are REPORT records, never
exceptions. Everything here is deterministic: no clock, no randomness, no hashing of
addresses; the same commands give the same reports, and on a book with the same hash
key (`book.hkey`) the same arrays.
"""

import numpy as np
from numba import njit

from shmex.matcher._bits import _clear_bit, _find_down, _find_up, _set_bit
from shmex.matcher.book import (C_HMASK, C_HSHIFT, C_LO, C_NSUM, C_NTICKS, C_NWORDS, C_OPEN_CAP, C_SYMBOLS,
                                F_POST_ONLY, M_FREE_TOP, M_LAST_SEQ, M_LIVE)
from shmex.schema import (BUY, FOK, GTC, K_CANCEL, K_CANCEL_ALL, K_NEW, K_REPLACE, LIMIT, LIQ_NONE, MAKER,
                          MARKET, POST_ONLY, R_ACK, R_CANCELED, R_EXPIRED, R_FILL, R_REJECTED,
                          R_REPLACED, RS_BAD_FIELD, RS_BAD_QTY, RS_BOOK_FULL, RS_DISCONNECTED, RS_DUPLICATE_ID,
                          RS_NONE, RS_POST_ONLY_WOULD_CROSS, RS_PRICE_BAND, RS_SELF_TRADE,
                          RS_TOO_MANY_ORDERS, RS_UNKNOWN_ORDER, RS_UNKNOWN_SYMBOL, SELL, STP_CANCEL_BOTH,
                          STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_DECREMENT, STP_NONE, TAKER)

# _run status codes
ST_DONE = 0        # every command processed
ST_OUT_FULL = 1    # stopped before a command whose worst case does not fit in `out`
ST_SEQ_GAP = 2     # apply(): a command's seq is not last_seq + 1

_RUN = np.uint64(15)  # ids in one run of consecutive homes: 16 entries, 4 cache lines


# ---------------------------------------------------------------- id table

@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _home(b, prod, cid):
    """Multiply-shift: the top bits of (cid >> 4) * hkey[0] + prod * hkey[1] pick the run,
    cid & 15 the place in it (`book` says why this is safe against chosen ids)."""
    x = (cid >> np.uint64(4)) * b.hkey[0] + np.uint64(prod) * b.hkey[1]
    return np.int64(((x >> np.uint64(b.cfg[C_HSHIFT])) << np.uint64(4)) + (cid & _RUN))


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _id_find(b, prod, cid):
    """Position of (prod, cid) in the id table, or -1."""
    mask = b.cfg[C_HMASK]
    h = _home(b, prod, cid)
    while True:
        e = b.ids[h]
        if e.prod < 0:
            return -1
        if e.prod == prod and e.cid == cid:
            return h
        h = (h + 1) & mask


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _id_insert(b, prod, cid, slot):
    mask = b.cfg[C_HMASK]
    h = _home(b, prod, cid)
    while b.ids[h].prod >= 0:
        h = (h + 1) & mask
    e = b.ids[h]
    e.prod = prod
    e.cid = cid
    e.slot = slot


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _id_delete(b, h):
    """Remove entry h; shift later entries of its probe run back so no tombstone is needed."""
    mask = b.cfg[C_HMASK]
    ids = b.ids
    j = h
    while True:
        j = (j + 1) & mask
        if ids[j].prod < 0:
            break
        k = _home(b, ids[j].prod, ids[j].cid)
        # Entry j may move to h only if its home is not cyclically inside (h, j].
        if h <= j:
            stays = h < k <= j
        else:
            stays = k > h or k <= j
        if stays:
            continue
        ids[h].prod = ids[j].prod
        ids[h].cid = ids[j].cid
        ids[h].slot = ids[j].slot
        h = j
    ids[h].prod = -1


# ---------------------------------------------------------------- levels

@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _push(b, slot, bk, t):
    """Append resting order `slot` at the back of level t of book side bk."""
    nt = b.cfg[C_NTICKS]
    lv = bk * nt + t
    tail = b.lv_tail[lv]
    b.o_prev[slot] = tail
    b.o_next[slot] = -1
    if tail < 0:
        b.lv_head[lv] = slot
        _set_bit(b.bm, b.sm, bk * b.cfg[C_NWORDS], bk * b.cfg[C_NSUM], t)
        best = b.best[bk]
        if best < 0 or ((bk & 1) == 0 and t > best) or ((bk & 1) == 1 and t < best):
            b.best[bk] = t
    else:
        b.o_next[tail] = slot
    b.lv_tail[lv] = slot
    b.lv_qty[lv] += b.o_qty[slot]
    b.lv_cnt[lv] += 1
    b.cnt[bk] += 1


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _unlink(b, slot, bk, t):
    """Take `slot` out of its level (its leaves must already be off lv_qty)."""
    nt = b.cfg[C_NTICKS]
    lv = bk * nt + t
    prv = b.o_prev[slot]
    nxt = b.o_next[slot]
    if prv >= 0:
        b.o_next[prv] = nxt
    else:
        b.lv_head[lv] = nxt
    if nxt >= 0:
        b.o_prev[nxt] = prv
    else:
        b.lv_tail[lv] = prv
    b.lv_cnt[lv] -= 1
    b.cnt[bk] -= 1
    if b.lv_head[lv] < 0:
        wbase = bk * b.cfg[C_NWORDS]
        sbase = bk * b.cfg[C_NSUM]
        _clear_bit(b.bm, b.sm, wbase, sbase, t)
        if b.best[bk] == t:
            if (bk & 1) == 0:
                b.best[bk] = _find_down(b.bm, b.sm, wbase, sbase, t - 1)
            else:
                b.best[bk] = _find_up(b.bm, b.sm, wbase, sbase, b.cfg[C_NWORDS], t + 1)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _next_level(b, bk, t):
    """The level after tick t in priority order on side bk, or -1."""
    if (bk & 1) == 0:
        return _find_down(b.bm, b.sm, bk * b.cfg[C_NWORDS], bk * b.cfg[C_NSUM], t - 1)
    return _find_up(b.bm, b.sm, bk * b.cfg[C_NWORDS], bk * b.cfg[C_NSUM], b.cfg[C_NWORDS], t + 1)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _remove(b, slot):
    """Take a resting order off the book entirely: level, id table, arena."""
    bk = b.o_sym[slot] * 2 + b.o_side[slot] - 1
    t = b.o_price[slot] - b.cfg[C_LO]
    b.lv_qty[bk * b.cfg[C_NTICKS] + t] -= b.o_qty[slot]
    _unlink(b, slot, bk, t)
    _release(b, slot)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _release(b, slot):
    """Free an order's slot and forget its id (the order is finished)."""
    prod = b.o_prod[slot]
    h = _id_find(b, prod, b.o_cid[slot])
    _id_delete(b, h)
    top = b.meta[M_FREE_TOP]
    b.free[top] = slot
    b.meta[M_FREE_TOP] = top + 1
    b.meta[M_LIVE] -= 1
    b.p_open[prod] -= 1


# ---------------------------------------------------------------- reports

@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _emit(out, n, kind, reason, side, liq, prod, cprod, sym, price, qty, leaves, cid, ccid,
          cmd_seq, pseq, sent_ns):
    r = out[n]
    r.kind = kind
    r.reason = reason
    r.side = side
    r.liquidity = liq
    r.producer = prod
    r.contra_producer = cprod
    r.symbol = sym
    r.price = price
    r.qty = qty
    r.leaves = leaves
    r.client_id = cid
    r.contra_client_id = ccid
    r.cmd_seq = cmd_seq
    r.pseq = pseq
    r.sent_ns = sent_ns
    return n + 1


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _reject(out, n, c, reason):
    return _emit(out, n, R_REJECTED, reason, c.side, LIQ_NONE, c.producer, 0, c.symbol, c.price,
                 c.qty, 0, c.client_id, np.uint64(0), c.seq, c.pseq, c.sent_ns)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _about_resting(out, n, b, r, kind, reason, qty, leaves, cmd_seq):
    """A report to the owner of resting order r (not the commanding order: no echo)."""
    return _emit(out, n, kind, reason, b.o_side[r], LIQ_NONE, b.o_prod[r], 0, b.o_sym[r],
                 b.o_price[r], qty, leaves, b.o_cid[r], np.uint64(0), cmd_seq, np.uint64(0), 0)


# ---------------------------------------------------------------- matching

@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _crosses(side, lt, opp_t):
    """Does an opposite level at tick opp_t cross a taker limit lt?"""
    if opp_t < 0:
        return False
    if side == BUY:
        return opp_t <= lt
    return opp_t >= lt


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _crossing_qty(b, side, obk, lt, want):
    """Resting quantity that crosses limit lt, counted until it reaches `want`."""
    nt = b.cfg[C_NTICKS]
    t = b.best[obk]
    total = 0
    while _crosses(side, lt, t) and total < want:
        total += b.lv_qty[obk * nt + t]
        t = _next_level(b, obk, t)
    return total


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _take(b, out, n, c, side, prod, cid, acct, stp, lt, qty):
    """Match a taker against the opposite side while it crosses.

    Returns (n, remaining qty, stopped): `stopped` means self-trade prevention finished
    the taker (its CANCELED is already reported).
    """
    sym = np.int64(c.symbol)
    obk = sym * 2 + (2 - side)  # opposite side's book index
    nt = b.cfg[C_NTICKS]
    lo = b.cfg[C_LO]
    seq = c.seq
    rem = qty
    nfill = 0            # fills so far in this command: the maker's report carries the count
    while rem > 0:
        t = b.best[obk]
        if not _crosses(side, lt, t):
            break
        lv = obk * nt + t
        r = b.lv_head[lv]
        while r >= 0 and rem > 0:
            nxt = b.o_next[r]
            if acct != 0 and b.o_acct[r] == acct and stp != STP_NONE:
                if stp == STP_CANCEL_NEWEST or stp == STP_CANCEL_BOTH:
                    if stp == STP_CANCEL_BOTH:
                        n = _about_resting(out, n, b, r, R_CANCELED, RS_SELF_TRADE, b.o_qty[r], 0, seq)
                        _remove(b, r)
                    n = _emit(out, n, R_CANCELED, RS_SELF_TRADE, side, LIQ_NONE, prod, 0, sym,
                              c.price, rem, 0, cid, np.uint64(0), seq, c.pseq, c.sent_ns)
                    return n, 0, True
                if stp == STP_CANCEL_OLDEST:
                    n = _about_resting(out, n, b, r, R_CANCELED, RS_SELF_TRADE, b.o_qty[r], 0, seq)
                    _remove(b, r)
                else:  # STP_DECREMENT: both lose the smaller quantity, no trade
                    d = min(rem, b.o_qty[r])
                    rem -= d
                    if b.o_qty[r] == d:
                        n = _about_resting(out, n, b, r, R_CANCELED, RS_SELF_TRADE, d, 0, seq)
                        _remove(b, r)
                    else:
                        b.o_qty[r] -= d
                        b.lv_qty[lv] -= d
                        n = _about_resting(out, n, b, r, R_REPLACED, RS_SELF_TRADE, b.o_qty[r],
                                           b.o_qty[r], seq)
                    if rem == 0:
                        n = _emit(out, n, R_CANCELED, RS_SELF_TRADE, side, LIQ_NONE, prod, 0, sym,
                                  c.price, d, 0, cid, np.uint64(0), seq, c.pseq, c.sent_ns)
                        return n, 0, True
            else:
                q = min(rem, b.o_qty[r])
                rem -= q
                left = b.o_qty[r] - q
                price = t + lo
                nfill += 1
                n = _emit(out, n, R_FILL, RS_NONE, side, TAKER, prod, b.o_prod[r], sym, price, q,
                          rem, cid, b.o_cid[r], seq, c.pseq, c.sent_ns)
                n = _emit(out, n, R_FILL, RS_NONE, b.o_side[r], MAKER, b.o_prod[r], prod, sym,
                          price, q, left, b.o_cid[r], cid, seq, np.uint64(0), nfill)
                if left == 0:
                    _remove(b, r)
                else:
                    b.o_qty[r] = left
                    b.lv_qty[lv] -= q
            r = nxt
    return n, rem, False


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _rest(b, slot, side, sym, price, qty, prod, cid, acct, flags):
    """Rest an order (at the back of its level) in `slot`."""
    b.o_flags[slot] = flags
    b.o_price[slot] = price
    b.o_qty[slot] = qty
    b.o_side[slot] = side
    b.o_sym[slot] = sym
    b.o_prod[slot] = prod
    b.o_cid[slot] = cid
    b.o_acct[slot] = acct
    _push(b, slot, sym * 2 + side - 1, price - b.cfg[C_LO])


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _valid_enums(c):
    return ((c.side == BUY or c.side == SELL) and (c.order_type == LIMIT or c.order_type == MARKET)
            and GTC <= c.tif <= POST_ONLY and STP_NONE <= c.stp <= STP_DECREMENT)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _new(b, out, n, c):
    if not _valid_enums(c):
        return _reject(out, n, c, RS_BAD_FIELD)
    sym = np.int64(c.symbol)
    if sym >= b.cfg[C_SYMBOLS]:
        return _reject(out, n, c, RS_UNKNOWN_SYMBOL)
    qty = np.int64(c.qty)
    if qty <= 0:
        return _reject(out, n, c, RS_BAD_QTY)
    lo = b.cfg[C_LO]
    price = np.int64(c.price)
    limit = c.order_type == LIMIT
    if not limit and c.tif == POST_ONLY:       # a market order always takes: never post-only
        return _reject(out, n, c, RS_BAD_FIELD)
    if limit and (price < lo or price - lo >= b.cfg[C_NTICKS]):
        return _reject(out, n, c, RS_PRICE_BAND)
    prod = np.int64(c.producer)
    cid = c.client_id
    if _id_find(b, prod, cid) >= 0:
        return _reject(out, n, c, RS_DUPLICATE_ID)
    side = np.int64(c.side)
    obk = sym * 2 + (2 - side)
    if limit:
        lt = price - lo
    elif side == BUY:
        lt = b.cfg[C_NTICKS]
    else:
        lt = -1
    if limit and c.tif == POST_ONLY and _crosses(side, lt, b.best[obk]):
        return _reject(out, n, c, RS_POST_ONLY_WOULD_CROSS)
    rests = limit and (c.tif == GTC or c.tif == POST_ONLY)
    if rests and b.meta[M_FREE_TOP] == 0:
        return _reject(out, n, c, RS_BOOK_FULL)
    if rests and b.p_open[prod] >= b.cfg[C_OPEN_CAP]:
        return _reject(out, n, c, RS_TOO_MANY_ORDERS)
    n = _emit(out, n, R_ACK, RS_NONE, side, LIQ_NONE, prod, 0, sym, price, qty, qty, cid,
              np.uint64(0), c.seq, c.pseq, c.sent_ns)
    if c.tif == FOK and _crossing_qty(b, side, obk, lt, qty) < qty:   # all or nothing, market too
        return _emit(out, n, R_EXPIRED, RS_NONE, side, LIQ_NONE, prod, 0, sym, price, qty, 0, cid,
                     np.uint64(0), c.seq, c.pseq, c.sent_ns)
    n, rem, stopped = _take(b, out, n, c, side, prod, cid, np.int64(c.account), np.int64(c.stp),
                            lt, qty)
    if stopped or rem == 0:
        return n
    if rests:
        top = b.meta[M_FREE_TOP] - 1
        b.meta[M_FREE_TOP] = top
        b.meta[M_LIVE] += 1
        b.p_open[prod] += 1
        slot = b.free[top]
        _rest(b, slot, side, sym, price, rem, prod, cid, np.int64(c.account),
              np.uint8(F_POST_ONLY if c.tif == POST_ONLY else 0))
        _id_insert(b, prod, cid, slot)
        return n
    return _emit(out, n, R_EXPIRED, RS_NONE, side, LIQ_NONE, prod, 0, sym, price, rem, 0, cid,
                 np.uint64(0), c.seq, c.pseq, c.sent_ns)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _live_slot(b, c):
    """Slot of the live order (producer, client_id) on the command's symbol, or -1."""
    prod = np.int64(c.producer)
    h = _id_find(b, prod, c.client_id)
    if h < 0:
        return -1
    slot = np.int64(b.ids[h].slot)
    if b.o_sym[slot] != np.int64(c.symbol):
        return -1
    return slot


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _cancel(b, out, n, c):
    slot = _live_slot(b, c)
    if slot < 0:
        return _reject(out, n, c, RS_UNKNOWN_ORDER)
    n = _emit(out, n, R_CANCELED, RS_NONE, b.o_side[slot], LIQ_NONE, b.o_prod[slot], 0,
              b.o_sym[slot], b.o_price[slot], b.o_qty[slot], 0, b.o_cid[slot], np.uint64(0),
              c.seq, c.pseq, c.sent_ns)
    _remove(b, slot)
    return n


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _replace(b, out, n, c):
    slot = _live_slot(b, c)
    if slot < 0:
        return _reject(out, n, c, RS_UNKNOWN_ORDER)
    qty = np.int64(c.qty)
    if qty <= 0:
        return _reject(out, n, c, RS_BAD_QTY)
    lo = b.cfg[C_LO]
    price = np.int64(c.price)
    if price < lo or price - lo >= b.cfg[C_NTICKS]:
        return _reject(out, n, c, RS_PRICE_BAND)
    if not (STP_NONE <= c.stp <= STP_DECREMENT):
        return _reject(out, n, c, RS_BAD_FIELD)
    side = b.o_side[slot]
    sym = b.o_sym[slot]
    prod = b.o_prod[slot]
    cid = b.o_cid[slot]
    bk = sym * 2 + side - 1
    old_t = b.o_price[slot] - lo
    lv = bk * b.cfg[C_NTICKS] + old_t
    flags = b.o_flags[slot]
    # a post-only order stays one: a replace that would make it take is rejected, the order unchanged
    if flags & F_POST_ONLY and _crosses(side, price - lo, b.best[sym * 2 + (2 - side)]):
        return _reject(out, n, c, RS_POST_ONLY_WOULD_CROSS)
    n = _emit(out, n, R_REPLACED, RS_NONE, side, LIQ_NONE, prod, 0, sym, price, qty, qty, cid,
              np.uint64(0), c.seq, c.pseq, c.sent_ns)
    if price == b.o_price[slot] and qty <= b.o_qty[slot]:
        b.lv_qty[lv] -= b.o_qty[slot] - qty  # a reduction keeps time priority
        b.o_qty[slot] = qty
        return n
    # Loses priority: off the book, then in again as a GTC limit order with the same id.
    b.lv_qty[lv] -= b.o_qty[slot]
    _unlink(b, slot, bk, old_t)
    acct = b.o_acct[slot]
    n, rem, stopped = _take(b, out, n, c, side, prod, cid, acct, np.int64(c.stp), price - lo, qty)
    if rem > 0 and not stopped:
        _rest(b, slot, side, sym, price, rem, prod, cid, acct, flags)
    else:
        _release(b, slot)
    return n


@njit(cache=True, nogil=True, _nrt=False)
def _cancel_all(b, out, n, c):
    """Cancel every resting order of the command's producer, in book order (symbol, side,
    price priority, time); then an ACK with how many."""
    prod = np.int64(c.producer)
    nt = b.cfg[C_NTICKS]
    lo = b.cfg[C_LO]
    k = 0
    for bk in range(2 * b.cfg[C_SYMBOLS]):
        t = b.best[bk]
        while t >= 0 and b.p_open[prod] > 0:
            after = _next_level(b, bk, t)       # found before this level may empty
            r = b.lv_head[bk * nt + t]
            while r >= 0:
                nxt = b.o_next[r]
                if b.o_prod[r] == prod:
                    n = _emit(out, n, R_CANCELED, RS_DISCONNECTED, b.o_side[r], LIQ_NONE, prod, 0, b.o_sym[r],
                              t + lo, b.o_qty[r], 0, b.o_cid[r], np.uint64(0), c.seq, c.pseq, c.sent_ns)
                    _remove(b, r)
                    k += 1
                r = nxt
            t = after
    return _emit(out, n, R_ACK, RS_NONE, 0, LIQ_NONE, prod, 0, c.symbol, 0, k, 0, c.client_id,
                 np.uint64(0), c.seq, c.pseq, c.sent_ns)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _worst_case(b, c):
    """Most reports one command can produce: 2 per resting order it can touch, plus 3.

    A fill or a DECREMENT takes at least one lot, so a taker touches at most qty orders,
    except under CANCEL_OLDEST, which cancels resting orders without using any (and a
    REPLACE applies it with the order's account, not the command's). A command with a
    verdict gets its one REJECTED."""
    if c.verdict == 0 and c.kind == K_CANCEL_ALL:
        return b.p_open[np.int64(c.producer)] + 1
    sym = np.int64(c.symbol)
    if c.verdict != 0 or c.kind == K_CANCEL or sym >= b.cfg[C_SYMBOLS]:
        return 1
    touch = max(b.cnt[sym * 2], b.cnt[sym * 2 + 1])
    if c.stp != STP_CANCEL_OLDEST:
        touch = min(touch, max(np.int64(c.qty), 0))
    return 2 * touch + 3


@njit(cache=True, nogil=True, _nrt=False)
def _run(b, cmds, start, stop, out, n, stamp, engine_ns):
    """Process cmds[start:stop] into out[n:]. Returns (next command index, n, status).

    stamp=True: the matcher is the sequencer and writes seq and engine_ns into each
    command. stamp=False (replay): each command must carry seq == last_seq + 1.
    A command whose `verdict` is not 0 (the merge step's, journaled with it) is
    REJECTED with that reason and does not reach the book.
    """
    cap = out.shape[0]
    i = start
    while i < stop:
        c = cmds[i]
        if n + _worst_case(b, c) > cap:
            return i, n, ST_OUT_FULL
        seq = b.meta[M_LAST_SEQ] + 1
        if stamp:
            c.seq = seq
            c.engine_ns = engine_ns
        elif c.seq != seq:
            return i, n, ST_SEQ_GAP
        b.meta[M_LAST_SEQ] = seq
        k = c.kind
        if c.verdict != 0:
            n = _reject(out, n, c, np.int64(c.verdict))
        elif k == K_NEW:
            n = _new(b, out, n, c)
        elif k == K_CANCEL:
            n = _cancel(b, out, n, c)
        elif k == K_REPLACE:
            n = _replace(b, out, n, c)
        elif k == K_CANCEL_ALL:
            n = _cancel_all(b, out, n, c)
        else:
            n = _reject(out, n, c, RS_BAD_FIELD)
        i += 1
    return i, n, ST_DONE


@njit(cache=True, nogil=True, _nrt=False)
def _resting(b, out):
    """Every resting order in canonical order: symbol, BUY then SELL, best price, time."""
    nt = b.cfg[C_NTICKS]
    lo = b.cfg[C_LO]
    n = 0
    for bk in range(2 * b.cfg[C_SYMBOLS]):
        t = b.best[bk]
        while t >= 0:
            r = b.lv_head[bk * nt + t]
            while r >= 0:
                o = out[n]
                o.symbol = b.o_sym[r]
                o.side = b.o_side[r]
                o.price = t + lo
                o.producer = b.o_prod[r]
                o.client_id = b.o_cid[r]
                o.leaves = b.o_qty[r]
                o.account = b.o_acct[r]
                n += 1
                r = b.o_next[r]
            t = _next_level(b, bk, t)
    return n


@njit(cache=True, nogil=True, _nrt=False)
def _depth(b, bk, levels, out):
    """The first `levels` levels of side bk: price, total quantity, order count."""
    nt = b.cfg[C_NTICKS]
    t = b.best[bk]
    n = 0
    while t >= 0 and n < levels:
        out[n].price = t + b.cfg[C_LO]
        out[n].qty = b.lv_qty[bk * nt + t]
        out[n].orders = b.lv_cnt[bk * nt + t]
        n += 1
        t = _next_level(b, bk, t)
    return n


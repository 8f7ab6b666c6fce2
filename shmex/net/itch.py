"""ITCH 5.0 market data: the messages the feed writes, from the engine's commands and reports.

Every message: type 1, stock locate u16 (symbol index + 1), tracking number u16 (0),
timestamp u48 (ns since midnight UTC), then its fields; big-endian. In a message block
(the feed file, a MoldUDP64 packet) each message is preceded by its length, u16.

`encode` turns one batch of sequenced commands and the reports the matcher gave for them
into messages (``Encoder`` keeps the book of resting orders the feed has announced):

- a NEW that rests: ``A`` Add Order with what is left after its own fills;
- a maker's fill: ``E`` Order Executed, match number ``cmd_seq << 20 | k`` (k: the fill's
  index within the command, the number OUCH's Executed carries too);
- a cancel: ``D`` Order Delete; a reduction that keeps priority (a replace to a smaller
  size, self-trade prevention's decrement): ``X`` Order Cancel with the shares removed;
- a replace that loses priority: ``U`` Order Replace if it rests again (new reference,
  its size after its own fills), ``D`` if it does not.

An order's reference number is the seq of the command that gave it its place in the
queue: unique in the journal, increasing with time priority, and a function of the
journal alone. Shares are lots times the symbol's lot; prices ticks times its tick (both
from the symbols file), 4 implied decimals.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.typed import Dict

from shmex.net.bigendian import put, u16, u32, u64
from shmex.schema import (BUY, FOK, IOC, K_CANCEL, K_CANCEL_ALL, K_NEW, LIMIT, MAKER, R_ACK,
                          R_CANCELED, R_EXPIRED, R_FILL, R_REJECTED, R_REPLACED, STP_DECREMENT)

DAY_NS = 86_400_000_000_000
MATCH_SHIFT = 20

# Sizes of the ITCH 5.0 messages (type byte included), by type.
SIZES = {b"S": 12, b"R": 39, b"H": 25, b"Y": 20, b"L": 26, b"V": 35, b"W": 12, b"K": 28,
         b"J": 35, b"h": 21, b"A": 36, b"F": 40, b"E": 31, b"C": 36, b"X": 23, b"D": 19,
         b"U": 35, b"P": 44, b"Q": 40, b"B": 19, b"I": 50, b"N": 20, b"O": 48}

# System Event codes
START_OF_MESSAGES, START_OF_SYSTEM, START_OF_MARKET = b"O", b"S", b"Q"
END_OF_MARKET, END_OF_SYSTEM, END_OF_MESSAGES = b"M", b"E", b"C"
MAX_MESSAGE = 50

T_A, T_D, T_E, T_U, T_X, T_C, T_F = (ord(c) for c in "ADEUXCF")

# Encoder globals (int64 cells)
G_MSGS, G_POS, G_TS_OFF, G_FREE_TOP, G_UNKNOWN, G_LIVE = range(6)

Encoder = namedtuple("Encoder", "g ids ref leaves price side sym free ticks lots names")


def new_encoder(names, ticks, lots, *, capacity: int, ts_offset: int) -> Encoder:
    """An empty feed book for symbols with u64 name keys `names`, price units per tick
    `ticks` and shares per lot `lots` (one row per book symbol); ts_offset: add to an
    engine stamp (CLOCK_MONOTONIC ns) to get UTC ns."""
    g = np.zeros(8, np.int64)
    g[G_TS_OFF] = ts_offset
    g[G_FREE_TOP] = capacity
    ids = Dict.empty(types.UniTuple(types.int64, 2), types.int64)
    return Encoder(g, ids, np.zeros(capacity, np.int64), np.zeros(capacity, np.int64),
                   np.zeros(capacity, np.int64), np.zeros(capacity, np.uint8),
                   np.zeros(capacity, np.int64), np.arange(capacity - 1, -1, -1, dtype=np.int64),
                   np.asarray(ticks, np.int64), np.asarray(lots, np.int64), np.asarray(names, np.uint64))


# -- writing messages ----------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _begin(out, offs, g, size, typ, sym, ts):
    """Start a framed message: length, type, locate, tracking, timestamp; -> its body offset."""
    p = g[G_POS]
    put(out, p, size, 2)
    out[p + 2] = typ
    put(out, p + 3, sym + 1, 2)
    put(out, p + 5, 0, 2)
    put(out, p + 7, ts, 6)
    offs[g[G_MSGS]] = p
    g[G_MSGS] += 1
    g[G_POS] = p + 2 + size
    return p + 13


@njit(cache=True, nogil=True)
def _add(out, offs, g, ref, side, shares, name, price, sym, ts):
    p = _begin(out, offs, g, 36, T_A, sym, ts)
    put(out, p, ref, 8)
    out[p + 8] = 66 if side == BUY else 83          # 'B' / 'S'
    put(out, p + 9, shares, 4)
    put(out, p + 13, name, 8)
    put(out, p + 21, price, 4)


@njit(cache=True, nogil=True)
def _executed(out, offs, g, ref, shares, match, sym, ts):
    p = _begin(out, offs, g, 31, T_E, sym, ts)
    put(out, p, ref, 8)
    put(out, p + 8, shares, 4)
    put(out, p + 12, match, 8)


@njit(cache=True, nogil=True)
def _cancel(out, offs, g, ref, shares, sym, ts):
    p = _begin(out, offs, g, 23, T_X, sym, ts)
    put(out, p, ref, 8)
    put(out, p + 8, shares, 4)


@njit(cache=True, nogil=True)
def _delete(out, offs, g, ref, sym, ts):
    p = _begin(out, offs, g, 19, T_D, sym, ts)
    put(out, p, ref, 8)


@njit(cache=True, nogil=True)
def _replace(out, offs, g, old, new, shares, price, sym, ts):
    p = _begin(out, offs, g, 35, T_U, sym, ts)
    put(out, p, old, 8)
    put(out, p + 8, new, 8)
    put(out, p + 16, shares, 4)
    put(out, p + 20, price, 4)


# -- the feed's book of announced orders ---------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _find(ids, key):
    if key in ids:
        return ids[key]
    return np.int64(-1)


@njit(cache=True, nogil=True, inline="always")
def _rest(e, key, ref, leaves, price, side, sym):
    top = e.g[G_FREE_TOP] - 1
    e.g[G_FREE_TOP] = top
    e.g[G_LIVE] += 1
    s = e.free[top]
    e.ids[key] = s
    e.ref[s], e.leaves[s], e.price[s], e.side[s], e.sym[s] = ref, leaves, price, side, sym
    return s


@njit(cache=True, nogil=True, inline="always")
def _gone(e, key, s):
    del e.ids[key]
    e.free[e.g[G_FREE_TOP]] = s
    e.g[G_FREE_TOP] += 1
    e.g[G_LIVE] -= 1


@njit(cache=True, nogil=True)
def _encode(g, ids, ref, leaves, price, side, sym, free, ticks, lots, names, cmds, n_cmds, reps,
            n_reps, out, offs):
    e = Encoder(g, ids, ref, leaves, price, side, sym, free, ticks, lots, names)
    j = 0
    for i in range(n_cmds):
        c = cmds[i]
        s = np.int64(c.seq)
        ts = ((np.int64(c.engine_ns) + g[G_TS_OFF]) % DAY_NS + DAY_NS) % DAY_NS
        key = (np.int64(c.producer), np.int64(c.client_id))
        old = _find(ids, key) if c.kind != K_NEW else np.int64(-1)
        acked = term = moved = False
        left = np.int64(0)
        while j < n_reps and reps[j].cmd_seq == s:
            r = reps[j]
            j += 1
            k = r.kind
            if c.kind == K_CANCEL_ALL:           # its CANCELED reports: resting orders, deleted below
                if k == R_ACK:
                    continue
                mine = False
            else:
                mine = (np.int64(r.producer) == key[0] and np.int64(r.client_id) == key[1]
                        and not (k == R_FILL and r.liquidity == MAKER))
            if mine:
                if k == R_ACK:
                    acked = True
                    left = np.int64(r.leaves)
                elif k == R_FILL:
                    left = np.int64(r.leaves)
                elif k == R_EXPIRED or k == R_REJECTED:
                    term = True
                elif k == R_CANCELED:
                    if c.kind == K_CANCEL and old >= 0:
                        _delete(out, offs, g, ref[old], sym[old], ts)
                        _gone(e, key, old)
                        old = np.int64(-1)
                    else:
                        term = True                 # self-trade prevention ended the taker
                elif k == R_REPLACED and old >= 0:
                    q = np.int64(r.qty)
                    if np.int64(r.price) == price[old] and q <= leaves[old]:
                        if q < leaves[old]:
                            _cancel(out, offs, g, ref[old], (leaves[old] - q) * lots[sym[old]], sym[old], ts)
                            leaves[old] = q
                    else:
                        moved = acked = True
                        left = q
                continue
            o = _find(ids, (np.int64(r.producer), np.int64(r.client_id)))
            if o < 0:
                g[G_UNKNOWN] += 1                    # a report on an order the feed never announced
                continue
            sy = sym[o]
            if k == R_FILL:
                m = (s << MATCH_SHIFT) | np.int64(r.sent_ns)
                _executed(out, offs, g, ref[o], np.int64(r.qty) * lots[sy], m, sy, ts)
                leaves[o] = np.int64(r.leaves)
                if leaves[o] == 0:
                    _gone(e, (np.int64(r.producer), np.int64(r.client_id)), o)
            elif k == R_CANCELED:
                if c.stp == STP_DECREMENT:
                    left -= leaves[o]
                _delete(out, offs, g, ref[o], sy, ts)
                _gone(e, (np.int64(r.producer), np.int64(r.client_id)), o)
            elif k == R_REPLACED:                    # decremented by self-trade prevention
                d = leaves[o] - np.int64(r.leaves)
                left -= d
                _cancel(out, offs, g, ref[o], d * lots[sy], sy, ts)
                leaves[o] = np.int64(r.leaves)
        if moved:
            if left > 0 and not term:
                sy = sym[old]
                _replace(out, offs, g, ref[old], s, left * lots[sy], np.int64(c.price) * ticks[sy], sy, ts)
                ref[old], leaves[old], price[old] = s, left, np.int64(c.price)
            else:
                _delete(out, offs, g, ref[old], sym[old], ts)
                _gone(e, key, old)
        elif (c.kind == K_NEW and acked and not term and left > 0 and c.order_type == LIMIT
              and c.tif != IOC and c.tif != FOK):
            sy = np.int64(c.symbol)
            _add(out, offs, g, s, c.side, left * lots[sy], names[sy], np.int64(c.price) * ticks[sy], sy, ts)
            _rest(e, key, s, left, np.int64(c.price), c.side, sy)
    return j


def encode(e: Encoder, cmds, n_cmds: int, reps, n_reps: int, out, offs) -> int:
    """Messages for cmds[:n_cmds] (with their reports reps[:n_reps], in order), framed, at
    out[e.g[G_POS]:]; each message's offset into offs[e.g[G_MSGS]:]. -> reports used.
    out must have room for MAX_MESSAGE + 2 bytes per report, offs one cell per report."""
    return _encode(*e, cmds, n_cmds, reps, n_reps, out, offs)


# -- the other messages (once per session: Python) ------------------------------------------
def _header(typ: bytes, sym: int, ts: int) -> bytes:
    return typ + (sym + 1).to_bytes(2, "big") + b"\0\0" + (ts % DAY_NS).to_bytes(6, "big")


def system_event(code: bytes, ts: int) -> bytes:
    return _header(b"S", -1, ts) + code


def stock_directory(sym: int, name: str, round_lot: int, ts: int) -> bytes:
    """Stock Directory: market category ' ' (unavailable), financial status ' ', round lot,
    round lots only 'N', issue classification ' ', subtype '  ', authenticity 'P'
    (live), short sale threshold ' ', IPO flag ' ', LULD tier ' ', ETP 'N', leverage 0,
    inverse 'N'."""
    return (_header(b"R", sym, ts) + name.encode("ascii").ljust(8) + b"  " + round_lot.to_bytes(4, "big")
            + b"N" + b" " + b"  " + b"P" + b"  " + b" " + b"N" + (0).to_bytes(4, "big") + b"N")


def framed(msgs) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in msgs)


# -- reading messages ------------------------------------------------------------------------
def decode(msg: bytes) -> dict:
    """One message as a dict of its fields (the ones the feed writes, and the header of any)."""
    t = msg[:1]
    d = {"type": t.decode("ascii"), "locate": int.from_bytes(msg[1:3], "big"),
         "tracking": int.from_bytes(msg[3:5], "big"), "timestamp": int.from_bytes(msg[5:11], "big")}
    b = msg[11:]
    i = lambda lo, hi: int.from_bytes(b[lo:hi], "big")   # noqa: E731
    if t == b"S":
        d["event"] = b[:1].decode("ascii")
    elif t == b"R":
        d.update(stock=b[:8].decode("ascii").rstrip(), round_lot=i(10, 14))
    elif t in (b"A", b"F"):
        d.update(ref=i(0, 8), side=b[8:9].decode("ascii"), shares=i(9, 13),
                 stock=b[13:21].decode("ascii").rstrip(), price=i(21, 25))
    elif t in (b"E", b"C"):
        d.update(ref=i(0, 8), shares=i(8, 12), match=i(12, 20))
        if t == b"C":
            d.update(printable=b[20:21].decode("ascii"), price=i(21, 25))
    elif t == b"X":
        d.update(ref=i(0, 8), shares=i(8, 12))
    elif t == b"D":
        d.update(ref=i(0, 8))
    elif t == b"U":
        d.update(ref=i(0, 8), new_ref=i(8, 16), shares=i(16, 20), price=i(20, 24))
    return d


def messages(block) -> list[bytes]:
    """The messages of a message block (u16 length before each)."""
    out, p, b = [], 0, memoryview(block)
    while p + 2 <= len(b):
        n = int.from_bytes(b[p:p + 2], "big")
        out.append(bytes(b[p + 2:p + 2 + n]))
        p += 2 + n
    return out


# -- a book from messages (the subscriber's) -------------------------------------------------
Book = namedtuple("Book", "g ids sym side price shares free")
B_LIVE, B_FREE_TOP, B_MSGS, B_UNKNOWN = range(4)


def new_book(capacity: int = 1 << 20) -> Book:
    g = np.zeros(4, np.int64)
    g[B_FREE_TOP] = capacity
    return Book(g, Dict.empty(types.int64, types.int64), np.zeros(capacity, np.int64),
                np.zeros(capacity, np.uint8), np.zeros(capacity, np.int64), np.zeros(capacity, np.int64),
                np.arange(capacity - 1, -1, -1, dtype=np.int64))


@njit(cache=True, nogil=True)
def _book_add(g, ids, sym, side, price, shares, free, ref, sy, sd, px, sh):
    top = g[B_FREE_TOP] - 1
    g[B_FREE_TOP] = top
    g[B_LIVE] += 1
    s = free[top]
    ids[ref] = s
    sym[s], side[s], price[s], shares[s] = sy, sd, px, sh


@njit(cache=True, nogil=True)
def _book_del(g, ids, free, ref, s):
    del ids[ref]
    free[g[B_FREE_TOP]] = s
    g[B_FREE_TOP] += 1
    g[B_LIVE] -= 1


@njit(cache=True, nogil=True)
def _apply(g, ids, sym, side, price, shares, free, buf, lo, hi):
    """Apply the framed messages in buf[lo:hi] to the book; -> messages applied."""
    p = lo
    n = 0
    while p + 2 <= hi:
        ln = u16(buf, p)
        m = p + 2
        p = m + ln
        n += 1
        t = buf[m]
        if t == T_A or t == T_F:
            ref = np.int64(u64(buf, m + 11))
            _book_add(g, ids, sym, side, price, shares, free, ref, u16(buf, m + 1) - 1,
                      buf[m + 19], u32(buf, m + 32), u32(buf, m + 20))
            continue
        if t != T_E and t != T_C and t != T_X and t != T_D and t != T_U:
            continue
        ref = np.int64(u64(buf, m + 11))
        s = _find(ids, ref)
        if s < 0:
            g[B_UNKNOWN] += 1
            continue
        if t == T_D:
            _book_del(g, ids, free, ref, s)
        elif t == T_U:
            sy, sd = sym[s], side[s]
            _book_del(g, ids, free, ref, s)
            _book_add(g, ids, sym, side, price, shares, free, np.int64(u64(buf, m + 19)), sy, sd,
                      u32(buf, m + 31), u32(buf, m + 27))
        else:
            shares[s] -= u32(buf, m + 19)
            if shares[s] <= 0:
                _book_del(g, ids, free, ref, s)
    g[B_MSGS] += n
    return n


def apply(book: Book, buf, lo: int = 0, hi: int | None = None) -> int:
    """Apply a message block (buf: uint8 array) to the book; -> messages applied."""
    return _apply(*book, buf, lo, len(buf) if hi is None else hi)


@njit(cache=True, nogil=True)
def _timestamps(buf, lo, hi, out):
    p = lo
    k = 0
    while p + 2 <= hi and k < len(out):
        m = p + 2
        out[k] = (u16(buf, m + 5) << 32) | u32(buf, m + 7)
        k += 1
        p = m + u16(buf, p)
    return k


def timestamps(buf, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """The timestamp (ns since midnight) of every message of a framed block."""
    hi = len(buf) if hi is None else hi
    out = np.empty((hi - lo) // 13 + 1, np.int64)      # a message is 13 bytes at least, framed
    return out[:_timestamps(buf, lo, hi, out)]


def levels(book: Book, symbol: int, side: str, depth: int | None = None) -> list[tuple[int, int, int]]:
    """[(price, shares, orders)] of one side of a symbol, best first."""
    live = np.fromiter(book.ids.values(), np.int64, len(book.ids))
    code = ord(side)
    sel = live[(book.sym[live] == symbol) & (book.side[live] == code)]
    if not len(sel):
        return []
    px, sh = book.price[sel], book.shares[sel]
    uniq, inv = np.unique(px, return_inverse=True)
    orders = np.bincount(inv, minlength=len(uniq))
    tot = np.zeros(len(uniq), np.int64)
    np.add.at(tot, inv, sh)
    rows = [(int(uniq[i]), int(tot[i]), int(orders[i])) for i in range(len(uniq))]
    rows.sort(key=lambda r: -r[0] if side == "B" else r[0])
    return rows if depth is None else rows[:depth]


def warm() -> None:
    """Load the kernels (from numba's cache) on scratch data."""
    from shmex.schema import commands, reports

    e = new_encoder(np.zeros(1, np.uint64), np.ones(1), np.ones(1), capacity=4, ts_offset=0)
    out = np.zeros(256, np.uint8)
    encode(e, commands(1), 0, reports(1), 0, out, np.zeros(4, np.int64))
    apply(new_book(4), out, 0, 0)
    timestamps(out, 0, 0)

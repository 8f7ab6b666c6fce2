"""OUCH 5.0 over SoupBinTCP: the gateway's codec and its order state, as numba kernels.

`decode` walks a session's received bytes frame by frame (SoupBinTCP: u16 big-endian
length counting the type byte, type, payload) and turns each OUCH inbound message
('O' enter, 'U' replace, 'X' cancel, 'M' modify) into a shmex COMMAND, or into an OUCH
'J' Rejected / nothing (a UserRefNum that does not increase is ignored, as the spec says).
`on_reports` turns the engine's REPORT records for the gateway's producer slot into OUCH
outbound messages ('A', 'U', 'E', 'C', 'J', 'M'), each framed as a SoupBinTCP 'S' packet
for the user the order belongs to. `cancel_all` cancels a user's orders (cancel on
disconnect). No Python runs per message.

Identity: a user's order has client id ``user << 32 | UserRefNum of its Enter Order``;
the gateway stamps ``producer`` and ``account`` itself. Prices: OUCH's 4-decimal units
must be a multiple of the symbol's tick (else a reject) and become ``price // tick``
ticks; shares must be a multiple of the lot. No float anywhere.

The state (`State`) is a function of the inbound messages and reports applied, in order:
the gateway's journal replays them through these same kernels after a restart.

Match numbers: ``cmd_seq << 20 | k``, k the fill's 1-based index within the command (the
taker counts its fills; a maker's fill report carries k in ``sent_ns``): both sides of a
trade get the same number, and no two trades do.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.typed import Dict
from shmex.net.bigendian import put, u16, u32, u64

from shmex.schema import (BUY, GTC, IOC, K_CANCEL, K_NEW, K_REPLACE, LIMIT, MAKER, POST_ONLY,
                          R_ACK, R_CANCELED, R_EXPIRED, R_FILL, R_REJECTED, R_REPLACED,
                          RS_BAD_QTY, RS_BOOK_FULL, RS_DUPLICATE_ID, RS_POST_ONLY_WOULD_CROSS,
                          RS_PRICE_BAND, RS_SELF_TRADE, RS_UNKNOWN_ORDER, RS_UNKNOWN_SYMBOL, SELL,
                          commands)

# -- SoupBinTCP --------------------------------------------------------------------------
MAX_FRAME = 1024               # longest packet accepted (length field value)
HDR = 3                        # length (2) + packet type (1)

# decode status (>= 0: stopped cleanly at the returned position; < 0: protocol error there)
NEED = 0          # every complete frame taken; the rest is an incomplete frame
FULL = 1          # out of room for commands or output: call again after flushing
LOGIN = 2         # a Login Request frame: the caller handles it
LOGOUT = 3        # a Logout Request frame
E_LENGTH = -1     # a frame length of 0 or over MAX_FRAME
E_TYPE = -2       # an unknown packet type
E_MSG_TYPE = -3   # an unknown OUCH message type in Unsequenced Data
E_MSG_LENGTH = -4  # an OUCH message whose size does not match its type
ERRORS = {E_LENGTH: f"frame length 0 or over {MAX_FRAME}", E_TYPE: "unknown packet type",
          E_MSG_TYPE: "unknown OUCH message type", E_MSG_LENGTH: "OUCH message of the wrong size"}

# -- OUCH reject reasons (u16 in 'J' Rejected): the gateway's codes, named after the
# conditions of OUCH 5.0's reject reason appendix; README lists them.
REJ_INVALID_SYMBOL = 1
REJ_INVALID_PRICE = 2          # zero or off the symbol's tick
REJ_PRICE_BAND = 3             # outside the symbol's band
REJ_INVALID_QUANTITY = 4       # zero, over 2**31 lots, or not a multiple of the lot
REJ_INVALID_SIDE = 5
REJ_INVALID_TIF = 6            # only 0 (day) and 3 (IOC)
REJ_INVALID_DISPLAY = 7        # only Y (visible) and A (attributable)
REJ_ISO_NOT_ALLOWED = 8
REJ_INVALID_CROSS = 9          # only N (continuous market)
REJ_UNSUPPORTED_OPTION = 10    # an appendage option shmex does not implement
REJ_UNKNOWN_ORDER = 11
REJ_DUPLICATE = 12
REJ_BOOK_FULL = 13
REJ_POST_ONLY_WOULD_CROSS = 14
REJ_SELF_TRADE = 15
REJ_OPEN_ORDER_LIMIT = 16      # the user has the most open orders the gateway allows
REJ_REPLACE_NOT_ALLOWED = 17   # a replace that changes time in force; a modify that grows
REJ_OTHER = 99

# appendage options: option 12 is Post Only ('P' post only, 'N' not)
OPT_POST_ONLY = 12

# -- state layout --------------------------------------------------------------------------
# g: gateway cells
G_NEXT_PSEQ, G_FREE_TOP, G_PRODUCER, G_TS, G_NOW, G_NC, G_ON, G_NM, G_MAX_OPEN, G_LIVE = range(10)
G_CELLS = 16
# o: one row per order slot
(O_USER, O_URN, O_ORIG, O_SYM, O_SIDE, O_OSIDE, O_TIF, O_DISP, O_CAPA, O_ISO, O_CROSS,
 O_USED, O_PRICE, O_LEAVES, O_ORN, O_TIFK) = range(16)
O_FIELDS = 16
# pend: one row per command in flight, at pseq % len(pend)
P_PSEQ, P_KIND, P_SLOT, P_CID, P_URN, P_PREV, P_QTY, P_FILLS, P_OSIDE, P_PRICE = range(10)
P_FIELDS = 10
# pending kinds
PK_ENTER, PK_REPLACE, PK_CANCEL, PK_REDUCE, PK_MODIFY, PK_DISCONNECT = 1, 2, 3, 4, 5, 6

# The kernels' state. A numba typed Dict inside a tuple argument costs tens of
# microseconds to unbox at every call from Python, so the entry points take the arrays
# (`Arrays`) and the dict apart and build `State` inside the compiled code.
Arrays = namedtuple("Arrays", "g uacct uhw uopen skey snum o oclord ofree pend pclord")
State = namedtuple("State", Arrays._fields + ("keys",))
Out = namedtuple("Out", "cmds obuf omsg")

CLORD = 14
_BLANK = np.full(CLORD, 32, np.uint8)      # a ClOrdID of spaces (a constant inside the kernels)
OUT_MAX = 80                   # the longest outbound frame the gateway writes, header included


def new_state(accounts, sym_keys, sym_nums, *, producer: int, capacity: int, max_open: int,
              inflight: int) -> State:
    """Empty gateway state for users with `accounts` and the symbol table (`instruments.table`)."""
    nu = len(accounts)
    g = np.zeros(G_CELLS, dtype=np.int64)
    g[G_NEXT_PSEQ] = 1
    g[G_FREE_TOP] = capacity
    g[G_PRODUCER] = producer
    g[G_MAX_OPEN] = max_open
    keys = Dict.empty(key_type=types.int64, value_type=types.int64)
    return State(g, np.asarray(accounts, dtype=np.int64), np.zeros(nu, np.int64), np.zeros(nu, np.int64),
                 np.asarray(sym_keys, dtype=np.uint64), np.asarray(sym_nums, dtype=np.int64),
                 np.zeros((capacity, O_FIELDS), np.int64), np.zeros((capacity, CLORD), np.uint8),
                 np.arange(capacity - 1, -1, -1, dtype=np.int64),
                 np.zeros((inflight, P_FIELDS), np.int64), np.zeros((inflight, CLORD), np.uint8), keys)


def new_out(commands_cap: int, frames_cap: int) -> Out:
    return Out(commands(commands_cap), np.zeros(frames_cap * OUT_MAX, np.uint8),
               np.zeros((frames_cap, 3), np.int64))


def reset_out(st: State) -> None:
    st.g[G_NC] = st.g[G_ON] = st.g[G_NM] = 0


# -- byte helpers: net.bigendian ----------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _key(u, urn):
    return (np.int64(u) << 32) | np.int64(urn)


# -- outbound framing ----------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _frame(st, out, u, size, typ):
    """Start an 'S' packet of an OUCH message of `size` bytes for user u; -> its offset."""
    on = st.g[G_ON]
    ob = out.obuf
    ob[on] = np.uint8((size + 1) >> 8)
    ob[on + 1] = np.uint8((size + 1) & 0xFF)
    ob[on + 2] = 83                              # 'S' sequenced data
    p = on + HDR
    ob[p] = typ
    put(ob, p + 1, st.g[G_TS], 8)
    nm = st.g[G_NM]
    out.omsg[nm, 0] = u
    out.omsg[nm, 1] = on
    out.omsg[nm, 2] = size + HDR
    st.g[G_NM] = nm + 1
    st.g[G_ON] = on + size + HDR
    return p


@njit(cache=True, nogil=True)
def _out_rejected(st, out, u, urn, code, src, src_off):
    """'J' Rejected (29 bytes); the ClOrdID copied from src[src_off:src_off + 14]."""
    p = _frame(st, out, u, 29, 74)
    ob = out.obuf
    put(ob, p + 9, urn, 4)
    put(ob, p + 13, code, 2)
    for i in range(CLORD):
        ob[p + 15 + i] = src[src_off + i]


@njit(cache=True, nogil=True)
def _put_symbol(st, ob, p, sym):
    k = st.skey[sym]
    put(ob, p, k, 8)


@njit(cache=True, nogil=True)
def _out_order(st, out, slot, typ, prev_urn):
    """'A' Accepted (64 bytes) or, with prev_urn >= 0, 'U' Replaced (68): the order as it is."""
    o = st.o
    u = o[slot, O_USER]
    shift = 0 if prev_urn < 0 else 4
    p = _frame(st, out, u, 64 + shift, typ)
    ob = out.obuf
    if prev_urn >= 0:
        put(ob, p + 9, prev_urn, 4)
    q = p + shift
    put(ob, q + 9, o[slot, O_URN], 4)
    ob[q + 13] = np.uint8(o[slot, O_OSIDE])
    put(ob, q + 14, o[slot, O_LEAVES], 4)
    _put_symbol(st, ob, q + 18, o[slot, O_SYM])
    put(ob, q + 26, o[slot, O_PRICE], 8)
    ob[q + 34] = np.uint8(o[slot, O_TIF])
    ob[q + 35] = np.uint8(o[slot, O_DISP])
    put(ob, q + 36, o[slot, O_ORN], 8)
    ob[q + 44] = np.uint8(o[slot, O_CAPA])
    ob[q + 45] = np.uint8(o[slot, O_ISO])
    ob[q + 46] = np.uint8(o[slot, O_CROSS])
    ob[q + 47] = 76                              # 'L' live
    for i in range(CLORD):
        ob[q + 48 + i] = st.oclord[slot, i]
    put(ob, q + 62, 0, 2)


@njit(cache=True, nogil=True)
def _out_canceled(st, out, slot, qty, reason):
    p = _frame(st, out, st.o[slot, O_USER], 18, 67)
    ob = out.obuf
    put(ob, p + 9, st.o[slot, O_URN], 4)
    put(ob, p + 13, qty, 4)
    ob[p + 17] = reason


@njit(cache=True, nogil=True)
def _out_executed(st, out, slot, qty, price, liq, match):
    p = _frame(st, out, st.o[slot, O_USER], 36, 69)
    ob = out.obuf
    put(ob, p + 9, st.o[slot, O_URN], 4)
    put(ob, p + 13, qty, 4)
    put(ob, p + 17, price, 8)
    ob[p + 25] = liq
    put(ob, p + 26, match, 8)
    put(ob, p + 34, 0, 2)


@njit(cache=True, nogil=True)
def _out_modified(st, out, slot):
    p = _frame(st, out, st.o[slot, O_USER], 18, 77)
    ob = out.obuf
    put(ob, p + 9, st.o[slot, O_URN], 4)
    ob[p + 13] = np.uint8(st.o[slot, O_OSIDE])
    put(ob, p + 14, st.o[slot, O_LEAVES], 4)


# -- order slots -----------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _free(st, slot):
    """The order is finished: its keys go, its slot returns to the free list."""
    o = st.o
    u = o[slot, O_USER]
    cid = _key(u, o[slot, O_ORIG])
    if cid in st.keys:
        del st.keys[cid]
    cur = _key(u, o[slot, O_URN])
    if cur != cid and cur in st.keys and st.keys[cur] == slot:
        del st.keys[cur]
    o[slot, O_USED] = 0
    st.uopen[u] -= 1
    st.g[G_LIVE] -= 1
    top = st.g[G_FREE_TOP]
    st.ofree[top] = slot
    st.g[G_FREE_TOP] = top + 1


@njit(cache=True, nogil=True)
def _slot_of(st, u, urn):
    k = _key(u, urn)
    if k in st.keys:
        return st.keys[k]
    return -1


@njit(cache=True, nogil=True)
def _command(st, out, kind, slot, price_ticks, lots):
    """Append a COMMAND for order `slot`; -> its pseq."""
    nc = st.g[G_NC]
    c = out.cmds[nc]
    o = st.o
    c.kind = kind
    c.side = o[slot, O_SIDE]
    c.order_type = LIMIT
    c.tif = o[slot, O_TIFK]
    c.stp = 0
    c.producer = st.g[G_PRODUCER]
    c.symbol = o[slot, O_SYM]
    c.account = st.uacct[o[slot, O_USER]]
    c.client_id = np.uint64(_key(o[slot, O_USER], o[slot, O_ORIG]))
    c.price = price_ticks
    c.qty = lots
    pseq = st.g[G_NEXT_PSEQ]
    st.g[G_NEXT_PSEQ] = pseq + 1
    c.pseq = pseq
    c.sent_ns = st.g[G_NOW]
    c.seq = 0
    c.engine_ns = 0
    st.g[G_NC] = nc + 1
    return pseq


@njit(cache=True, nogil=True)
def _pend(st, pseq, kind, slot, urn, prev, qty, oside, price):
    i = pseq % len(st.pend)
    pe = st.pend
    pe[i, P_PSEQ] = pseq
    pe[i, P_KIND] = kind
    pe[i, P_SLOT] = slot
    pe[i, P_CID] = _key(st.o[slot, O_USER], st.o[slot, O_ORIG])
    pe[i, P_URN] = urn
    pe[i, P_PREV] = prev
    pe[i, P_QTY] = qty
    pe[i, P_FILLS] = 0
    pe[i, P_OSIDE] = oside
    pe[i, P_PRICE] = price
    return i


# -- inbound ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _price_check(st, sym, price):
    """-> (ticks, 0) or (0, reject code) for an OUCH price on `sym`."""
    tick = st.snum[sym, 0]
    if price <= 0 or price % tick != 0:
        return 0, REJ_INVALID_PRICE
    if price < st.snum[sym, 1] or price > st.snum[sym, 2]:
        return 0, REJ_PRICE_BAND
    return price // tick, 0


@njit(cache=True, nogil=True)
def _qty_check(st, sym, shares):
    lot = st.snum[sym, 3]
    if shares <= 0 or shares % lot != 0 or shares // lot >= 2 ** 31:
        return 0, REJ_INVALID_QUANTITY
    return shares // lot, 0


@njit(cache=True, nogil=True)
def _appendage(buf, p, n):
    """-> (post_only, reject code) from the option fields in buf[p:p+n]."""
    post = False
    end = p + n
    while p < end:
        ln = np.int64(buf[p])
        if ln < 1 or p + 1 + ln > end:
            return False, REJ_UNSUPPORTED_OPTION
        tag = buf[p + 1]
        if tag == OPT_POST_ONLY and ln == 2:
            v = buf[p + 2]
            if v == 80:            # 'P'
                post = True
            elif v != 78:          # 'N'
                return False, REJ_UNSUPPORTED_OPTION
        else:
            return False, REJ_UNSUPPORTED_OPTION
        p += 1 + ln
    return post, 0


@njit(cache=True, nogil=True)
def _enter(st, out, buf, p, n, u):
    urn = u32(buf, p + 1)
    if urn <= st.uhw[u]:
        return                                   # not increasing: ignored (a resend)
    st.uhw[u] = urn
    oside = np.int64(buf[p + 5])
    shares = u32(buf, p + 6)
    skey = u64(buf, p + 10)
    price = np.int64(u64(buf, p + 18))
    tif, disp, capa, iso, cross = buf[p + 26], buf[p + 27], buf[p + 28], buf[p + 29], buf[p + 30]
    code = 0
    sym = -1
    for s in range(len(st.skey)):
        if st.skey[s] == skey:
            sym = s
            break
    if oside == 66:                              # 'B'
        side = BUY
    elif oside == 83 or oside == 84 or oside == 69:   # 'S', 'T' short, 'E' short exempt
        side = SELL
    else:
        side = 0
        code = REJ_INVALID_SIDE
    ticks = lots = 0
    if code == 0 and sym < 0:
        code = REJ_INVALID_SYMBOL
    if code == 0:
        lots, code = _qty_check(st, sym, shares)
    if code == 0:
        ticks, code = _price_check(st, sym, price)
    tifk = GTC
    if code == 0:
        if tif == 48:                            # '0' day: rests for the session
            tifk = GTC
        elif tif == 51:                          # '3' immediate or cancel
            tifk = IOC
        else:
            code = REJ_INVALID_TIF
    if code == 0 and not (disp == 89 or disp == 65):    # 'Y' visible, 'A' attributable
        code = REJ_INVALID_DISPLAY
    if code == 0 and iso != 78:
        code = REJ_ISO_NOT_ALLOWED
    if code == 0 and cross != 78:
        code = REJ_INVALID_CROSS
    if code == 0:
        post, code = _appendage(buf, p + 47, n - 47)
        if post:
            if tifk == IOC:
                code = REJ_INVALID_TIF
            tifk = POST_ONLY
    if code == 0 and st.uopen[u] >= st.g[G_MAX_OPEN]:
        code = REJ_OPEN_ORDER_LIMIT
    if code == 0 and st.g[G_FREE_TOP] == 0:
        code = REJ_BOOK_FULL
    if code != 0:
        _out_rejected(st, out, u, urn, code, buf, p + 31)
        return
    top = st.g[G_FREE_TOP] - 1
    st.g[G_FREE_TOP] = top
    slot = st.ofree[top]
    o = st.o
    o[slot, O_USER] = u
    o[slot, O_URN] = urn
    o[slot, O_ORIG] = urn
    o[slot, O_SYM] = sym
    o[slot, O_SIDE] = side
    o[slot, O_OSIDE] = oside
    o[slot, O_TIF] = tif
    o[slot, O_DISP] = disp
    o[slot, O_CAPA] = capa
    o[slot, O_ISO] = iso
    o[slot, O_CROSS] = cross
    o[slot, O_USED] = 1
    o[slot, O_PRICE] = price
    o[slot, O_LEAVES] = shares
    o[slot, O_ORN] = 0
    o[slot, O_TIFK] = tifk
    for i in range(CLORD):
        st.oclord[slot, i] = buf[p + 31 + i]
    st.keys[_key(u, urn)] = slot
    st.uopen[u] += 1
    st.g[G_LIVE] += 1
    pseq = _command(st, out, K_NEW, slot, ticks, lots)
    _pend(st, pseq, PK_ENTER, slot, urn, -1, shares, oside, price)


@njit(cache=True, nogil=True)
def _replace(st, out, buf, p, n, u):
    orig = u32(buf, p + 1)
    urn = u32(buf, p + 5)
    if urn <= st.uhw[u]:
        return
    st.uhw[u] = urn
    shares = u32(buf, p + 9)
    price = np.int64(u64(buf, p + 13))
    tif, disp, iso = buf[p + 21], buf[p + 22], buf[p + 23]
    slot = _slot_of(st, u, orig)
    code = 0
    if slot < 0 or st.o[slot, O_URN] != orig:
        code = REJ_UNKNOWN_ORDER
    sym = st.o[slot, O_SYM] if code == 0 else 0
    lots = ticks = 0
    if code == 0:
        lots, code = _qty_check(st, sym, shares)
    if code == 0:
        ticks, code = _price_check(st, sym, price)
    if code == 0 and tif != st.o[slot, O_TIF]:
        code = REJ_REPLACE_NOT_ALLOWED
    if code == 0 and not (disp == 89 or disp == 65):
        code = REJ_INVALID_DISPLAY
    if code == 0 and iso != 78:
        code = REJ_ISO_NOT_ALLOWED
    if code == 0:
        post, code = _appendage(buf, p + 40, n - 40)
        if code == 0 and post != (st.o[slot, O_TIFK] == POST_ONLY):
            code = REJ_REPLACE_NOT_ALLOWED
    if code != 0:
        _out_rejected(st, out, u, urn, code, buf, p + 24)
        return
    st.keys[_key(u, urn)] = slot                 # later messages may name the new number
    st.o[slot, O_URN] = urn
    st.o[slot, O_DISP] = disp
    pseq = _command(st, out, K_REPLACE, slot, ticks, lots)
    i = _pend(st, pseq, PK_REPLACE, slot, urn, orig, shares, st.o[slot, O_OSIDE], price)
    for k in range(CLORD):
        st.pclord[i, k] = buf[p + 24 + k]


@njit(cache=True, nogil=True)
def _cancel(st, out, buf, p, u, kind):
    """'X' cancel (to a quantity; 0: all) or 'M' modify (side within sells, reduce)."""
    urn = u32(buf, p + 1)
    slot = _slot_of(st, u, urn)
    if kind == PK_MODIFY:
        oside = np.int64(buf[p + 5])
        shares = u32(buf, p + 6)
    else:
        oside = 0
        shares = u32(buf, p + 5)
    if slot < 0 or st.o[slot, O_URN] != urn:
        _out_rejected(st, out, u, urn, REJ_UNKNOWN_ORDER, _BLANK, 0)   # no order, no ClOrdID
        return
    o = st.o
    sym = o[slot, O_SYM]
    if kind == PK_MODIFY:
        sell = oside == 83 or oside == 84 or oside == 69
        if (o[slot, O_SIDE] == BUY) != (oside == 66) or not (oside == 66 or sell):
            _out_rejected(st, out, u, urn, REJ_INVALID_SIDE, st.oclord[slot], 0)
            return
        if shares > o[slot, O_LEAVES] or shares % st.snum[sym, 3] != 0:
            _out_rejected(st, out, u, urn, REJ_REPLACE_NOT_ALLOWED, st.oclord[slot], 0)
            return
        if shares == o[slot, O_LEAVES]:          # only the side's flavour changes
            o[slot, O_OSIDE] = oside
            _out_modified(st, out, slot)
            return
    if kind == PK_CANCEL and shares > 0:
        if shares >= o[slot, O_LEAVES]:
            return                               # nothing to reduce
        if shares % st.snum[sym, 3] != 0:
            _out_rejected(st, out, u, urn, REJ_INVALID_QUANTITY, st.oclord[slot], 0)
            return
        kind = PK_REDUCE
    if kind == PK_CANCEL:
        pseq = _command(st, out, K_CANCEL, slot, o[slot, O_PRICE] // st.snum[sym, 0], 0)
    else:
        pseq = _command(st, out, K_REPLACE, slot, o[slot, O_PRICE] // st.snum[sym, 0],
                        shares // st.snum[sym, 3])
    _pend(st, pseq, kind, slot, urn, -1, shares, oside if kind == PK_MODIFY else o[slot, O_OSIDE],
          o[slot, O_PRICE])


@njit(cache=True, nogil=True)
def _inbound(st, out, buf, p, n, u):
    """One OUCH inbound message buf[p:p+n]; -> 0 or a protocol error."""
    typ = buf[p]
    if typ == 79:                                # 'O' enter order
        if n < 47 or n != 47 + u16(buf, p + 45):
            return E_MSG_LENGTH
        _enter(st, out, buf, p, n, u)
    elif typ == 85:                              # 'U' replace order
        if n < 40 or n != 40 + u16(buf, p + 38):
            return E_MSG_LENGTH
        _replace(st, out, buf, p, n, u)
    elif typ == 88:                              # 'X' cancel order
        if n != 9:
            return E_MSG_LENGTH
        _cancel(st, out, buf, p, u, PK_CANCEL)
    elif typ == 77:                              # 'M' modify order
        if n != 10:
            return E_MSG_LENGTH
        _cancel(st, out, buf, p, u, PK_MODIFY)
    else:
        return E_MSG_TYPE
    return 0


@njit(cache=True, nogil=True)
def _state(ar, keys):
    return State(ar.g, ar.uacct, ar.uhw, ar.uopen, ar.skey, ar.snum, ar.o, ar.oclord, ar.ofree,
                 ar.pend, ar.pclord, keys)


def decode(st: State, out: Out, buf, start: int, end: int, u: int):
    """Frames in buf[start:end] from user u's session -> (position, status); see `_decode`."""
    return _decode(Arrays(*st[:-1]), st.keys, out, buf, start, end, u)


def on_reports(st: State, out: Out, reps, n: int) -> None:
    """Apply REPORT records reps[:n]; each writes at most one outbound frame."""
    _on_reports(Arrays(*st[:-1]), st.keys, out, reps, n)


def cancel_all(st: State, out: Out, u: int) -> int:
    """A CANCEL for every order of user u (its session went away); -> how many."""
    return _cancel_all(Arrays(*st[:-1]), st.keys, out, u)


@njit(cache=True, nogil=True)
def _decode(ar, keys, out, buf, start, end, u):
    """Frames in buf[start:end] from user u's session -> (position, status).

    Stops before a frame it cannot take now (LOGIN, LOGOUT, FULL, an incomplete frame) or
    at a protocol error; everything before the returned position has been applied.
    """
    st = _state(ar, keys)
    pos = start
    room_c = len(out.cmds)
    room_m = len(out.omsg)
    while True:
        if end - pos < HDR:
            return pos, NEED
        ln = u16(buf, pos)
        if ln < 1 or ln > MAX_FRAME:
            return pos, E_LENGTH
        if end - pos < 2 + ln:
            return pos, NEED
        typ = buf[pos + 2]
        if typ == 85:                            # 'U' unsequenced data: one OUCH message
            if st.g[G_NC] >= room_c or st.g[G_NM] >= room_m:
                return pos, FULL
            rc = _inbound(st, out, buf, pos + HDR, ln - 1, u)
            if rc < 0:
                return pos, rc
        elif typ == 82 or typ == 43:             # 'R' client heartbeat, '+' debug
            pass
        elif typ == 76:                          # 'L'
            return pos, LOGIN
        elif typ == 79:                          # 'O'
            return pos, LOGOUT
        else:
            return pos, E_TYPE
        pos += 2 + ln


# -- outbound ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _reason_code(reason):
    if reason == RS_UNKNOWN_SYMBOL:
        return REJ_INVALID_SYMBOL
    if reason == RS_PRICE_BAND:
        return REJ_PRICE_BAND
    if reason == RS_BAD_QTY:
        return REJ_INVALID_QUANTITY
    if reason == RS_UNKNOWN_ORDER:
        return REJ_UNKNOWN_ORDER
    if reason == RS_DUPLICATE_ID:
        return REJ_DUPLICATE
    if reason == RS_BOOK_FULL:
        return REJ_BOOK_FULL
    if reason == RS_POST_ONLY_WOULD_CROSS:
        return REJ_POST_ONLY_WOULD_CROSS
    if reason == RS_SELF_TRADE:
        return REJ_SELF_TRADE
    return REJ_OTHER


@njit(cache=True, nogil=True)
def _on_report(st, out, r):
    pe = st.pend
    i = -1
    if r.pseq > 0:
        i = np.int64(r.pseq) % len(pe)
        if pe[i, P_PSEQ] != np.int64(r.pseq):
            return                               # not a command of this gateway state
        slot = pe[i, P_SLOT]
        if st.o[slot, O_USED] == 0 or _key(st.o[slot, O_USER], st.o[slot, O_ORIG]) != pe[i, P_CID]:
            slot = -1                            # the order finished before this answer
        kind = pe[i, P_KIND]
    else:
        cid = np.int64(r.client_id)
        slot = st.keys[cid] if cid in st.keys else -1
        kind = 0
    if slot < 0:
        return
    o = st.o
    sym = o[slot, O_SYM]
    tick = st.snum[sym, 0]
    lot = st.snum[sym, 3]
    rk = r.kind
    if rk == R_ACK:
        o[slot, O_ORN] = np.int64(r.cmd_seq)
        _out_order(st, out, slot, 65, -1)
    elif rk == R_FILL:
        if r.liquidity == MAKER:
            k = np.int64(r.sent_ns)
            liq = 65                             # 'A' added liquidity
        else:
            pe[i, P_FILLS] += 1
            k = pe[i, P_FILLS]
            liq = 82                             # 'R' removed liquidity
        o[slot, O_LEAVES] = np.int64(r.leaves) * lot
        _out_executed(st, out, slot, np.int64(r.qty) * lot, np.int64(r.price) * tick, liq,
                      (np.int64(r.cmd_seq) << 20) | k)
        if r.leaves == 0:
            _free(st, slot)
    elif rk == R_CANCELED or rk == R_EXPIRED:
        if rk == R_EXPIRED:
            reason = 73                          # 'I' immediate or cancel
        elif r.reason == RS_SELF_TRADE:
            reason = 81                          # 'Q' self-match prevention
        else:
            reason = 85                          # 'U' user requested
        _out_canceled(st, out, slot, np.int64(r.qty) * lot, reason)
        _free(st, slot)
    elif rk == R_REPLACED:
        new = np.int64(r.qty) * lot
        dec = o[slot, O_LEAVES] - new
        o[slot, O_LEAVES] = new
        if kind == PK_REPLACE:
            old = _key(o[slot, O_USER], pe[i, P_PREV])
            if pe[i, P_PREV] != o[slot, O_ORIG] and old in st.keys:
                del st.keys[old]
            o[slot, O_PRICE] = np.int64(r.price) * tick
            o[slot, O_ORN] = np.int64(r.cmd_seq)
            for k in range(CLORD):
                st.oclord[slot, k] = st.pclord[i, k]
            _out_order(st, out, slot, 85, pe[i, P_PREV])
        elif kind == PK_MODIFY:
            o[slot, O_OSIDE] = pe[i, P_OSIDE]
            _out_modified(st, out, slot)
        else:                                    # a reduce, or self-trade prevention's decrement
            _out_canceled(st, out, slot, dec, 81 if r.reason == RS_SELF_TRADE else 85)
    elif rk == R_REJECTED:
        code = _reason_code(r.reason)
        if kind == PK_ENTER:
            _out_rejected(st, out, o[slot, O_USER], o[slot, O_URN], code, st.oclord[slot], 0)
            _free(st, slot)
        elif kind == PK_REPLACE:
            u = o[slot, O_USER]
            _out_rejected(st, out, u, pe[i, P_URN], code, st.pclord[i], 0)
            new = _key(u, pe[i, P_URN])
            if new in st.keys:
                del st.keys[new]
            if o[slot, O_URN] == pe[i, P_URN]:
                o[slot, O_URN] = pe[i, P_PREV]
        elif kind != PK_DISCONNECT and r.reason != RS_UNKNOWN_ORDER:
            _out_rejected(st, out, o[slot, O_USER], pe[i, P_URN], code, st.oclord[slot], 0)
        # an unknown-order answer to a cancel or modify: the order finished first, and
        # its Executed or Canceled already told the user


@njit(cache=True, nogil=True)
def _on_reports(ar, keys, out, reps, n):
    st = _state(ar, keys)
    for j in range(n):
        _on_report(st, out, reps[j])


@njit(cache=True, nogil=True)
def _cancel_all(ar, keys, out, u):
    st = _state(ar, keys)
    k = 0
    o = st.o
    for slot in range(len(o)):
        if o[slot, O_USED] and o[slot, O_USER] == u:
            sym = o[slot, O_SYM]
            pseq = _command(st, out, K_CANCEL, slot, o[slot, O_PRICE] // st.snum[sym, 0], 0)
            _pend(st, pseq, PK_DISCONNECT, slot, o[slot, O_URN], -1, 0, o[slot, O_OSIDE], o[slot, O_PRICE])
            k += 1
    return k


@njit(cache=True, nogil=True)
def pack_by_user(out, nm, dst, ubytes, ucount, mlen):
    """The first nm frames of `out`, regrouped by user (each user's in order) into dst.

    -> ubytes[u] (bytes), ucount[u] (frames) per user; mlen: frame sizes in dst's order.
    """
    ubytes[:] = 0
    ucount[:] = 0
    om = out.omsg
    for j in range(nm):
        ubytes[om[j, 0]] += om[j, 2]
        ucount[om[j, 0]] += 1
    nu = len(ubytes)
    bpos = np.zeros(nu, np.int64)
    mpos = np.zeros(nu, np.int64)
    b = 0
    m = 0
    for u in range(nu):
        bpos[u] = b
        mpos[u] = m
        b += ubytes[u]
        m += ucount[u]
    for j in range(nm):
        u = om[j, 0]
        off = om[j, 1]
        ln = om[j, 2]
        dst[bpos[u]:bpos[u] + ln] = out.obuf[off:off + ln]
        bpos[u] += ln
        mlen[mpos[u]] = ln
        mpos[u] += 1


@njit(cache=True, nogil=True)
def frame_offsets(buf, n):
    """Start offsets of the SoupBinTCP packets in buf[:n] (a user's stream file)."""
    out = np.empty(max(n // HDR, 1), np.int64)
    k = 0
    p = 0
    while p + 2 <= n:
        out[k] = p
        k += 1
        p += 2 + ((np.int64(buf[p]) << 8) | np.int64(buf[p + 1]))
    return out[:k]


def warm() -> None:
    """Compile or load every kernel on scratch state."""
    st = new_state([1], np.array([int.from_bytes(b"WARM    ", "big")], np.uint64),
                   np.array([[100, 100, 10_000, 1]], np.int64), producer=1, capacity=4, max_open=4, inflight=8)
    out = new_out(8, 8)
    buf = np.zeros(64, np.uint8)
    decode(st, out, buf, 0, 0, 0)
    from shmex.schema import reports

    on_reports(st, out, reports(1), 0)
    cancel_all(st, out, 0)
    pack_by_user(out, 0, np.zeros(8, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(8, np.int64))
    frame_offsets(buf, 0)

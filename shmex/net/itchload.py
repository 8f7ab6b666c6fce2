"""A Nasdaq TotalView-ITCH 5.0 day as load: its messages -> the commands that replay it.

The file is read in chunks (gzip or plain), each message preceded by 2 bytes: its length,
or zero as in Nasdaq's sample files, where the length follows from the type (`itch.SIZES`).
Two passes: `scan` learns the symbols (``R`` Stock Directory) and, per symbol, the price
range and the largest tick that puts every price on-tick (their gcd); `translate` writes
the commands, in the file's order, one producer's:

- ``A`` / ``F`` Add Order: a GTC limit order, client id = the order reference number;
- ``E`` / ``C`` Executed: an IOC limit order on the other side at the resting order's
  price for the executed shares, so that shmex's own matcher has to make that trade; each
  is listed (`EXEC`) with the order Nasdaq executed, to be checked after the run;
- ``X`` Cancel (a partial reduction): a replace to the smaller size at the same price,
  which keeps time priority in shmex as in ITCH;
- ``D`` Delete: a cancel;
- ``U`` Replace (always loses priority in ITCH): a replace where shmex's loses priority
  too (a new price or more shares; the order keeps its client id); at the same price with
  no more shares shmex's replace would keep priority, so it is a cancel and a new order
  with the new reference.

Messages about orders the file never added (a sample cut from a day) and messages that
do not change the displayed book (``P`` non-displayed trades, ``Q`` crosses, ``B``, ...)
are counted, not sent. The translator keeps the book the file implies (an `itch.Book`,
ITCH units) and its live orders' client ids: what shmex's book must equal at the end.
A command's ``sent_ns`` is its message's time since the file's first message, divided by
the speed factor (integers: ``* den // num``); the producer adds its start time.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from shmex.errors import UsageError
from shmex.net import itch
from shmex.net.bigendian import put, u16, u32, u64
from shmex.schema import BUY, GTC, IOC, K_CANCEL, K_NEW, K_REPLACE, LIMIT, SELL, commands

CHUNK = 64 << 20
IOC_BASE = 1 << 62          # client ids of the IOC orders that replay executions: IOC_BASE + k
NLOC = 1 << 16              # stock locate codes are u16

EXEC = np.dtype([("ioc_cid", "<u8"), ("maker_cid", "<u8"), ("qty", "<i8"), ("symbol", "<i4"),
                 ("match", "<u8")])

SIZE_OF = np.zeros(256, np.int64)
for _t, _n in itch.SIZES.items():
    SIZE_OF[_t[0]] = _n

T_R, T_P = ord("R"), ord("P")
# scan cells (per locate): messages with a price, min price, max price, gcd of the prices
L_PRICED, L_MIN, L_MAX, L_GCD = range(4)
# translate state cells
(G_CMDS, G_EXECS, G_TS0, G_NUM, G_DEN, G_NEXT_IOC, G_ADDS, G_EXECUTED, G_REDUCED, G_DELETED,
 G_REPLACED, G_REPLACE_NEW, G_UNKNOWN, G_OTHER, G_OUTSIDE, G_FULL, G_BIG) = range(17)
STATE_CELLS = 17


def chunks(path: str, size: int = CHUNK):
    """The file's bytes in chunks (a gzip file is decompressed)."""
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        f = gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as e:
        raise UsageError(f"--itch {path}: {e.strerror}") from None
    with f:
        while True:
            try:
                b = f.read(size)
            except (OSError, EOFError) as e:
                raise UsageError(f"--itch {path}: {e}") from None
            if not b:
                return
            yield b


@njit(cache=True, nogil=True)
def frame(buf, hi):
    """Give every complete message of buf[:hi] its length (a zero one from its type);
    -> (end of the last complete message, offset of a bad message or -1)."""
    p = 0
    while p + 3 <= hi:
        n = SIZE_OF[buf[p + 2]]
        ln = u16(buf, p)
        if n == 0 or (ln != 0 and ln != n):
            return p, p
        if p + 2 + n > hi:
            break
        put(buf, p, n, 2)
        p += 2 + n
    return p, -1


@njit(cache=True, nogil=True)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@njit(cache=True, nogil=True)
def _scan(buf, hi, loc, names, first_ts):
    """Pass 1 over framed messages: stock directory names, per-locate price statistics,
    the first timestamp; -> messages seen."""
    p = 0
    n = 0
    while p + 2 <= hi:
        m = p + 2
        p = m + u16(buf, p)
        n += 1
        t = buf[m]
        if first_ts[0] < 0:
            first_ts[0] = (u16(buf, m + 5) << 32) | u32(buf, m + 7)
        k = u16(buf, m + 1)
        if t == T_R:
            for j in range(8):
                names[k, j] = buf[m + 11 + j]
            continue
        if t == itch.T_A or t == itch.T_F:
            px = u32(buf, m + 32)
        elif t == itch.T_U:
            px = u32(buf, m + 31)
        else:
            continue
        loc[k, L_PRICED] += 1
        if loc[k, L_PRICED] == 1:
            loc[k, L_MIN] = px
            loc[k, L_MAX] = px
        else:
            loc[k, L_MIN] = min(loc[k, L_MIN], px)
            loc[k, L_MAX] = max(loc[k, L_MAX], px)
        loc[k, L_GCD] = _gcd(loc[k, L_GCD], px)
    return n


@njit(cache=True, nogil=True, inline="always")
def _cmd(out, g, kind, side, tif, sym, cid, price, qty, ts):
    c = out[g[G_CMDS]]
    g[G_CMDS] += 1
    c.kind = kind
    c.side = side
    c.order_type = LIMIT if kind != K_CANCEL else 0
    c.tif = tif
    c.stp = 0
    c.verdict = 0
    c.producer = 0
    c.symbol = sym
    c.account = 0
    c.client_id = cid
    c.price = price
    c.qty = qty
    c.pseq = 0
    c.sent_ns = (ts - g[G_TS0]) * g[G_DEN] // g[G_NUM]
    c.seq = 0
    c.engine_ns = 0


@njit(cache=True, nogil=True)
def _translate(buf, hi, sym_of, tick, bg, ids, bsym, bside, bprice, bshares, free, ocid, g, out, ex):
    """Pass 2 over framed messages: commands into out (from g[G_CMDS]), executions into ex
    (from g[G_EXECS]), the implied book updated. Stops at a book that is full (g[G_FULL])
    or a size that does not fit a command's i4 (g[G_BIG]); -> end offset."""
    p = 0
    while p + 2 <= hi:
        m = p + 2
        ln = u16(buf, p)
        t = buf[m]
        if t != itch.T_A and t != itch.T_F and t != itch.T_E and t != itch.T_C and t != itch.T_X \
                and t != itch.T_D and t != itch.T_U:
            g[G_OTHER] += 1
            p = m + ln
            continue
        s = sym_of[u16(buf, m + 1)]
        if s < 0:
            g[G_OUTSIDE] += 1
            p = m + ln
            continue
        ts = (u16(buf, m + 5) << 32) | u32(buf, m + 7)
        ref = np.int64(u64(buf, m + 11))
        tk = tick[s]
        if t == itch.T_A or t == itch.T_F:
            shares = u32(buf, m + 20)
            if bg[itch.B_FREE_TOP] == 0:
                g[G_FULL] = 1
                return p
            if shares > 0x7FFFFFFF:
                g[G_BIG] = ref
                return p
            code = buf[m + 19]
            px = u32(buf, m + 32)
            itch._book_add(bg, ids, bsym, bside, bprice, bshares, free, ref, s, code, px, shares)
            ocid[ids[ref]] = ref
            _cmd(out, g, K_NEW, BUY if code == 66 else SELL, GTC, s, ref, px // tk, shares, ts)
            g[G_ADDS] += 1
            p = m + ln
            continue
        k = itch._find(ids, ref)
        if k < 0:
            g[G_UNKNOWN] += 1
            p = m + ln
            continue
        side = BUY if bside[k] == 66 else SELL
        if t == itch.T_E or t == itch.T_C:
            shares = u32(buf, m + 19)
            cid = IOC_BASE + g[G_NEXT_IOC]
            g[G_NEXT_IOC] += 1
            _cmd(out, g, K_NEW, SELL if side == BUY else BUY, IOC, s, cid, bprice[k] // tk, shares, ts)
            e = ex[g[G_EXECS]]
            g[G_EXECS] += 1
            e.ioc_cid = cid
            e.maker_cid = ocid[k]
            e.qty = shares
            e.symbol = s
            e.match = u64(buf, m + 23)
            g[G_EXECUTED] += 1
            bshares[k] -= shares
            if bshares[k] <= 0:
                itch._book_del(bg, ids, free, ref, k)
        elif t == itch.T_X:
            left = bshares[k] - u32(buf, m + 19)
            if left > 0:
                _cmd(out, g, K_REPLACE, 0, 0, s, ocid[k], bprice[k] // tk, left, ts)
                bshares[k] = left
            else:
                _cmd(out, g, K_CANCEL, 0, 0, s, ocid[k], 0, 0, ts)
                itch._book_del(bg, ids, free, ref, k)
            g[G_REDUCED] += 1
        elif t == itch.T_D:
            _cmd(out, g, K_CANCEL, 0, 0, s, ocid[k], 0, 0, ts)
            itch._book_del(bg, ids, free, ref, k)
            g[G_DELETED] += 1
        else:   # U
            new = np.int64(u64(buf, m + 19))
            shares = u32(buf, m + 27)
            px = u32(buf, m + 31)
            if shares > 0x7FFFFFFF:
                g[G_BIG] = new
                return p
            code = bside[k]
            cid = ocid[k]
            if px != bprice[k] or shares > bshares[k]:
                _cmd(out, g, K_REPLACE, 0, 0, s, cid, px // tk, shares, ts)
                g[G_REPLACED] += 1
            else:
                _cmd(out, g, K_CANCEL, 0, 0, s, cid, 0, 0, ts)
                _cmd(out, g, K_NEW, side, GTC, s, new, px // tk, shares, ts)
                cid = new
                g[G_REPLACE_NEW] += 1
            itch._book_del(bg, ids, free, ref, k)
            itch._book_add(bg, ids, bsym, bside, bprice, bshares, free, new, s, code, px, shares)
            ocid[ids[new]] = cid
        p = m + ln
    return p


@dataclass
class Symbol:
    locate: int
    name: str
    tick: int           # ITCH price units (1/10000) per tick: the gcd of the file's prices
    lo: int             # the file's lowest and highest price (ITCH units)
    hi: int
    orders: int         # messages with a price (adds, replaces)


@dataclass
class Scan:
    path: str
    messages: int
    first_ts: int
    symbols: list[Symbol] = field(default_factory=list)
    listed: int = 0     # symbols in the file's stock directory


def _framed_chunks(path: str):
    """(framed bytes, offset in the file) of complete messages, chunk by chunk."""
    carry = b""
    offset = 0
    for raw in chunks(path):
        buf = np.frombuffer(carry + raw, np.uint8).copy()
        end, bad = frame(buf, len(buf))
        if bad >= 0:
            typ = chr(buf[bad + 2]) if bad + 2 < len(buf) else "?"
            raise UsageError(f"--itch {path}: offset {offset + bad}: message type {typ!r} with length "
                             f"{int(buf[bad]) << 8 | int(buf[bad + 1])} is not ITCH 5.0")
        yield buf[:end], offset
        offset += end
        carry = bytes(buf[end:])
    if carry:
        raise UsageError(f"--itch {path}: offset {offset}: the file ends inside a message "
                         f"({len(carry)} bytes left)")


def scan(path: str, only: tuple[str, ...] = ()) -> Scan:
    """Pass 1: the file's symbols (those in `only`, if given, in the stock directory's
    order) with their ticks and price ranges."""
    loc = np.zeros((NLOC, 4), np.int64)
    names = np.zeros((NLOC, 8), np.uint8)
    first = np.full(1, -1, np.int64)
    n = 0
    for buf, _ in _framed_chunks(path):
        n += _scan(buf, len(buf), loc, names, first)
    if n == 0:
        raise UsageError(f"--itch {path}: no messages")
    out = Scan(path, n, int(first[0]))
    listed = [k for k in range(NLOC) if names[k].any()]
    out.listed = len(listed)
    by_name = {bytes(names[k]).decode("ascii", "replace").rstrip(): k for k in listed}
    missing = [s for s in only if s not in by_name]
    if missing:
        raise UsageError(f"--itch-symbols: {', '.join(missing)} not in {path}'s stock directory "
                         f"({len(by_name)} symbols)")
    for name, k in by_name.items():
        if only and name not in only:
            continue
        if not loc[k, L_PRICED] or loc[k, L_MIN] <= 0:
            continue                # listed, never quoted (or at price 0): no band to give it
        out.symbols.append(Symbol(k, name, int(loc[k, L_GCD]), int(loc[k, L_MIN]), int(loc[k, L_MAX]),
                                  int(loc[k, L_PRICED])))
    if not out.symbols:
        raise UsageError(f"--itch {path}: no symbol with orders" + (" among --itch-symbols" if only else ""))
    return out


@dataclass
class Load:
    """What `translate` made: the counts, the implied book and its live orders' client ids."""
    scan: Scan
    commands: int
    executions: int
    counts: dict
    book: itch.Book
    cids: np.ndarray        # client id of the order in each implied-book slot


def translate(sc: Scan, speed: float | None, write_commands, write_executions, *,
              capacity: int = 1 << 22, progress=None) -> Load:
    """Pass 2: the commands (`write_commands(array)` per chunk) and executions
    (`write_executions(array)`) of the scanned file's symbols, paced by `speed` (None: no
    pacing, every sent_ns 0)."""
    sym_of = np.full(NLOC, -1, np.int64)
    tick = np.ones(len(sc.symbols), np.int64)
    for i, s in enumerate(sc.symbols):
        sym_of[s.locate] = i
        tick[i] = s.tick
    bound = sum(s.orders for s in sc.symbols)
    book = itch.new_book(max(1, min(capacity, bound)))
    ocid = np.zeros(len(book.sym), np.uint64)
    g = np.zeros(STATE_CELLS, np.int64)
    g[G_TS0] = sc.first_ts
    if speed is None:
        g[G_NUM], g[G_DEN] = 1, 0
    else:
        num = int(round(speed * 1000))      # thousandths: (ts - ts0) * 1000 fits an int64
        if num <= 0:
            raise UsageError(f"--itch-speed {speed}: must be >= 0.001")
        g[G_NUM], g[G_DEN] = num, 1000
    done = 0
    for buf, offset in _framed_chunks(sc.path):
        cap = len(buf) // 13 + 1                    # a message is 13 framed bytes at least
        out = commands(2 * cap)                     # a replace may be 2 commands
        ex = np.zeros(cap, EXEC)
        g[G_CMDS] = g[G_EXECS] = 0
        end = _translate(buf, len(buf), sym_of, tick, *book, ocid, g, out, ex)
        if g[G_FULL]:
            raise UsageError(f"--itch {sc.path}: offset {offset + end}: more than {len(book.sym):,} "
                             f"live orders (pick fewer symbols with --itch-symbols)")
        if g[G_BIG]:
            raise UsageError(f"--itch {sc.path}: offset {offset + end}: order {int(g[G_BIG])} has more "
                             f"than 2**31-1 shares")
        write_commands(out[:g[G_CMDS]])
        write_executions(ex[:g[G_EXECS]])
        done += int(g[G_CMDS])
        if progress is not None:
            progress(offset + len(buf), done)
    counts = {"adds": int(g[G_ADDS]), "executions": int(g[G_EXECUTED]), "reductions": int(g[G_REDUCED]),
              "deletes": int(g[G_DELETED]), "replaces": int(g[G_REPLACED]),
              "replaces_as_cancel_new": int(g[G_REPLACE_NEW]),
              "skipped_unknown_order": int(g[G_UNKNOWN]), "skipped_not_book": int(g[G_OTHER]),
              "skipped_other_symbols": int(g[G_OUTSIDE])}
    return Load(sc, done, counts["executions"], counts, book, ocid)


def band(symbols: list[Symbol]) -> tuple[int, int]:
    """The book's price band in ticks: every symbol's range inside it."""
    return min(s.lo // s.tick for s in symbols), max(s.hi // s.tick for s in symbols)


def symbols_text(symbols: list[Symbol]) -> str:
    """The symbols file (`instruments`) of a scanned day: its ticks and price ranges, lot 1."""
    def dollars(units: int) -> str:
        return f"{units // 10_000}.{units % 10_000:04d}"

    rows = ["# name, tick, price_lo, price_hi, lot: from the ITCH file's own prices"]
    rows += [f"{s.name}, {dollars(s.tick)}, {dollars(s.lo)}, {dollars(s.hi)}, 1" for s in symbols]
    return "\n".join(rows) + "\n"


def ladder_bytes(symbols: list[Symbol]) -> int:
    """What the book's price ladder of these symbols costs (two sides, ~24 bytes a tick)."""
    lo, hi = band(symbols)
    return 2 * len(symbols) * (hi - lo + 1) * 24


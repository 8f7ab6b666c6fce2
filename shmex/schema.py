"""The records shmex moves: one definition used by rings, the WAL, snapshots and frames.

Every record is a 64-byte (one cache line) little-endian numpy structured dtype with
explicit offsets. Nothing else in the project describes these bytes; a test pins the
exact ``descr`` so that a layout change is a deliberate act that bumps SCHEMA_VERSION.

Prices are integer ticks, sizes integer lots, times integer nanoseconds. No floats.

COMMAND (producer -> matcher -> journal)::

     0      1     2        3    4    5        6         8        12        16
    +------+-----+--------+----+----+--------+---------+--------+---------+
    | kind | side| ord_typ| tif| stp| verdict| producer| symbol | account |
    +------+-----+--------+----+----+--------+---------+--------+---------+
    16          24      28     32       40        48     56          64
    +-----------+-------+------+--------+---------+------+-----------+
    | client_id | price | qty  | pseq   | sent_ns | seq  | engine_ns |
    +-----------+-------+------+--------+---------+------+-----------+

``pseq`` is the producer's own sequence number: 1, 2, ... per input ring, the record's
place in the ring. ``seq`` and ``engine_ns`` are stamped by the matcher, the sequencer.
A producer writes its own records, so the matcher's merge step trusts none of its
identity fields: it stamps ``producer`` from the ring it read, journals the ring place as
``pseq`` (a record whose pseq is not its place is rejected BAD_PSEQ), gives ``account``
0 the slot's account (another one is rejected WRONG_ACCOUNT, unless the slot carries
many accounts), and writes ``verdict``: 0, or the Reason the command is rejected with
before it reaches the book. The journal holds the stamped record, so replay rejects
the same commands, and a restarted matcher's skip counts only engine-written fields.
A CANCEL_ALL (the engine's own, when a client slot's client went away) cancels every
resting order of its producer: a CANCELED report (reason DISCONNECTED) for each, then an
ACK whose qty is how many.

REPORT (matcher -> publisher -> producer)::

     0      1       2     3     4         6                8        12
    +------+-------+-----+-----+---------+----------------+--------+-------+
    | kind | reason| side| liq | producer| contra_producer| symbol | price |
    +------+-------+-----+-----+---------+----------------+--------+-------+
    16    20       24          32                 40        48     56        64
    +-----+--------+-----------+------------------+---------+------+---------+
    | qty | leaves | client_id | contra_client_id | cmd_seq | pseq | sent_ns |
    +-----+--------+-----------+------------------+---------+------+---------+

``pseq`` and ``sent_ns`` echo the command on reports about the order the command
names (its ACK, its own fills, its EXPIRED...). ``pseq`` is 0 on reports about other
orders (a maker's fill, a resting order cancelled by self-trade prevention); so is
``sent_ns``, except on a maker's fill, where it is the fill's 1-based index within the
command: ``(cmd_seq, index)`` names a trade, the same on its taker's and maker's reports.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

import numpy as np

SCHEMA_VERSION = 2
RECORD_BYTES = 64


def record(*fields: tuple[str, str, int]) -> np.dtype:
    """A little-endian structured dtype from (name, format, offset), padded to 64 bytes."""
    names = [f[0] for f in fields]
    formats = ["<" + f[1] if f[1][0] not in "<>|" else f[1] for f in fields]
    offsets = [f[2] for f in fields]
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                   "itemsize": RECORD_BYTES}, align=False)
    end = max(o + np.dtype(f).itemsize for o, f in zip(offsets, formats))
    assert end <= RECORD_BYTES, f"record overruns {RECORD_BYTES} bytes: ends at {end}"
    return dt


class Kind(IntEnum):
    NEW = 1
    CANCEL = 2
    REPLACE = 3
    CANCEL_ALL = 4      # every resting order of the record's producer (cancel-on-disconnect)


class Side(IntEnum):
    BUY = 1
    SELL = 2


class OrderType(IntEnum):
    LIMIT = 1
    MARKET = 2


class Tif(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    POST_ONLY = 4


class Stp(IntEnum):
    NONE = 0
    CANCEL_NEWEST = 1
    CANCEL_OLDEST = 2
    CANCEL_BOTH = 3
    DECREMENT = 4


class ReportKind(IntEnum):
    ACK = 1
    FILL = 2
    CANCELED = 3
    REPLACED = 4
    REJECTED = 5
    EXPIRED = 6


class Liquidity(IntEnum):
    NONE = 0
    MAKER = 1
    TAKER = 2


class Reason(IntEnum):
    NONE = 0
    UNKNOWN_ORDER = 1
    DUPLICATE_ID = 2
    BAD_QTY = 3
    PRICE_BAND = 4
    UNKNOWN_SYMBOL = 5
    BAD_FIELD = 6
    BOOK_FULL = 7
    POST_ONLY_WOULD_CROSS = 8
    SELF_TRADE = 9
    BAD_PSEQ = 10          # the record's pseq is not its place in its ring
    WRONG_ACCOUNT = 11     # the command's account is not its slot's
    TOO_MANY_ORDERS = 12   # its producer has max_open_orders resting already
    DISCONNECTED = 13      # cancelled because its client went away (CANCEL_ALL)


# Module-level int constants for numba kernels (globals are folded as constants).
K_NEW, K_CANCEL, K_REPLACE, K_CANCEL_ALL = map(int, Kind)
BUY, SELL = map(int, Side)
LIMIT, MARKET = map(int, OrderType)
GTC, IOC, FOK, POST_ONLY = map(int, Tif)
STP_NONE, STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_CANCEL_BOTH, STP_DECREMENT = map(int, Stp)
R_ACK, R_FILL, R_CANCELED, R_REPLACED, R_REJECTED, R_EXPIRED = map(int, ReportKind)
LIQ_NONE, MAKER, TAKER = map(int, Liquidity)
(RS_NONE, RS_UNKNOWN_ORDER, RS_DUPLICATE_ID, RS_BAD_QTY, RS_PRICE_BAND, RS_UNKNOWN_SYMBOL,
 RS_BAD_FIELD, RS_BOOK_FULL, RS_POST_ONLY_WOULD_CROSS, RS_SELF_TRADE, RS_BAD_PSEQ,
 RS_WRONG_ACCOUNT, RS_TOO_MANY_ORDERS, RS_DISCONNECTED) = map(int, Reason)

COMMAND = record(
    ("kind", "u1", 0),
    ("side", "u1", 1),
    ("order_type", "u1", 2),
    ("tif", "u1", 3),
    ("stp", "u1", 4),
    ("verdict", "u1", 5),
    ("producer", "u2", 6),
    ("symbol", "u4", 8),
    ("account", "u4", 12),
    ("client_id", "u8", 16),
    ("price", "i4", 24),
    ("qty", "i4", 28),
    ("pseq", "u8", 32),
    ("sent_ns", "i8", 40),
    ("seq", "i8", 48),
    ("engine_ns", "i8", 56),
)

REPORT = record(
    ("kind", "u1", 0),
    ("reason", "u1", 1),
    ("side", "u1", 2),
    ("liquidity", "u1", 3),
    ("producer", "u2", 4),
    ("contra_producer", "u2", 6),
    ("symbol", "u4", 8),
    ("price", "i4", 12),
    ("qty", "i4", 16),
    ("leaves", "i4", 20),
    ("client_id", "u8", 24),
    ("contra_client_id", "u8", 32),
    ("cmd_seq", "i8", 40),
    ("pseq", "u8", 48),
    ("sent_ns", "i8", 56),
)

# Resting orders as `Matcher.resting()` returns them (a view type, never on the wire).
RESTING = np.dtype([("symbol", "<u4"), ("side", "u1"), ("price", "<i4"), ("producer", "<u2"),
                    ("client_id", "<u8"), ("leaves", "<i4"), ("account", "<u4")])

# One level of an L2 book as `Matcher.depth()` returns it.
LEVEL = np.dtype([("price", "<i4"), ("qty", "<i8"), ("orders", "<i4")])

PRICE_MIN = int(np.iinfo(np.int32).min)
PRICE_MAX = int(np.iinfo(np.int32).max)
QTY_MAX = int(np.iinfo(np.int32).max)


def dtype_digest(dt: np.dtype) -> bytes:
    """A 16-byte digest of a dtype's exact layout, for segment and file headers."""
    text = repr((dt.descr, dt.itemsize)).encode()
    return hashlib.blake2b(text, digest_size=16).digest()


for _dt in (COMMAND, REPORT):
    assert _dt.itemsize == RECORD_BYTES, f"record is {_dt.itemsize} bytes, not {RECORD_BYTES}"


def commands(n: int = 0) -> np.ndarray:
    """A zeroed array of n COMMAND records."""
    return np.zeros(n, dtype=COMMAND)


def commands_from(**columns) -> np.ndarray:
    """A COMMAND array from columns: each a sequence (list, numpy array) or a scalar that
    fills the whole column; `order_type` and `tif` not named are LIMIT and GTC (as in
    `Matcher.submit`), other fields not named 0. One numpy assignment per column, no
    Python loop per command::

        commands_from(kind=Kind.NEW, side=sides, price=prices, qty=qtys, client_id=ids)

    Raises UsageError naming the field for an unknown name, a column of another length, a
    value that is not an integer, or one outside the field's range (nothing wraps)."""
    from shmex.errors import UsageError

    unknown = sorted(set(columns) - set(COMMAND.names))
    if unknown:
        raise UsageError(f"commands_from: no field {', '.join(unknown)} (COMMAND has {', '.join(COMMAND.names)})")
    cols = {name: np.asarray(v) for name, v in columns.items()}
    lengths = {name: len(c) for name, c in cols.items() if c.ndim == 1}
    bad = [name for name, c in cols.items() if c.ndim > 1]
    if bad:
        raise UsageError(f"commands_from: {bad[0]} is {cols[bad[0]].ndim}-d, want a sequence or a scalar")
    n = max(lengths.values(), default=1 if cols else 0)
    for name, k in lengths.items():
        if k != n:
            raise UsageError(f"commands_from: {name} has {k} values, others {n}")
    out = np.zeros(n, dtype=COMMAND)
    out["order_type"], out["tif"] = OrderType.LIMIT, Tif.GTC
    for name, c in cols.items():
        if c.size == 0:
            continue
        if c.dtype.kind not in "iub":
            raise UsageError(f"commands_from: {name} holds {c.dtype} values; fields are integers "
                             f"(prices in ticks, quantities in lots)")
        info = np.iinfo(COMMAND[name])
        lo, hi = c.min(), c.max()
        if lo < info.min or hi > info.max:
            v = lo if lo < info.min else hi
            i = int(np.argmax(c == v)) if c.ndim else 0
            raise UsageError(f"commands_from: {name}[{i}] = {int(v)} is outside {COMMAND[name]} "
                             f"[{info.min}, {info.max}]")
        out[name] = c
    return out


def reports(n: int = 0) -> np.ndarray:
    """A zeroed array of n REPORT records."""
    return np.zeros(n, dtype=REPORT)

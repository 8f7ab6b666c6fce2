"""One command from Python at a time: the book behind one array of addresses.

A call of `_kernels._run` from Python unboxes each of the book's arrays, which costs more
than matching one order. `one_command` takes the book as one int64 array holding each
array's address and length (`address_table`, in `FIELDS` order), rebuilds the arrays in
compiled code (no copy: views of the same memory), writes the command's fields into the
caller's one-record array and matches it. The caller keeps the book's arrays alive (the
`Matcher` holds them) and rebuilds the table whenever its book changes.

Fields are checked here against their record types before anything is written: a value
out of range is ST_BAD_FIELD with the field's number, never a wrapped integer.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic

from shmex.matcher import _kernels
from shmex.matcher.book import FIELDS, Book, book_spec

ST_BAD_FIELD = 3                          # beyond _kernels' ST_* codes
ARRAY_TYPES = {name: dt for name, (dt, _) in book_spec(1, 1, 1, 1).items()}   # each book array's dtype

# the command's fields as the caller passes them, with their record ranges
U1, U2, U4 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1
I4_LO, I4_HI = -(1 << 31), (1 << 31) - 1


def address_table(b: Book) -> np.ndarray:
    """[address, length] of each array of `b`, in FIELDS order (the arrays stay owned by b)."""
    t = np.zeros((len(FIELDS), 2), np.int64)
    for k, name in enumerate(FIELDS):
        a = getattr(b, name)
        want = ARRAY_TYPES[name]
        if a.ndim != 1 or not a.flags.c_contiguous or a.dtype != want:
            raise AssertionError(f"Invariant: book array {name} is {a.dtype}{a.shape}, want 1-d {want}")
        t[k] = a.ctypes.data, len(a)
    return t


@intrinsic
def _pointer(typingctx, address):
    """int64 -> void*: the start of an array whose address the table holds."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@njit(cache=True, nogil=True)       # NRT on: carray's views are arrays returned by a function
def one_command(t, ids, one, out, kind, side, order_type, tif, stp, producer, symbol, account, client_id,
                price, qty, engine_ns):
    """Match one command given field by field -> (reports written to out, status). `ids`
    is the book's id table itself (numba builds no view of a record array from an
    address).
    Status: _kernels' ST_DONE / ST_OUT_FULL (nothing done: the caller grows `out` and
    takes the general path), or ST_BAD_FIELD with n = the first bad field's number."""
    bad = 0
    if not 0 <= kind <= U1:
        bad = 1
    elif not 0 <= side <= U1:
        bad = 2
    elif not 0 <= order_type <= U1:
        bad = 3
    elif not 0 <= tif <= U1:
        bad = 4
    elif not 0 <= stp <= U1:
        bad = 5
    elif not 0 <= producer <= U2:
        bad = 6
    elif not 0 <= symbol <= U4:
        bad = 7
    elif not 0 <= account <= U4:
        bad = 8
    elif client_id < 0:
        bad = 9
    elif not I4_LO <= price <= I4_HI:
        bad = 10
    elif not I4_LO <= qty <= I4_HI:
        bad = 11
    if bad:
        return bad, ST_BAD_FIELD
    c = one[0]
    c.kind, c.side, c.order_type, c.tif, c.stp, c.verdict = kind, side, order_type, tif, stp, 0
    c.producer, c.symbol, c.account, c.client_id = producer, symbol, account, client_id
    c.price, c.qty, c.pseq, c.sent_ns, c.seq, c.engine_ns = price, qty, 0, 0, 0, 0
    # the arrays in FIELDS order (views of the caller's memory; numba returns none of them
    # from a function, so they are built here, where they are used): cfg, meta, o_price,
    # o_qty, o_side, o_sym, o_prod, o_cid, o_acct, o_prev, o_next, free, lv_head, lv_tail,
    # lv_qty, lv_cnt, bm, sm, best, cnt, ids, hkey, p_open, o_flags
    i8, u8, i4 = np.int64, np.uint64, np.int32
    b = Book(carray(_pointer(t[0, 0]), t[0, 1], i8), carray(_pointer(t[1, 0]), t[1, 1], i8),
             carray(_pointer(t[2, 0]), t[2, 1], i8), carray(_pointer(t[3, 0]), t[3, 1], i8),
             carray(_pointer(t[4, 0]), t[4, 1], i8), carray(_pointer(t[5, 0]), t[5, 1], i8),
             carray(_pointer(t[6, 0]), t[6, 1], i8), carray(_pointer(t[7, 0]), t[7, 1], u8),
             carray(_pointer(t[8, 0]), t[8, 1], i8), carray(_pointer(t[9, 0]), t[9, 1], i4),
             carray(_pointer(t[10, 0]), t[10, 1], i4), carray(_pointer(t[11, 0]), t[11, 1], i4),
             carray(_pointer(t[12, 0]), t[12, 1], i4), carray(_pointer(t[13, 0]), t[13, 1], i4),
             carray(_pointer(t[14, 0]), t[14, 1], i8), carray(_pointer(t[15, 0]), t[15, 1], i8),
             carray(_pointer(t[16, 0]), t[16, 1], u8), carray(_pointer(t[17, 0]), t[17, 1], u8),
             carray(_pointer(t[18, 0]), t[18, 1], i8), carray(_pointer(t[19, 0]), t[19, 1], i8),
             ids, carray(_pointer(t[21, 0]), t[21, 1], u8),
             carray(_pointer(t[22, 0]), t[22, 1], i4), carray(_pointer(t[23, 0]), t[23, 1], np.uint8))
    i, n, status = _kernels._run(b, one, 0, 1, out, 0, True, engine_ns)
    return n, status


def compile_once(t, ids, one, out) -> None:
    """Compile (or load from the cache) `one_command` for these arrays and int64 fields,
    then no other: an argument of another type is converted or refused, never the reason
    for a second compile (a minute on a cold cache) in the middle of a session."""
    if one_command.signatures:
        return
    i8 = types.int64
    one_command.compile((typeof(t), typeof(ids), typeof(one), typeof(out)) + (i8,) * 12)
    one_command.disable_compile()


FIELD_NAMES = ("", "kind", "side", "order_type", "tif", "stp", "producer", "symbol", "account",
               "client_id", "price", "qty")

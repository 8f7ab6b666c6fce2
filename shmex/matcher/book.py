"""The book's memory: one namedtuple of preallocated numpy arrays, passed to every kernel.

Arena (one row per order slot, `capacity` rows)::

    o_price  o_qty  o_side  o_sym  o_prod  o_cid  o_acct  o_prev  o_next  o_flags
    (ticks)  (leaves, lots)                                (int32 links of the level FIFO)

    o_flags bit F_POST_ONLY: the order entered post-only, so a replace that sends it
    through the book again may not take liquidity either.

    free[0:free_top] is a stack of unused slots.

Ladder (one row per (symbol, side, tick); book index bk = symbol * 2 + side_index)::

    lv_head / lv_tail  first and last order of the level FIFO (-1 when empty)
    lv_qty / lv_cnt    total leaves and order count of the level
    bm[bk * nwords + w]   bit t & 63 of word t >> 6: level t is non-empty
    sm[bk * nsum + s]     bit w & 63 of word w >> 6: bm word w is non-zero
    best[bk]              best tick of the side (-1 when the side is empty)
    cnt[bk]               resting orders on the side

Id table (open addressing, linear probing, backward-shift deletion, size a power of two
at least twice the capacity and 32); one 16-byte entry, so a probe costs one cache line::

    ids[h] = (cid u8, prod i4 (-1: empty), slot i4)

The home of (prod, cid) keeps runs of 16 consecutive client ids of one producer
together: users number orders 1, 2, 3, ..., so the live orders near the touch share
a few hot cache lines instead of one cold line each. Which run goes where is
multiply-shift universal hashing of (cid >> 4, prod): the top bits of
``(cid >> 4) * hkey[0] + prod * hkey[1]`` (mod 2**64), two odd words derived from a
64-bit key (hkey[2]) drawn when the book is made. For ids chosen without the key, two
runs share a home with probability about 2 / (table size / 16), so nobody who reads
this source can compute client ids that pile up in one probe run (with a fixed hash,
100K such ids cost ~5e9 probes). The key is book state: snapshots keep it and
`Matcher.config` names it, so replay rebuilds the same table.

Per producer id (all 65536)::

    p_open[prod]   its resting orders (capped by cfg[C_OPEN_CAP]: TOO_MANY_ORDERS)

`cfg` holds the fixed configuration, `meta` the counters that change.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

# cfg indices
C_SYMBOLS, C_LO, C_HI, C_NTICKS, C_CAP, C_NWORDS, C_NSUM, C_HMASK, C_OPEN_CAP, C_HSHIFT = range(10)
CFG_CELLS = 10
# meta indices
M_LAST_SEQ, M_FREE_TOP, M_LIVE = range(3)
# o_flags bits
F_POST_ONLY = 1

FIELDS = ("cfg", "meta",
          "o_price", "o_qty", "o_side", "o_sym", "o_prod", "o_cid", "o_acct", "o_prev", "o_next",
          "free",
          "lv_head", "lv_tail", "lv_qty", "lv_cnt", "bm", "sm", "best", "cnt",
          "ids", "hkey", "p_open", "o_flags")

Book = namedtuple("Book", FIELDS)

IDS = np.dtype([("cid", "<u8"), ("prod", "<i4"), ("slot", "<i4")])

MAX_TICKS = 1 << 24  # 16M ticks per side: the ladder costs ~24 bytes a tick
PRODUCER_IDS = 1 << 16  # producer ids are u2 on the wire


def _sizes(symbols: int, price_lo: int, price_hi: int, capacity: int) -> tuple[int, ...]:
    """(nticks, nwords, nsum, hsize, nbooks, nlv) of a book of this configuration."""
    nticks = price_hi - price_lo + 1
    nwords = (nticks + 63) >> 6
    nsum = (nwords + 63) >> 6
    hsize = 1 << max(5, int(2 * capacity - 1).bit_length())   # >= 32: the hash shift stays < 64
    nbooks = symbols * 2
    return nticks, nwords, nsum, hsize, nbooks, nbooks * nticks


def book_spec(symbols: int, price_lo: int, price_hi: int, capacity: int) -> dict[str, tuple]:
    """{field: (dtype, shape)} of a book of this configuration, allocating nothing."""
    _, nwords, nsum, hsize, nbooks, nlv = _sizes(symbols, price_lo, price_hi, capacity)
    i8, i4 = np.dtype(np.int64), np.dtype(np.int32)
    spec = {"cfg": (i8, (CFG_CELLS,)), "meta": (i8, (3,))}
    spec.update({f: (i8, (capacity,)) for f in ("o_price", "o_qty", "o_side", "o_sym", "o_prod", "o_acct")})
    spec.update(o_cid=(np.dtype(np.uint64), (capacity,)), o_prev=(i4, (capacity,)), o_next=(i4, (capacity,)),
                free=(i4, (capacity,)), lv_head=(i4, (nlv,)), lv_tail=(i4, (nlv,)), lv_qty=(i8, (nlv,)),
                lv_cnt=(i8, (nlv,)), bm=(np.dtype(np.uint64), (nbooks * nwords,)),
                sm=(np.dtype(np.uint64), (nbooks * nsum,)), best=(i8, (nbooks,)), cnt=(i8, (nbooks,)),
                ids=(IDS, (hsize,)), hkey=(np.dtype(np.uint64), (3,)), p_open=(i4, (PRODUCER_IDS,)),
                o_flags=(np.dtype(np.uint8), (capacity,)))
    return spec


def new_book(symbols: int, price_lo: int, price_hi: int, capacity: int, max_open_orders: int,
             hash_key: int) -> Book:
    """Allocate an empty book. Every array is allocated here, once."""
    nticks, nwords, nsum, hsize, nbooks, nlv = _sizes(symbols, price_lo, price_hi, capacity)
    # the hash's top bits pick one of hsize / 16 runs: shift 64 - log2(hsize / 16)
    cfg = np.array([symbols, price_lo, price_hi, nticks, capacity, nwords, nsum, hsize - 1,
                    max_open_orders, 64 - (hsize.bit_length() - 1 - 4)], dtype=np.int64)
    meta = np.zeros(3, dtype=np.int64)
    meta[M_FREE_TOP] = capacity
    return Book(
        cfg=cfg, meta=meta,
        o_price=np.zeros(capacity, np.int64), o_qty=np.zeros(capacity, np.int64),
        o_side=np.zeros(capacity, np.int64), o_sym=np.zeros(capacity, np.int64),
        o_prod=np.zeros(capacity, np.int64), o_cid=np.zeros(capacity, np.uint64),
        o_acct=np.zeros(capacity, np.int64),
        o_prev=np.full(capacity, -1, np.int32), o_next=np.full(capacity, -1, np.int32),
        # Popped from the top: slot 0 first, so a fresh book fills slots in order.
        free=np.arange(capacity - 1, -1, -1, dtype=np.int32),
        lv_head=np.full(nlv, -1, np.int32), lv_tail=np.full(nlv, -1, np.int32),
        lv_qty=np.zeros(nlv, np.int64), lv_cnt=np.zeros(nlv, np.int64),
        bm=np.zeros(nbooks * nwords, np.uint64), sm=np.zeros(nbooks * nsum, np.uint64),
        best=np.full(nbooks, -1, np.int64), cnt=np.zeros(nbooks, np.int64),
        ids=_empty_ids(hsize), hkey=hash_words(hash_key), p_open=np.zeros(PRODUCER_IDS, np.int32),
        o_flags=np.zeros(capacity, np.uint8),
    )


_SPLIT = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


_GOLDEN = 0x9E3779B97F4A7C15


def hash_words(key: int) -> np.ndarray:
    """hkey from one 64-bit key: the id table's two odd multipliers, then the key itself."""
    z = (key + _SPLIT) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    # the cid multiplier: the golden ratio's high half (Fibonacci hashing spreads ids that
    # come in sequence evenly over the table, whatever the key) and the key's low half
    # (what an id chooser cannot know); a fully random multiplier left some keys with
    # sequential ids clustered, tens of probes each
    m0 = (_GOLDEN & 0xFFFFFFFF00000000) | (key & 0xFFFFFFFF) | 1
    return np.array([m0, (z ^ (z >> 31)) | 1, key], dtype=np.uint64)


def _empty_ids(n: int) -> np.ndarray:
    ids = np.zeros(n, dtype=IDS)
    ids["prod"] = -1
    return ids

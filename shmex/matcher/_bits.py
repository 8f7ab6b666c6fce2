"""Bit scans for the price-level bitmaps, with plain-Python twins for NUMBA_DISABLE_JIT.

A book side is a bitmap of non-empty levels (one bit per tick) plus a summary bitmap
(one bit per non-zero word). Finding the next level from tick t costs a masked word
test, then at most one summary-word scan per 4096 ticks.
"""

import numpy as np
from numba import config, njit

if config.DISABLE_JIT:  # pragma: no cover - exercised by the NUMBA_DISABLE_JIT run only
    def trailing_zeros(x):
        x = int(x)
        return (x & -x).bit_length() - 1

    def leading_zeros(x):
        return 64 - int(x).bit_length()
else:
    from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

ONE = np.uint64(1)
ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _mask_from(b):
    """Bits b..63 set (0 <= b <= 63)."""
    return ALL << np.uint64(b)


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _mask_upto(b):
    """Bits 0..b set (0 <= b <= 63)."""
    if b == 63:
        return ALL
    return (ONE << np.uint64(b + 1)) - ONE


@njit(cache=True, nogil=True, _nrt=False)
def _set_bit(bm, sm, wbase, sbase, t):
    w = t >> 6
    was = bm[wbase + w]
    bm[wbase + w] = was | (ONE << np.uint64(t & 63))
    if was == 0:
        sm[sbase + (w >> 6)] |= ONE << np.uint64(w & 63)


@njit(cache=True, nogil=True, _nrt=False)
def _clear_bit(bm, sm, wbase, sbase, t):
    w = t >> 6
    now = bm[wbase + w] & ~(ONE << np.uint64(t & 63))
    bm[wbase + w] = now
    if now == 0:
        sm[sbase + (w >> 6)] &= ~(ONE << np.uint64(w & 63))


@njit(cache=True, nogil=True, _nrt=False)
def _find_up(bm, sm, wbase, sbase, nwords, t):
    """Lowest set tick >= t, or -1."""
    w = t >> 6
    if w >= nwords:
        return -1
    word = bm[wbase + w] & _mask_from(t & 63)
    if word != 0:
        return (w << 6) + trailing_zeros(word)
    w += 1
    if w >= nwords:
        return -1
    s = w >> 6
    sword = sm[sbase + s] & _mask_from(w & 63)
    nsum = (nwords + 63) >> 6
    while sword == 0:
        s += 1
        if s >= nsum:
            return -1
        sword = sm[sbase + s]
    w = (s << 6) + trailing_zeros(sword)
    return (w << 6) + trailing_zeros(bm[wbase + w])


@njit(cache=True, nogil=True, _nrt=False)
def _find_down(bm, sm, wbase, sbase, t):
    """Highest set tick <= t, or -1."""
    if t < 0:
        return -1
    w = t >> 6
    word = bm[wbase + w] & _mask_upto(t & 63)
    if word != 0:
        return (w << 6) + 63 - leading_zeros(word)
    w -= 1
    if w < 0:
        return -1
    s = w >> 6
    sword = sm[sbase + s] & _mask_upto(w & 63)
    while sword == 0:
        s -= 1
        if s < 0:
            return -1
        sword = sm[sbase + s]
    w = (s << 6) + 63 - leading_zeros(sword)
    return (w << 6) + 63 - leading_zeros(bm[wbase + w])

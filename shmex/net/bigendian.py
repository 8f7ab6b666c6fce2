"""Big-endian integers in byte arrays, for the protocol kernels (OUCH, ITCH, MoldUDP64)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def u16(b, p):
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@njit(cache=True, nogil=True, inline="always")
def u32(b, p):
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@njit(cache=True, nogil=True, inline="always")
def u64(b, p):
    v = np.uint64(0)
    for i in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[p + i])
    return v


@njit(cache=True, nogil=True, inline="always")
def put(b, p, v, n):
    """v as n big-endian bytes at b[p]."""
    x = np.uint64(v)
    for i in range(n - 1, -1, -1):
        b[p + i] = np.uint8(x & np.uint64(0xFF))
        x >>= np.uint64(8)

"""CRC32C (Castagnoli): the SSE4.2 ``crc32`` instruction from numba, and a table twin.

``crc_step(crc, word, hw)`` folds one little-endian u64 into a raw (not inverted) CRC
state; a checksum is ``~fold(~0, words)``, the standard CRC32C (init and xor-out
0xFFFFFFFF, reflected polynomial 0x82F63B78).

Two implementations, one answer (the tests compare them):
- ``_step_hw``: ``llvm.x86.sse42.crc32.64.64`` emitted through an llvmlite ``@intrinsic``;
  8 bytes per instruction, the fastest way to checksum 80-byte records.
- ``_step_table``: slicing-by-8 over eight 256-entry tables; the fallback on a CPU
  without SSE4.2 and the plain-Python twin under ``NUMBA_DISABLE_JIT=1`` (an intrinsic
  cannot run in the interpreter).

Kernels take ``hw`` as an argument, not a global: numba's on-disk cache does not key on
globals, so a global switch would silently reuse the other variant. ``HW`` says what this
process can use; the branch is loop-invariant and LLVM unswitches it.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit, types
from numba.core import config as _nbconfig
from numba.extending import intrinsic

_POLY = 0x82F63B78


def _tables() -> np.ndarray:
    t = np.zeros((8, 256), dtype=np.uint64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t[0, i] = c
    for k in range(1, 8):
        for i in range(256):
            prev = int(t[k - 1, i])
            t[k, i] = (prev >> 8) ^ int(t[0, prev & 0xFF])
    return t


_T = _tables()
_M8 = np.uint64(0xFF)
_S = tuple(np.uint64(8 * k) for k in range(8))


@njit(cache=True, nogil=True)
def _step_table(crc, word):
    x = np.uint64(crc) ^ np.uint64(word)
    return (_T[7, x & _M8] ^ _T[6, (x >> _S[1]) & _M8] ^ _T[5, (x >> _S[2]) & _M8]
            ^ _T[4, (x >> _S[3]) & _M8] ^ _T[3, (x >> _S[4]) & _M8]
            ^ _T[2, (x >> _S[5]) & _M8] ^ _T[1, (x >> _S[6]) & _M8] ^ _T[0, x >> _S[7]])


def _host_has_sse42() -> bool:
    import llvmlite.binding as llvm
    feats = llvm.get_host_cpu_features()
    return bool(feats.get("sse4.2", False))


_CAN_HW = (not _nbconfig.DISABLE_JIT) and _host_has_sse42()

if _CAN_HW:
    @intrinsic
    def _step_hw(typingctx, crc, word):
        """One ``crc32q``: raw CRC32C state (u64, low 32 bits used) folded with 8 bytes."""
        def codegen(context, builder, signature, args):
            from llvmlite import ir
            i64 = ir.IntType(64)
            fnty = ir.FunctionType(i64, [i64, i64])
            fn = builder.module.declare_intrinsic("llvm.x86.sse42.crc32.64.64", fnty=fnty)
            return builder.call(fn, [args[0], args[1]])
        return types.uint64(types.uint64, types.uint64), codegen
else:
    _step_hw = _step_table  # no SSE4.2, or the interpreter: the table twin answers the same


# HW: the variant this process uses; SHMEX_CRC=table forces the table (for measuring both).
HW = _CAN_HW and os.environ.get("SHMEX_CRC", "auto") != "table"
_ONES = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def crc_step(crc, word, hw):
    if hw:
        return _step_hw(np.uint64(crc), np.uint64(word))
    return _step_table(crc, word)


@njit(cache=True, nogil=True)
def _crc_bytes(buf, hw):
    """CRC32C of a uint8 array (any length)."""
    crc = _ONES
    n8 = buf.size // 8
    words = buf[: n8 * 8].view(np.uint64)
    for i in range(n8):
        crc = crc_step(crc, words[i], hw)
    for i in range(n8 * 8, buf.size):
        x = (crc ^ np.uint64(buf[i])) & _M8
        crc = (crc >> _S[1]) ^ _T[0, x]
    return crc ^ _ONES


def crc32c(data, hw: bool | None = None) -> int:
    """CRC32C of bytes-like ``data`` (Python boundary; kernels call crc_step directly)."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buf.size % 8:  # the u64 view needs an aligned, whole-word prefix
        buf = buf.copy()
    return int(_crc_bytes(buf, HW if hw is None else hw))

"""System calls from numba code, cacheable: CLOCK_MONOTONIC, sched_yield and sem_post.

The calls are emitted as calls to the libc symbols by name (resolved when the cached
machine code is loaded), so no ctypes pointer is baked in and ``cache=True`` works.
`mono_ns()` reads the same clock as Python's ``time.monotonic_ns()`` (vDSO: no syscall).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from shmex.ring.atomics import load_plain, store_plain
from shmex.ring.layout import L_WAKE

# make sure the JIT can resolve the libc symbols by name
_libc = ctypes.util.find_library("c") or "libc.so.6"
llvm.load_library_permanently(_libc)

_CLOCK_MONOTONIC = 1


@intrinsic
def _clock_mono(typingctx):
    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ts_t = ir.LiteralStructType([i64, i64])
        ts = cgutils.alloca_once(builder, ts_t)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, ts_t.as_pointer()]),
                                            "clock_gettime")
        builder.call(fn, [ir.Constant(i32, _CLOCK_MONOTONIC), ts])
        zero = ir.Constant(i32, 0)
        sec = builder.load(builder.gep(ts, [zero, zero]))
        nsec = builder.load(builder.gep(ts, [zero, ir.Constant(i32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, []), "sched_yield")
        return builder.call(fn, [])

    return types.int32(), codegen


@njit(cache=True, nogil=True, inline="always")
def mono_ns():
    """CLOCK_MONOTONIC in ns (what time.monotonic_ns() returns)."""
    return _clock_mono()


@njit(cache=True, nogil=True, inline="always")
def sched_yield():
    return _sched_yield()


@intrinsic
def _sem_post(typingctx, addr):
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i8p]), "sem_post")
        ptr = builder.inttoptr(context.cast(builder, args[0], signature.args[0], types.int64), i8p)
        return builder.call(fn, [ptr])

    return types.int32(addr), codegen


@njit(cache=True, nogil=True, inline="always")
def sem_post(addr):
    """sem_post() on the process-shared semaphore at address `addr` (a ring's DATA_SEM or
    SPACE_SEM in its mapped segment): wakes a peer blocked in `wait.wait_until`."""
    return _sem_post(addr)


@njit(cache=True, nogil=True, inline="always")
def post_if_woken(ctl, loc, sem_addr, posts_idx):
    """Post the peer's semaphore if our last cursor move found it waiting (a ring kernel
    set L_WAKE), counted in the ring's post counter as `Ring._post_if_woken` does."""
    if loc[L_WAKE]:
        loc[L_WAKE] = 0
        sem_post(sem_addr)
        # ORDER: relaxed: an informational counter with one writer (this side of the ring)
        store_plain(ctl, posts_idx, load_plain(ctl, posts_idx) + 1)

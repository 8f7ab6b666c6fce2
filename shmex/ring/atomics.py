"""Atomic loads, stores, exchange and fences on int64 cells of a numpy array.

The only ``@intrinsic`` code in shmex. Each function emits one LLVM atomic
instruction through llvmlite's IRBuilder, so numba-compiled loops get real
acquire/release (or seq_cst) semantics and the optimiser can neither hoist a load
out of a spin loop nor sink a store past the data it publishes:

===================  ===========================  ===============================
name                 LLVM                         x86-64
===================  ===========================  ===============================
load_plain           load atomic monotonic        mov
load_acquire         load atomic acquire          mov
store_plain          store atomic monotonic       mov
store_release        store atomic release         mov
swap_seq_cst         atomicrmw xchg seq_cst       xchg
fence_seq_cst        fence seq_cst                mfence (or lock or)
cpu_relax            llvm.x86.sse2.pause          pause
===================  ===========================  ===============================

Each has a plain-Python twin (``*_py``). Under ``NUMBA_DISABLE_JIT=1`` the public
names *are* the twins, so kernels run as plain Python (for coverage and debugging).
The twins rely on CPython calling into opaque C for every array access and on the
hardware's ordering (x86-64 TSO orders loads after loads and stores after stores);
`swap_py` is not atomic across processes. Production code runs the intrinsics.
"""

from __future__ import annotations

import os

from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

try:
    from llvmlite import ir
except ImportError as e:  # pragma: no cover - llvmlite ships with numba
    raise ImportError("shmex.ring.atomics needs llvmlite (a numba dependency)") from e

_I64 = ir.IntType(64)
_X86 = os.uname().machine in ("x86_64", "AMD64", "i686")
_ALIGN = 8


# --- plain-Python twins ------------------------------------------------------------------

def load_plain_py(arr, idx):
    return int(arr[idx])


def load_acquire_py(arr, idx):
    return int(arr[idx])


def store_plain_py(arr, idx, value):
    arr[idx] = value


def store_release_py(arr, idx, value):
    arr[idx] = value


def swap_seq_cst_py(arr, idx, value):
    old = int(arr[idx])
    arr[idx] = value
    return old


def fence_seq_cst_py():
    return None


def cpu_relax_py():
    return None


# --- intrinsics --------------------------------------------------------------------------

def _cell_ok(arr, idx) -> bool:
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int64
            and isinstance(idx, types.Integer))


def _cell_ptr(context, builder, arrty, arr, idxty, idx):
    """Pointer to arr[idx] (no wraparound, no bounds check: indices are layout constants)."""
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [i])


def _make_load(ordering: str):
    def impl(typingctx, arr, idx):
        if not _cell_ok(arr, idx):
            return None

        def codegen(context, builder, sig, args):
            ptr = _cell_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            return builder.load_atomic(ptr, ordering, _ALIGN, typ=_I64)

        return types.int64(arr, idx), codegen
    impl.__name__ = f"load_{ordering}"
    return intrinsic(impl)


def _make_store(ordering: str):
    def impl(typingctx, arr, idx, value):
        if not _cell_ok(arr, idx) or not isinstance(value, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            ptr = _cell_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            v = context.cast(builder, args[2], sig.args[2], types.int64)
            builder.store_atomic(v, ptr, ordering, _ALIGN)
            return context.get_dummy_value()

        return types.void(arr, idx, value), codegen
    impl.__name__ = f"store_{ordering}"
    return intrinsic(impl)


@intrinsic
def _swap_seq_cst(typingctx, arr, idx, value):
    if not _cell_ok(arr, idx) or not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _cell_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("xchg", ptr, v, "seq_cst")

    return types.int64(arr, idx, value), codegen


@intrinsic
def _fence_seq_cst(typingctx):
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _cpu_relax(typingctx):
    def codegen(context, builder, sig, args):
        if _X86:  # a hint to the core (and to the hypervisor) that this is a spin loop
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen



if config.DISABLE_JIT:
    load_plain, load_acquire = load_plain_py, load_acquire_py
    store_plain, store_release = store_plain_py, store_release_py
    swap_seq_cst, fence_seq_cst, cpu_relax = swap_seq_cst_py, fence_seq_cst_py, cpu_relax_py
else:
    load_plain = _make_load("monotonic")
    load_acquire = _make_load("acquire")
    store_plain = _make_store("monotonic")
    store_release = _make_store("release")
    swap_seq_cst = _swap_seq_cst
    fence_seq_cst = _fence_seq_cst
    cpu_relax = _cpu_relax

__all__ = ["load_plain", "load_acquire", "store_plain", "store_release", "swap_seq_cst",
           "fence_seq_cst", "cpu_relax", "load_plain_py", "load_acquire_py", "store_plain_py",
           "store_release_py", "swap_seq_cst_py", "fence_seq_cst_py", "cpu_relax_py"]

"""shmex.ring in one process: kernels, cursors, back-pressure, empty/full, dtype and attach checks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import textwrap

import numpy as np
import pytest
from numba import njit

from shmex.errors import AttachError, RingFull, SchemaMismatch, UsageError
from shmex.ring import Ring, resolve
from shmex.ring import _kernels as ring_kernels
from shmex.ring import layout as ring_layout
from shmex.ring.atomics import load_acquire, store_release, swap_seq_cst
from shmex.schema import COMMAND, REPORT
from shmex.shm import Segment
from shmex.shm.header import HEADER, HEADER_BYTES
from shmex.shm.names import shm_path

W = COMMAND.itemsize // 8
_MULT = np.array([1, 3, 5, 7, 11, 13, 17, 19], dtype=np.uint64)
_ADD = np.array([0, 1, 2, 3, 4, 5, 6, 7], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def make(start: int, n: int) -> np.ndarray:
    """n COMMAND records whose every word is derived from its sequence number (torn = detectable)."""
    seq = np.arange(start, start + n, dtype=np.uint64)
    out = np.empty(n, dtype=COMMAND)
    out.view(np.uint64).reshape(n, W)[:] = seq[:, None] * _MULT + _ADD
    return out


def seqs(recs: np.ndarray) -> np.ndarray:
    words = recs.view(np.uint64).reshape(len(recs), W)
    assert np.array_equal(words, words[:, :1] * _MULT + _ADD), "a record is torn"
    return words[:, 0].astype(np.int64)


@pytest.fixture
def ring3(shm_run):
    """(owner, producer, consumer) handles on one small ring; closed and unlinked after."""
    def build(capacity, **kw):
        owner = Ring.create(shm_run, "r", capacity, COMMAND)
        prod = Ring.attach(owner.name, COMMAND, side="producer", **kw)
        cons = Ring.attach(owner.name, COMMAND, side="consumer", **kw)
        handles.extend([prod, cons, owner])
        return owner, prod, cons
    handles: list[Ring] = []
    yield build
    for h in handles:
        h.close()
    if handles:
        handles[-1].unlink()


# -- kernels over plain arrays (named cases) ------------------------------------------------

def _arrays(capacity):
    return (np.zeros((capacity, W), np.uint64), np.zeros(ring_layout.CTL_BYTES // 8, np.int64),
            np.zeros(ring_layout.LOCAL_CELLS, np.int64), np.zeros(ring_layout.LOCAL_CELLS, np.int64))


@pytest.mark.parametrize("capacity, batches", [
    pytest.param(1, [1, 1, 1, 1, 1], id="cap1-singles"),
    pytest.param(2, [3, 1, 2, 2, 5], id="cap2-oversized-batches"),
    pytest.param(8, [3, 5, 7, 1, 8, 6], id="cap8-wrapping"),
    pytest.param(16, [16, 16, 16], id="cap16-exact-fill"),
    pytest.param(64, [0, 10, 0, 63], id="cap64-empty-batches"),
])
def test_kernels_publish_consume(capacity, batches):
    slots, ctl, prod, cons = _arrays(capacity)
    sent = got = 0
    for b in batches:
        src = make(sent, b).view(np.uint64).reshape(b, W)
        k = ring_kernels._publish_batch(slots, ctl, prod, src, False)
        assert k == min(b, capacity - (sent - got))
        sent += k
        assert ctl[ring_layout.C_PUB] == sent
        dst = np.zeros(b + 1, COMMAND)
        m = ring_kernels._consume_batch(slots, ctl, cons, dst.view(np.uint64).reshape(b + 1, W), True, False)
        assert m == sent - got
        assert list(seqs(dst[:m])) == list(range(got, got + m))
        got += m
        assert ctl[ring_layout.C_RELEASED] == ctl[ring_layout.C_READ] == got


def test_kernels_wake_flag():
    slots, ctl, prod, cons = _arrays(4)
    src = make(0, 1).view(np.uint64).reshape(1, W)
    ring_kernels._publish_batch(slots, ctl, prod, src, True)
    assert prod[ring_layout.L_WAKE] == 0
    ring_kernels._arm(ctl, ring_layout.C_CONS_WAITING)
    ring_kernels._publish_batch(slots, ctl, prod, src, True)
    assert prod[ring_layout.L_WAKE] == 1 and ctl[ring_layout.C_CONS_WAITING] == 0  # claimed: exactly one post


def test_kernels_without_jit():
    """The kernels and the plain-Python twins of the intrinsics run under NUMBA_DISABLE_JIT=1."""
    code = textwrap.dedent("""
        import numpy as np
        from shmex.ring import _kernels as ring_kernels, layout as ring_layout, atomics
        assert atomics.load_acquire is atomics.load_acquire_py
        slots = np.zeros((2, 8), np.uint64); ctl = np.zeros(ring_layout.CTL_BYTES // 8, np.int64)
        p = np.zeros(8, np.int64); c = np.zeros(8, np.int64)
        out = []
        for i in range(5):
            src = np.full((1, 8), i, np.uint64)
            assert ring_kernels._publish_batch(slots, ctl, p, src, True) == 1
            dst = np.zeros((3, 8), np.uint64)
            assert ring_kernels._consume_batch(slots, ctl, c, dst, True, True) == 1
            out.append(int(dst[0, 0]))
        assert out == [0, 1, 2, 3, 4], out
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@njit(nogil=True)
def _spin_until_set(cell):
    n = 0
    while load_acquire(cell, 0) == 0:   # a plain read here may be hoisted into an endless loop
        n += 1
    return n


@njit(nogil=True)
def _set(cell, v):
    store_release(cell, 0, v)


def test_acquire_load_is_not_hoisted():
    cell = np.zeros(1, np.int64)
    _spin_until_set(np.ones(1, np.int64))  # compile before the thread
    t = threading.Thread(target=_spin_until_set, args=(cell,), daemon=True)
    t.start()
    t.join(0.05)
    _set(cell, 1)
    t.join(20)
    assert not t.is_alive(), "spin on load_acquire never saw the store"


def test_swap_returns_old():
    @njit
    def f(a):
        return swap_seq_cst(a, 1, 5), swap_seq_cst(a, 1, 6)
    a = np.zeros(2, np.int64)
    assert f(a) == (0, 5) and a[1] == 6


# -- the Python API ---------------------------------------------------------------------------

def test_empty_ring(ring3):
    owner, prod, cons = ring3(8)
    buf = np.zeros(4, COMMAND)
    assert cons.consume(buf) == 0
    assert cons.consume(buf, wait=True, timeout_s=0.02) == 0
    assert not cons.wait_readable(1, timeout_s=0.01)
    assert len(owner) == 0 and owner.published_seq == owner.read_seq == owner.released_seq == 0
    assert prod.publish(make(0, 0)) == 0


@pytest.mark.parametrize("wait", ["spin", "yield", "block"])
def test_back_pressure_full_ring(ring3, wait):
    owner, prod, cons = ring3(4, wait=wait)
    assert prod.publish(make(0, 6), wait=False) == 4           # what fits; nothing overwritten
    assert prod.publish(make(4, 1), wait=False) == 0           # full: told, not lost
    with pytest.raises(RingFull, match="full: published 0 of 1"):
        prod.publish(make(4, 1), wait=False, raise_full=True)
    with pytest.raises(RingFull) as e:
        prod.publish(make(4, 2), timeout_s=0.02)               # waits, then gives up
    assert e.value.published == 0
    assert not prod.wait_writable(1, timeout_s=0.01)
    buf = np.zeros(8, COMMAND)
    assert cons.consume(buf) == 4 and list(seqs(buf[:4])) == [0, 1, 2, 3]
    assert prod.publish(make(4, 3), wait=False, raise_full=True) == 3
    assert cons.consume(buf) == 3 and list(seqs(buf[:3])) == [4, 5, 6]


def test_all_or_nothing_leaves_ring_untouched(ring3):
    owner, prod, cons = ring3(4)
    prod.publish(make(0, 3))
    with pytest.raises(RingFull):
        prod.publish(make(3, 2), wait=False, raise_full=True)
    assert owner.published_seq == 3


@pytest.mark.parametrize("capacity", [1, 2])
def test_tiny_capacities(ring3, capacity):
    owner, prod, cons = ring3(capacity)
    buf = np.zeros(3, COMMAND)
    got = []
    for i in range(10):
        assert prod.publish(make(i, 1), wait=False) == 1
        if capacity == 1:
            assert prod.publish(make(i + 1, 1), wait=False) == 0
        n = cons.consume(buf)
        got.extend(seqs(buf[:n]))
    assert got == list(range(10))


def test_read_ahead_then_release(ring3):
    owner, prod, cons = ring3(8)
    prod.publish(make(0, 8))
    buf = np.zeros(5, COMMAND)
    assert cons.consume(buf, release=False) == 5
    assert (owner.read_seq, owner.released_seq) == (5, 0)
    assert prod.publish(make(8, 1), wait=False) == 0           # nothing released yet
    cons.release(3)
    assert owner.released_seq == 3
    assert prod.publish(make(8, 4), wait=False) == 3
    with pytest.raises(UsageError, match="release upto_seq 9"):
        cons.release(9)
    with pytest.raises(UsageError, match="release upto_seq 2"):
        cons.release(2)
    cons.rewind()                                               # read again from released
    assert cons.consume(buf, release=False) == 5 and list(seqs(buf)) == [3, 4, 5, 6, 7]
    cons.release()
    assert owner.released_seq == 8


def test_new_consumer_resumes_from_released(ring3):
    owner, prod, cons = ring3(16)
    prod.publish(make(0, 10))
    buf = np.zeros(6, COMMAND)
    cons.consume(buf, release=False)
    cons.release(4)
    cons.close()
    again = Ring.attach(owner.name, COMMAND, side="consumer")
    try:
        buf = np.zeros(16, COMMAND)
        assert again.consume(buf) == 6 and list(seqs(buf[:6])) == [4, 5, 6, 7, 8, 9]
    finally:
        again.close()


def test_single_record_publish(ring3):
    owner, prod, cons = ring3(4)
    rec = make(7, 1)
    assert prod.publish(rec[0]) == 1
    buf = np.zeros(1, COMMAND)
    assert cons.consume(buf) == 1 and seqs(buf)[0] == 7


# -- boundary checks ---------------------------------------------------------------------

def test_dtype_mismatch(ring3, shm_run):
    owner, prod, cons = ring3(4)
    with pytest.raises(SchemaMismatch, match=owner.name):
        Ring.attach(owner.name, REPORT, side="consumer")
    with pytest.raises(SchemaMismatch, match="expected records of dtype"):
        prod.publish(np.zeros(2, REPORT))
    with pytest.raises(SchemaMismatch):
        cons.consume(np.zeros(2, REPORT))
    with pytest.raises(UsageError, match="C-contiguous"):
        prod.publish(make(0, 4)[::2])
    with pytest.raises(UsageError, match="numpy array"):
        prod.publish([1, 2])


def test_sides_are_exclusive_and_enforced(ring3):
    owner, prod, cons = ring3(4)
    with pytest.raises(AttachError, match=rf"{owner.name}: already has a live producer \(pid {os.getpid()}\)"):
        Ring.attach(owner.name, COMMAND, side="producer")
    with pytest.raises(AttachError, match="already has a live consumer"):
        Ring.attach(owner.name, COMMAND, side="consumer")
    with pytest.raises(UsageError, match="not the producer"):
        cons.publish(make(0, 1))
    with pytest.raises(UsageError, match="not the consumer"):
        prod.consume(np.zeros(1, COMMAND))
    with pytest.raises(UsageError, match="not the producer"):
        owner.publish(make(0, 1))
    assert owner.peer_alive() and cons.peer_alive() and prod.peer_alive()


@pytest.mark.parametrize("capacity", [0, 3, 6, -2])
def test_capacity_must_be_power_of_two(shm_run, capacity):
    with pytest.raises(UsageError, match="power of two"):
        Ring.create(shm_run, "bad", capacity, COMMAND)


def test_bad_wait_alias(shm_run):
    with pytest.raises(UsageError, match="wait strategy 'sleepy'"):
        Ring.create(shm_run, "w", 4, COMMAND, wait="sleepy")
    assert resolve("block:0").spin_ns == 0 and resolve("yield").name == "yield"


def test_hybrid_wait_yields_then_blocks_and_a_post_wakes_it(shm_run):
    """'hybrid': spin, yield, then block on the semaphore; a publish wakes the blocked
    consumer (no missed wake-up), and an idle consumer did block (not yield forever)."""
    h = resolve("hybrid")
    assert h.block and h.yield_ns > 0 and h.spin_ns >= 0
    with Ring.create(shm_run, "hy", 8, COMMAND, side="producer") as prod, \
            Ring.attach(prod.name, COMMAND, side="consumer", wait="hybrid") as cons:
        prod.unlink()                # the mapping stays until both close
        assert cons.wait_readable(1, timeout_s=0.2) is False
        assert cons.stats.blocks >= 1
        got = []
        t = threading.Thread(target=lambda: got.append(cons.wait_readable(1, timeout_s=30)))
        t.start()
        while cons.stats.blocks < 2 and t.is_alive():
            threading.Event().wait(0.001)
        prod.publish(np.zeros(1, dtype=COMMAND))
        t.join()
        assert got == [True] and cons.stats.missed_wakeups == 0


def test_attach_errors(shm_run):
    from shmex.shm.names import segment_name
    with pytest.raises(AttachError, match="no such segment"):
        Ring.attach(segment_name(shm_run, "missing"), COMMAND, side="consumer")
    raw = Segment.create(shm_run, "raw", 64, dtype=COMMAND)
    try:
        with pytest.raises(AttachError, match="layout 'raw', expected 'ring'"):
            Ring.attach(raw.name, COMMAND, side=None)
    finally:
        raw.unlink()
        raw.close()
    owner = Ring.create(shm_run, "ver", 4, COMMAND)
    try:
        with open(shm_path(owner.name), "r+b") as f:
            h = np.frombuffer(bytearray(f.read(HEADER_BYTES)), dtype=HEADER).copy()
            h["layout_version"] = 7
            f.seek(0)
            f.write(h.tobytes())
        with pytest.raises(AttachError, match=rf"{owner.name}: ring layout version 7, this shmex reads 1"):
            Ring.attach(owner.name, COMMAND, side="consumer")
    finally:
        owner.close()
        owner.unlink()

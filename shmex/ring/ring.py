"""Ring: an SPSC ring of fixed-size records in a shm segment. Create/attach/checks, the Python API.

::

    ring = Ring.create(run_id, "in-0", capacity=4096, dtype=COMMAND)    # supervisor
    prod = Ring.attach(ring.name, COMMAND, side="producer", wait="block")  # producer process
    cons = Ring.attach(ring.name, COMMAND, side="consumer", wait="block")  # consumer process

    prod.publish(records)                       # waits for space (back-pressure), all published
    prod.publish(records, wait=False)           # -> how many fitted now (0 = full)
    prod.publish(records, wait=False, raise_full=True)  # all or nothing, else RingFull
    n = cons.consume(buf, wait=True)            # copy up to len(buf) records; released at once
    n = cons.consume(buf, release=False)        # read ahead ...
    cons.release(upto_seq)                      # ... and free the slots later (e.g. when durable)

A new consumer resumes from RELEASED_SEQ: whatever was read but not released is read
again. One live producer and one live consumer at a time (byte locks on the segment;
a SIGKILLed holder's lock goes with it).
"""

from __future__ import annotations

import os
import time

import numpy as np

from shmex.errors import AttachError, RingFull, SchemaMismatch, UsageError
from shmex.schema import dtype_digest
from shmex.ring import _kernels as ring_kernels
from shmex.ring import layout as ring_layout
from shmex.ring.wait import ShmSemaphore, WaitStats, resolve, shares_single_core, wait_until
from shmex.shm import _locks
from shmex.shm.names import segment_name
from shmex.shm.segment import Segment

SIDES = ("producer", "consumer", None)
_PEER_RECHECK_NS = 1_000_000_000


def _words(dt: np.dtype) -> tuple[np.dtype, int]:
    """The word type and count used to copy a record: u64 when the size allows, else bytes."""
    if dt.itemsize % 8 == 0:
        return np.dtype(np.uint64), dt.itemsize // 8
    return np.dtype(np.uint8), dt.itemsize


class Ring:
    """One process's handle on a ring: as its producer, its consumer, or neither (None)."""

    def __init__(self, seg: Segment, dtype: np.dtype, side: str | None, wait):
        if side not in SIDES:
            raise UsageError(f"side {side!r}: want 'producer', 'consumer' or None")
        self.seg = seg
        self.name = seg.name
        self.dtype = np.dtype(dtype)
        self.side = side
        self.capacity = seg.info.records
        self.wait_strategy = resolve(wait)
        self.stats = WaitStats()
        self._word, self._nwords = _words(self.dtype)
        self._ctl = seg.view(0, np.int64, ring_layout.CTL_BYTES // 8)
        self._slots = seg.view(ring_layout.SLOTS_OFF, self._word, self.capacity * self._nwords).reshape(
            self.capacity, self._nwords)
        base = seg.view(0, np.uint8, 1).ctypes.data
        self._data_sem = ShmSemaphore(base + ring_layout.DATA_SEM_OFF, f"{self.name} data semaphore")
        self._space_sem = ShmSemaphore(base + ring_layout.SPACE_SEM_OFF, f"{self.name} space semaphore")
        self._local = np.zeros(ring_layout.LOCAL_CELLS, dtype=np.int64)
        self._one = np.zeros(1, dtype=self.dtype)
        self._peer_spin_ns: int | None = None
        self._peer_checked_ns = 0

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, run_id: str, role: str, capacity: int, dtype: np.dtype, *,
               side: str | None = None, wait="block") -> "Ring":
        """Create the ring's segment (exclusive, 0600) and initialise it; optionally take a side."""
        dt = np.dtype(dtype)
        if not isinstance(capacity, (int, np.integer)) or capacity < 1 or capacity & (capacity - 1):
            raise UsageError(f"capacity {capacity!r}: must be a power of two >= 1")
        if dt.itemsize == 0:
            raise UsageError(f"dtype {dt}: records must have a size")
        resolve(wait)  # fail before creating anything
        seg = Segment.create(run_id, role, ring_layout.payload_bytes(int(capacity), dt.itemsize), dtype=dt,
                             records=int(capacity), layout=ring_layout.RING_LAYOUT,
                             layout_version=ring_layout.RING_LAYOUT_VERSION)
        ring = None
        try:
            ctl = seg.view(0, np.int64, ring_layout.CTL_BYTES // 8)
            ctl[ring_layout.C_CAPACITY] = capacity
            ctl[ring_layout.C_MASK] = capacity - 1
            ctl[ring_layout.C_RECORD_BYTES] = dt.itemsize
            del ctl
            ring = cls(seg, dt, None, wait)
            ring._data_sem.init(0)
            ring._space_sem.init(0)
            if side is not None:
                ring._take_side(side)
        except BaseException:
            if ring is not None:
                ring._ctl = ring._slots = None
            ring = None
            seg.unlink()
            seg.close()
            raise
        return ring

    @classmethod
    def attach(cls, name: str, dtype: np.dtype, *, side: str | None, wait="block") -> "Ring":
        """Attach to an existing ring as its producer, consumer, or an observer (side=None).

        Raises AttachError (missing, foreign, wrong version or size, side already taken)
        or SchemaMismatch (the ring holds records of another dtype).
        """
        dt = np.dtype(dtype)
        resolve(wait)
        seg = Segment.attach(name, layout=ring_layout.RING_LAYOUT, layout_version=ring_layout.RING_LAYOUT_VERSION)
        try:
            if seg.info.digest != dtype_digest(dt):
                raise SchemaMismatch(name, expected=seg.info.descr, found=dt.descr)
            cap = seg.info.records
            want = ring_layout.payload_bytes(cap, dt.itemsize)
            if cap < 1 or cap & (cap - 1) or seg.payload_bytes != want:
                raise AttachError(f"{name}: ring of {cap} records of {dt.itemsize} bytes needs a "
                                  f"payload of {want} bytes, the segment has {seg.payload_bytes}")
            ctl = seg.view(0, np.int64, ring_layout.CTL_BYTES // 8)
            diffs = [f"{what} {int(ctl[i])}, header implies {exp}"
                     for what, i, exp in (("capacity", ring_layout.C_CAPACITY, cap), ("mask", ring_layout.C_MASK, cap - 1),
                                          ("record_bytes", ring_layout.C_RECORD_BYTES, dt.itemsize))
                     if int(ctl[i]) != exp]
            del ctl
            if diffs:
                raise AttachError(f"{name}: control block disagrees with header: " + "; ".join(diffs))
            ring = cls(seg, dt, None, wait)
            try:
                if side is not None:
                    ring._take_side(side)
            except BaseException:
                ring._ctl = ring._slots = None
                raise
        except BaseException:
            seg.close()
            raise
        return ring

    @classmethod
    def name_for(cls, run_id: str, role: str) -> str:
        return segment_name(run_id, role)

    def _take_side(self, side: str) -> None:
        if side not in ("producer", "consumer"):
            raise UsageError(f"side {side!r}: want 'producer' or 'consumer'")
        byte = ring_layout.LOCK_PRODUCER if side == "producer" else ring_layout.LOCK_CONSUMER
        if not _locks.try_lock_byte(self.seg.fd, byte):
            pid = int(ring_kernels._load(self._ctl, ring_layout.C_PRODUCER_PID if side == "producer" else ring_layout.C_CONSUMER_PID))
            raise AttachError(f"{self.name}: already has a live {side} (pid {pid}); a ring is "
                              f"single-producer single-consumer")
        ctl, loc = self._ctl, self._local
        if side == "producer":
            loc[ring_layout.L_POS] = ring_kernels._load(ctl, ring_layout.C_PUB)
            loc[ring_layout.L_PEER] = ring_kernels._load(ctl, ring_layout.C_RELEASED)
            ring_kernels._store(ctl, ring_layout.C_PRODUCER_PID, os.getpid())
            ring_kernels._store(ctl, ring_layout.C_PRODUCER_ATTACHES, ring_kernels._load(ctl, ring_layout.C_PRODUCER_ATTACHES) + 1)
        else:
            rel = ring_kernels._load(ctl, ring_layout.C_RELEASED)
            loc[ring_layout.L_POS] = rel        # resume from released: unreleased reads are read again
            loc[ring_layout.L_REL] = rel
            loc[ring_layout.L_PEER] = ring_kernels._load(ctl, ring_layout.C_PUB)
            ring_kernels._store(ctl, ring_layout.C_READ, rel)
            ring_kernels._store(ctl, ring_layout.C_CONSUMER_PID, os.getpid())
            ring_kernels._store(ctl, ring_layout.C_CONSUMER_ATTACHES, ring_kernels._load(ctl, ring_layout.C_CONSUMER_ATTACHES) + 1)
        self.side = side

    # -- cursors --------------------------------------------------------------------------
    @property
    def published_seq(self) -> int:
        """Records published so far (PUB_SEQ)."""
        return int(ring_kernels._load(self._ctl, ring_layout.C_PUB))

    @property
    def released_seq(self) -> int:
        """Records the consumer has released (RELEASED_SEQ)."""
        if self.side == "consumer":
            return int(self._local[ring_layout.L_REL])
        return int(ring_kernels._load(self._ctl, ring_layout.C_RELEASED))

    @property
    def read_seq(self) -> int:
        """How far the consumer has read (>= released_seq)."""
        if self.side == "consumer":
            return int(self._local[ring_layout.L_POS])
        return int(ring_kernels._load(self._ctl, ring_layout.C_READ))

    def __len__(self) -> int:
        """Records published and not yet released (the slots in use)."""
        return self.published_seq - self.released_seq

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slots, ctl, local) for numba agent loops that call `_kernels` directly.

        `slots` is the (capacity, words) word view, `ctl` the shared control cells, `local`
        this handle's private cursors. Views of the mapping: drop them before `close()`.
        """
        if self.side is None or self.seg.closed:
            raise UsageError(f"{self.name}: arrays() needs an open producer or consumer handle")
        return self._slots, self._ctl, self._local

    def sem_addrs(self) -> tuple[int, int]:
        """(DATA_SEM, SPACE_SEM) addresses in this mapping, for numba agent loops that wake
        a blocked peer themselves (``procs._sys.sem_post``) after a kernel set L_WAKE;
        valid until `close()`."""
        if self.seg.closed:
            raise UsageError(f"{self.name}: closed")
        return self._data_sem.addr, self._space_sem.addr

    def try_take_producer(self) -> bool:
        """An observer becomes the producer if no process is (its lock): -> whether it did."""
        if self.side is not None:
            raise UsageError(f"{self.name}: already the {self.side}")
        try:
            self._take_side("producer")
        except AttachError:
            return False
        return True

    def give_up(self) -> None:
        """Back to an observer: the side's lock is free for the next process."""
        if self.side is not None:
            _locks.unlock_byte(self.seg.fd, ring_layout.LOCK_PRODUCER if self.side == "producer" else ring_layout.LOCK_CONSUMER)
            self.side = None

    @property
    def producer_attaches(self) -> int:
        """How many times a producer took this ring (each client session counts one)."""
        return int(ring_kernels._load(self._ctl, ring_layout.C_PRODUCER_ATTACHES))

    @property
    def consumer_attaches(self) -> int:
        """How many times a consumer took this ring (each client session counts one)."""
        return int(ring_kernels._load(self._ctl, ring_layout.C_CONSUMER_ATTACHES))

    def peer_alive(self) -> bool:
        """Whether the other side (or, for an observer, the producer) holds its lock now."""
        byte = ring_layout.LOCK_PRODUCER if self.side in ("consumer", None) else ring_layout.LOCK_CONSUMER
        return _locks.byte_locked(self.seg.fd, byte)

    # Methods below never bind a view of the segment to a local name: a frame kept alive
    # by an exception's traceback would otherwise keep the mapping from being closed.

    # -- producer -------------------------------------------------------------------------
    def publish(self, records: np.ndarray, wait: bool = True, *, timeout_s: float | None = None,
                raise_full: bool = False) -> int:
        """Publish records (a 1-D array of the ring's dtype, or one record); -> count published.

        wait=True: back-pressure: waits (per the wait strategy) until all are published;
        RingFull if `timeout_s` passes first (e.published says how many went).
        wait=False: publishes what fits now and returns the count (0 = full); with
        raise_full=True it publishes all or none and raises RingFull when they do not fit.
        """
        self._need("producer")
        src = self._words_of(records)
        n = src.shape[0]
        loc = self._local  # private: holding it in a frame is harmless
        if not wait:
            if raise_full and n > 0 and ring_kernels._free(self._ctl, loc, self.capacity) < n:
                raise self._full(0, n)
            done = ring_kernels._publish_batch(self._slots, self._ctl, loc, src, True)
            self._post_if_woken(self._data_sem)
            return int(done)
        deadline = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        done = 0
        while True:
            k = ring_kernels._publish_batch(self._slots, self._ctl, loc, src[done:], True)
            self._post_if_woken(self._data_sem)
            done += k
            if done >= n:
                return done
            ok = wait_until(self.wait_strategy, lambda: ring_kernels._free(self._ctl, loc, self.capacity) > 0,
                            sem=self._space_sem, arm=lambda: ring_kernels._arm(self._ctl, ring_layout.C_PROD_WAITING),
                            disarm=lambda: ring_kernels._disarm(self._ctl, ring_layout.C_PROD_WAITING),
                            deadline_ns=deadline, stats=self.stats, spin_ns=self._spin_ns())
            if not ok:
                raise self._full(done, n)

    def wait_writable(self, n: int = 1, timeout_s: float | None = None) -> bool:
        """Wait until `n` slots are free (n <= capacity); False on timeout."""
        self._need("producer")
        if not 1 <= n <= self.capacity:
            raise UsageError(f"{self.name}: n {n} outside 1..capacity {self.capacity}")
        loc = self._local
        deadline = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        return wait_until(self.wait_strategy, lambda: ring_kernels._free(self._ctl, loc, self.capacity) >= n,
                          sem=self._space_sem, arm=lambda: ring_kernels._arm(self._ctl, ring_layout.C_PROD_WAITING),
                          disarm=lambda: ring_kernels._disarm(self._ctl, ring_layout.C_PROD_WAITING),
                          deadline_ns=deadline, stats=self.stats, spin_ns=self._spin_ns())

    # -- consumer -------------------------------------------------------------------------
    def consume(self, out: np.ndarray, *, wait: bool = False, timeout_s: float | None = None,
                release: bool = True) -> int:
        """Copy up to len(out) records into `out`; -> count (0 = none before the timeout).

        wait=True waits (per the strategy) for at least one record. release=False reads
        ahead without freeing the slots: call `release()` later.
        """
        self._need("consumer")
        dst = self._words_of(out, writable=True)
        loc = self._local
        k = ring_kernels._consume_batch(self._slots, self._ctl, loc, dst, release, True)
        if k or not wait or dst.shape[0] == 0:
            self._post_if_woken(self._space_sem)
            return int(k)
        if not self.wait_readable(1, timeout_s):
            return 0
        k = ring_kernels._consume_batch(self._slots, self._ctl, loc, dst, release, True)
        self._post_if_woken(self._space_sem)
        return int(k)

    def wait_readable(self, n: int = 1, timeout_s: float | None = None) -> bool:
        """Wait until `n` unread records are published (n <= capacity); False on timeout."""
        self._need("consumer")
        if not 1 <= n <= self.capacity:
            raise UsageError(f"{self.name}: n {n} outside 1..capacity {self.capacity}")
        loc = self._local
        deadline = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        return wait_until(self.wait_strategy, lambda: ring_kernels._available(self._ctl, loc) >= n,
                          sem=self._data_sem, arm=lambda: ring_kernels._arm(self._ctl, ring_layout.C_CONS_WAITING),
                          disarm=lambda: ring_kernels._disarm(self._ctl, ring_layout.C_CONS_WAITING),
                          deadline_ns=deadline, stats=self.stats, spin_ns=self._spin_ns())

    def release(self, upto_seq: int | None = None) -> None:
        """Free the slots below `upto_seq` (default: everything read) for the producer."""
        self._need("consumer")
        rel, read = int(self._local[ring_layout.L_REL]), int(self._local[ring_layout.L_POS])
        upto = read if upto_seq is None else int(upto_seq)
        if not rel <= upto <= read:
            raise UsageError(f"{self.name}: release upto_seq {upto}: must lie in released {rel} .. read {read}")
        if upto > rel:
            ring_kernels._release_upto(self._ctl, self._local, upto, True)
            self._post_if_woken(self._space_sem)

    def rewind(self) -> None:
        """Read again from the released cursor (what a new consumer would do)."""
        self._need("consumer")
        self._local[ring_layout.L_POS] = self._local[ring_layout.L_REL]
        ring_kernels._store(self._ctl, ring_layout.C_READ, int(self._local[ring_layout.L_REL]))

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Give up the side (its lock), drop the views and unmap. Idempotent."""
        if self.seg.closed:
            return
        self.give_up()
        self._ctl = self._slots = None
        self.seg.close()

    def unlink(self) -> None:
        """Remove the ring's name (processes attached keep working until they close)."""
        self.seg.unlink()

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.seg.closed:
            return f"Ring({self.name!r}, closed)"
        return (f"Ring({self.name!r}, side={self.side}, capacity={self.capacity}, "
                f"pub={self.published_seq}, read={self.read_seq}, released={self.released_seq})")

    # -- helpers --------------------------------------------------------------------------
    def _need(self, side: str) -> None:
        if self.side != side:
            raise UsageError(f"{self.name}: this handle is the {self.side or 'observer'}, not the {side}")
        if self.seg.closed:
            raise UsageError(f"{self.name}: closed")

    def _words_of(self, records: np.ndarray, writable: bool = False) -> np.ndarray:
        """The 2-D word view of a caller's records, checked at the boundary."""
        if isinstance(records, np.void) and records.dtype == self.dtype and not writable:
            self._one[0] = records
            records = self._one
        if not isinstance(records, np.ndarray):
            raise UsageError(f"{self.name}: records must be a numpy array of {self.dtype}, "
                             f"got {type(records).__name__}")
        if records.dtype != self.dtype:
            raise SchemaMismatch(self.name, expected=self.dtype, found=records.dtype)
        if records.ndim != 1 or not records.flags.c_contiguous:
            raise UsageError(f"{self.name}: records must be a 1-D C-contiguous array "
                             f"(got ndim={records.ndim}, contiguous={records.flags.c_contiguous})")
        if writable and not records.flags.writeable:
            raise UsageError(f"{self.name}: output buffer is read-only")
        return records.view(self._word).reshape(records.shape[0], self._nwords)

    def _post_if_woken(self, sem: ShmSemaphore) -> None:
        if self._local[ring_layout.L_WAKE]:
            self._local[ring_layout.L_WAKE] = 0
            sem.post()
            self.stats.posts += 1
            idx = ring_layout.C_DATA_POSTS if sem is self._data_sem else ring_layout.C_SPACE_POSTS
            ring_kernels._store(self._ctl, idx, ring_kernels._load(self._ctl, idx) + 1)  # one writer per cell

    def _spin_ns(self) -> int | None:
        """0 when the peer is pinned to our one core (spinning would only delay it)."""
        now = time.monotonic_ns()
        if now - self._peer_checked_ns > _PEER_RECHECK_NS:
            self._peer_checked_ns = now
            peer = int(ring_kernels._load(self._ctl, ring_layout.C_CONSUMER_PID if self.side == "producer" else ring_layout.C_PRODUCER_PID))
            self._peer_spin_ns = 0 if shares_single_core(peer) and self.wait_strategy.block else None
        return self._peer_spin_ns

    def _full(self, done: int, n: int) -> RingFull:
        e = RingFull(f"{self.name}: full: published {done} of {n} records "
                     f"(capacity {self.capacity}, consumer released up to {self.released_seq})")
        e.published = done
        return e

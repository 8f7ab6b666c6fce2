"""What every engine process shares: the control block, phases, waiting, bookkeeping.

- `Ctl` wraps the control segment's int64 cells (`layout`); flags and cursors go
  through acquire loads and release stores (the ring's `_load`/`_store` kernels).
- `Backoff` is the idle strategy for loops that wait on several things at once (the
  matcher waits on N input rings and the durable seq): poll, then sched_yield, then
  nap; it skips the polling phase when the process shares its core (a spinner would
  only delay the peer it waits for).
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np

from shmex.errors import ShmexError
from shmex.engine import cells
from shmex.ring import _kernels as ring_kernels
from shmex.shm.segment import Segment


class Aborted(ShmexError):
    """The supervisor aborted the run (or died): stop now, leave what is not done."""


class Ctl:
    """A process's handle on the control segment."""

    def __init__(self, seg: Segment | None, cells_: np.ndarray | None = None):
        self.seg = seg
        head = seg.view(0, np.int64, cells.PROC_BASE) if seg is not None else cells_[:cells.PROC_BASE]
        self.proc_slots = int(head[cells.CFG_PROC_SLOTS])
        self.producers = (int(head[cells.CFG_PRODUCERS]) + int(head[cells.CFG_CLIENTS])   # producer slots
                          + int(head[cells.CFG_GATEWAYS]))
        n = cells.ctl_cells(self.proc_slots, self.producers)
        self.a = seg.view(0, np.int64, n) if seg is not None else cells_[:n]
        self._ppid = os.getppid() if seg is not None else None   # a local block has no supervisor
        self._checked_ns = 0
        self.heartbeat_cell = -1          # set by this process's ProcessSlot

    @classmethod
    def local(cls, proc_slots: int = 1) -> "Ctl":
        """A control block in this process's memory, PHASE running: for a role's loop run
        in a thread beside something that is not an engine (a follower's feed), which
        stores the cells the role reads (DURABLE_SEQ, WAL_DONE, PHASE) itself. No
        supervisor watches it: `check` looks at PHASE only."""
        a = np.zeros(cells.ctl_cells(proc_slots, 0), np.int64)
        a[cells.CFG_PROC_SLOTS] = proc_slots
        a[cells.PHASE] = cells.PH_RUNNING
        return cls(None, a)

    @classmethod
    def attach(cls, run_id: str) -> "Ctl":
        from shmex.shm.names import segment_name

        return cls(Segment.attach(segment_name(run_id, "ctl"), layout="ctl"))

    def load(self, i: int) -> int:
        return int(ring_kernels._load(self.a, i))

    def store(self, i: int, v: int) -> None:
        ring_kernels._store(self.a, i, int(v))

    @property
    def durable_seq(self) -> int:
        """DURABLE_SEQ: the highest seq the WAL holds as its mode demands."""
        return self.load(cells.DURABLE_SEQ)

    @property
    def run_base_seq(self) -> int:
        """RUN_BASE_SEQ: DURABLE_SEQ when this run's WAL writer first opened the log."""
        return self.load(cells.RUN_BASE_SEQ)

    @property
    def phase(self) -> int:
        return self.load(cells.PHASE)

    def check(self, *, every_ns: int = 50_000_000) -> None:
        """Raise Aborted if the run was aborted or the parent (the supervisor) is gone."""
        now = time.monotonic_ns()
        if now - self._checked_ns < every_ns:
            return
        self._checked_ns = now
        if self.heartbeat_cell >= 0:      # every wait loop checks: an idle role still beats
            self.a[self.heartbeat_cell] = now   # plain store: the watchdog reads it every ~20 ms
        if self.phase == cells.PH_ABORT:
            raise Aborted("the supervisor aborted the run")
        if self._ppid is not None and os.getppid() != self._ppid:
            raise Aborted("the supervisor is gone")

    def store_hash(self, h: str) -> None:
        """The matcher's final state_hash (hex of 16 bytes) into STATE_HASH."""
        raw = np.frombuffer(bytes.fromhex(h), dtype="<i8")
        self.a[cells.STATE_HASH] = raw[0]
        self.a[cells.STATE_HASH + 1] = raw[1]

    def producer_block(self, k: int) -> np.ndarray:
        b = cells.prod_base(self.proc_slots, k)
        return self.a[b:b + cells.PROD_CELLS]

    def prod_cell(self, k: int, counter: int) -> int:
        """Index of producer slot k's `counter` (cells.C_*) in the control cells."""
        return cells.prod_base(self.proc_slots, k) + counter

    def close(self) -> None:
        self.a = None
        if self.seg is not None:
            self.seg.close()


class ProcessSlot:
    """This process's cells in the control block: ready, heartbeat, done, usage."""

    def __init__(self, ctl: Ctl, slot: int):
        self.ctl, self.slot = ctl, slot
        self._beats = 0
        self._cpu0 = time.process_time_ns()
        self._wall0 = time.monotonic_ns()
        ctl.store(cells.proc_cell(slot, cells.P_PID), os.getpid())
        ctl.heartbeat_cell = cells.proc_cell(slot, cells.P_HEARTBEAT)
        self.beat()

    def ready(self) -> None:
        self.beat()
        self.ctl.store(cells.proc_cell(self.slot, cells.P_READY), 1)

    def wait_go(self) -> None:
        """Block until the supervisor starts the run (or aborts it)."""
        while True:
            ph = self.ctl.phase
            if ph == cells.PH_ABORT:
                raise Aborted("aborted before the start")
            if ph != cells.PH_STARTING:
                break
            self.ctl.check(every_ns=0)
            time.sleep(0.002)
        self._cpu0 = time.process_time_ns()
        self._wall0 = time.monotonic_ns()

    def beat(self) -> None:
        """HEARTBEAT = now (monotonic ns): the supervisor's watchdog takes a READY process
        whose heartbeat is older than its bound for hung (stopped, or stuck in a syscall)."""
        self._beats += 1
        self.ctl.a[cells.proc_cell(self.slot, cells.P_HEARTBEAT)] = time.monotonic_ns()  # plain: one writer

    def finish(self) -> None:
        """Record CPU time, wall time since the start, and peak RSS; then DONE."""
        c = self.ctl
        c.store(cells.proc_cell(self.slot, cells.P_CPU_NS), time.process_time_ns() - self._cpu0)
        c.store(cells.proc_cell(self.slot, cells.P_WALL_NS), time.monotonic_ns() - self._wall0)
        c.store(cells.proc_cell(self.slot, cells.P_RSS), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        c.store(cells.proc_cell(self.slot, cells.P_DONE), 1)


class Backoff:
    """Idle strategy across several conditions: poll, then yield, then nap (bounded)."""

    def __init__(self, shared_core: bool, *, poll_ns: int = 20_000, yield_ns: int = 1_000_000,
                 nap_s: float = 50e-6, long_nap_s: float = 1e-3, long_after_ns: int = 50_000_000):
        self.poll_ns = 0 if shared_core else poll_ns
        self.yield_ns, self.nap_s, self.long_nap_s, self.long_after_ns = yield_ns, nap_s, long_nap_s, long_after_ns
        self._since = 0

    def reset(self) -> None:
        self._since = 0

    def idle(self) -> None:
        now = time.monotonic_ns()
        if self._since == 0:
            self._since = now
        waited = now - self._since
        if waited < self.poll_ns:
            return
        if waited < self.yield_ns:
            os.sched_yield()
        elif waited < self.long_after_ns:
            time.sleep(self.nap_s)
        else:
            time.sleep(self.long_nap_s)


def shares_core() -> bool:
    """Whether this process is pinned to one core that another engine process also uses
    (the supervisor passes that in the environment; pinning is its decision)."""
    return os.environ.get("SHMEX_SHARED_CORE", "1") == "1"


def warm_ring_kernels() -> None:
    """Load every ring kernel (from numba's cache) on scratch arrays of the live types, so
    that the first real batch does not pay for it; touches no shared cursor."""
    from shmex.ring import layout as ring_layout

    ctl = np.zeros(ring_layout.CTL_BYTES // 8, dtype=np.int64)
    loc = np.zeros(ring_layout.LOCAL_CELLS, dtype=np.int64)
    slots = np.zeros((4, 8), dtype=np.uint64)
    rec = np.zeros((1, 8), dtype=np.uint64)
    ring_kernels._publish_batch(slots, ctl, loc, rec, True)
    loc[:] = 0
    ring_kernels._consume_batch(slots, ctl, loc, rec, False, True)
    ring_kernels._consume_batch(slots, ctl, loc, rec, True, True)
    ring_kernels._release_upto(ctl, loc, 0, True)
    ring_kernels._available(ctl, loc)
    ring_kernels._free(ctl, loc, 4)
    ring_kernels._arm(ctl, ring_layout.C_CONS_WAITING)
    ring_kernels._disarm(ctl, ring_layout.C_CONS_WAITING)
    ring_kernels._load(ctl, 0)
    ring_kernels._store(ctl, 0, 0)


def load_hash(ctl_array: np.ndarray) -> str:
    """The state_hash the matcher stored (`Ctl.store_hash`), from a control-cell array."""
    return np.asarray(ctl_array[cells.STATE_HASH:cells.STATE_HASH + 2], dtype="<i8").tobytes().hex()

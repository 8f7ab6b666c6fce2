"""Wait strategies: what a ring side does while the other side has not caught up.

Four, chosen per side (short aliases for the CLI and EngineConfig):

- ``spin``:  re-check forever. Lowest latency, burns a core; starves a peer that shares
  the core (two spinners on one core hand off once per scheduler tick, ~4 ms). Use only
  with a core to yourself.
- ``yield``: spin ``spin_ns``, then ``sched_yield`` between checks. Lets a peer on the
  same core run, but still keeps the CPU busy while idle.
- ``hybrid``: spin 2 us, ``sched_yield`` for up to 0.5 ms, then block like ``block``.
  While load flows the waiter never sleeps on the semaphore, so the producer side pays
  no wake-up (on a KVM guest, a futex wake of a halted vCPU costs tens of us) and the
  waiter none either; the yields hand a shared core to its other processes at once;
  idle, it blocks after 0.5 ms and costs no CPU.
- ``block`` (the default): spin ``spin_ns`` (about the cost of a wake-up, measured by
  the clock), then raise a waiting flag and block on the ring's process-shared POSIX
  semaphore; the other side posts it after moving its cursor if it sees the flag. No
  CPU while idle, and no lost wake-ups (see `_kernels._arm` / `_check_peer_waiting`).
  When the peer is pinned to the very same single core as the waiter, the spin is
  skipped: the peer cannot make progress while we spin.

Every blocking wait is sliced (``block_slice_ns``) so that deadlines and a dead peer are
noticed; a slice that ends with the condition already true is counted as a missed
wake-up in `WaitStats` (tests assert there are none).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

from shmex.errors import ShmexError, UsageError

FOREVER = -1
DEFAULT_SPIN_NS = 5_000          # ~ a futex wake-up plus the context switch on this kind of VM
DEFAULT_BLOCK_SLICE_NS = 100_000_000
DEFAULT_HYBRID_YIELD_NS = 500_000   # ~ 50 orders' gaps at 100K/s: no semaphore while load flows


@dataclass(frozen=True)
class WaitStrategy:
    """spin `spin_ns` (FOREVER: never stop), then yield `yield_ns`, then block if `block`."""
    name: str
    spin_ns: int
    yield_ns: int = 0
    block: bool = False
    block_slice_ns: int = DEFAULT_BLOCK_SLICE_NS

    def __post_init__(self):
        if self.spin_ns != FOREVER and self.spin_ns < 0:
            raise UsageError(f"spin_ns {self.spin_ns}: must be >= 0 or FOREVER")
        if self.spin_ns != FOREVER and self.yield_ns != FOREVER and not self.block:
            raise UsageError(f"wait strategy {self.name!r}: neither spins, yields nor blocks forever")


SPIN = WaitStrategy("spin", spin_ns=FOREVER)
YIELD = WaitStrategy("yield", spin_ns=2_000, yield_ns=FOREVER)
BLOCK = WaitStrategy("block", spin_ns=DEFAULT_SPIN_NS, block=True)
# yield while data is likely to come soon (a loaded pipeline), block once it stopped coming
HYBRID = WaitStrategy("hybrid", spin_ns=2_000, yield_ns=DEFAULT_HYBRID_YIELD_NS, block=True)
ALIASES = {"spin": SPIN, "yield": YIELD, "block": BLOCK, "hybrid": HYBRID}


def resolve(spec: "str | WaitStrategy") -> WaitStrategy:
    """A strategy from an alias: 'spin', 'yield', 'block', or 'block:<spin_ns>' / 'yield:<spin_ns>'."""
    if isinstance(spec, WaitStrategy):
        return spec
    name, _, arg = str(spec).partition(":")
    if name not in ALIASES:
        raise UsageError(f"wait strategy {spec!r}: want one of {', '.join(ALIASES)} (optionally ':<spin_ns>')")
    base = ALIASES[name]
    if not arg:
        return base
    try:
        spin_ns = int(arg)
    except ValueError:
        raise UsageError(f"wait strategy {spec!r}: spin_ns {arg!r} is not an integer") from None
    return WaitStrategy(f"{name}:{spin_ns}", spin_ns, base.yield_ns, base.block, base.block_slice_ns)


@dataclass
class WaitStats:
    """What one side's waits did (process-local counters)."""
    waits: int = 0          # calls that found the condition false at first
    blocks: int = 0         # semaphore waits entered
    wakeups: int = 0        # semaphore waits that returned by a post
    slices_expired: int = 0 # semaphore waits that timed out
    missed_wakeups: int = 0 # timed out although the condition had become true
    posts: int = 0          # posts this side made to wake its peer
    extra: dict = field(default_factory=dict)


# --- process-shared POSIX semaphores living inside the segment ---------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_CLOCK_MONOTONIC = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


for _fn, _args in (("sem_init", [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]),
                   ("sem_post", [ctypes.c_void_p]),
                   ("sem_trywait", [ctypes.c_void_p]),
                   ("sem_getvalue", [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)])):
    getattr(_libc, _fn).argtypes = _args
    getattr(_libc, _fn).restype = ctypes.c_int
_HAS_CLOCKWAIT = hasattr(_libc, "sem_clockwait")
if _HAS_CLOCKWAIT:  # glibc >= 2.30: a monotonic deadline, immune to wall-clock steps
    _libc.sem_clockwait.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec)]
    _libc.sem_clockwait.restype = ctypes.c_int
_libc.sem_timedwait.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Timespec)]
_libc.sem_timedwait.restype = ctypes.c_int


class ShmSemaphore:
    """An unnamed, process-shared POSIX semaphore (sem_init pshared=1) at `addr` in shm.

    It lives and dies with its segment: nothing to name, nothing to unlink. ctypes
    releases the GIL around the blocking call.
    """

    def __init__(self, addr: int, where: str):
        self.addr, self.where = addr, where

    def init(self, value: int = 0) -> None:
        if _libc.sem_init(self.addr, 1, value) != 0:
            e = ctypes.get_errno()
            raise ShmexError(f"{self.where}: sem_init failed: {os.strerror(e)}")

    def post(self) -> None:
        if _libc.sem_post(self.addr) != 0:
            e = ctypes.get_errno()
            raise ShmexError(f"{self.where}: sem_post failed: {os.strerror(e)}")

    def wait(self, timeout_ns: int) -> bool:
        """Wait for a post at most `timeout_ns`; True if one was taken."""
        if _HAS_CLOCKWAIT:
            deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + timeout_ns
        else:
            deadline = time.time_ns() + timeout_ns
        ts = _Timespec(deadline // 1_000_000_000, deadline % 1_000_000_000)
        while True:
            if _HAS_CLOCKWAIT:
                rc = _libc.sem_clockwait(self.addr, _CLOCK_MONOTONIC, ctypes.byref(ts))
            else:
                rc = _libc.sem_timedwait(self.addr, ctypes.byref(ts))
            if rc == 0:
                return True
            e = ctypes.get_errno()
            if e == errno.EINTR:
                continue
            if e == errno.ETIMEDOUT:
                return False
            raise ShmexError(f"{self.where}: sem wait failed: {os.strerror(e)}")

    def value(self) -> int:
        v = ctypes.c_int()
        _libc.sem_getvalue(self.addr, ctypes.byref(v))
        return v.value


# --- the wait loop ----------------------------------------------------------------------

def shares_single_core(peer_pid: int) -> bool:
    """True when this process and `peer_pid` are both pinned to the same single CPU."""
    if peer_pid <= 0:
        return False
    try:
        mine = os.sched_getaffinity(0)
        theirs = set(psutil.Process(peer_pid).cpu_affinity())
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return False
    return len(mine) == 1 and mine == theirs


def wait_until(strategy: WaitStrategy, ready: Callable[[], bool], *, sem: ShmSemaphore | None,
               arm: Callable[[], None], disarm: Callable[[], None], deadline_ns: int | None,
               stats: WaitStats, spin_ns: int | None = None) -> bool:
    """Wait until `ready()` per `strategy`; False if `deadline_ns` (monotonic) passed first.

    `arm` raises this side's waiting flag (with the fence); `disarm` lowers it. `spin_ns`
    overrides the strategy's spin budget (the caller passes 0 when sharing the peer's core).
    """
    if ready():
        return True
    stats.waits += 1
    clock = time.monotonic_ns
    start = clock()
    spin = strategy.spin_ns if spin_ns is None else spin_ns
    # phase 1: spin, re-checking, for `spin` ns (FOREVER: until ready or deadline)
    n = 0
    while spin == FOREVER or n == 0 or clock() - start < spin:
        n += 1
        if ready():
            return True
        if deadline_ns is not None and clock() >= deadline_ns:
            return False
    # phase 2: yield between checks
    if strategy.yield_ns != 0:
        t0 = clock()
        while strategy.yield_ns == FOREVER or clock() - t0 < strategy.yield_ns:
            os.sched_yield()
            if ready():
                return True
            if deadline_ns is not None and clock() >= deadline_ns:
                return False
    if not strategy.block:
        return ready()
    if sem is None:
        raise UsageError(f"wait strategy {strategy.name!r} blocks, but no semaphore was given")
    # phase 3: raise the flag, re-check (after the fence in arm), block; repeat
    while True:
        arm()
        if ready():
            disarm()
            return True
        slice_ns = strategy.block_slice_ns
        if deadline_ns is not None:
            left = deadline_ns - clock()
            if left <= 0:
                disarm()
                return False
            slice_ns = min(slice_ns, left)
        stats.blocks += 1
        posted = sem.wait(slice_ns)
        disarm()
        if posted:
            stats.wakeups += 1
        else:
            stats.slices_expired += 1
        if ready():
            if not posted:
                stats.missed_wakeups += 1
            return True

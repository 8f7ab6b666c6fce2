"""The warm standby: one spare engine child, already started, that takes a dead child's place.

Most of a plain restart is a fresh Python process importing numpy/numba and loading its
numba kernels from the on-disk cache. A standby has done
all of that before anyone dies:

- the supervisor starts it (``python -m shmex.engine.child --standby FD``) beside the
  first children, waits for it to be ready before the load starts (its start-up is not
  paid inside the measured load), and again after each successor reported READY; it
  attaches no segment (nothing to leak) and dies with the supervisor like every child
  (parent-death signal);
- it imports every role's module and loads every role's kernels on scratch arrays of the
  live types (`warm_all`), in a thread at nice 19 (the thread's niceness dies with it, so
  the role later runs at the supervisor's priority, unprivileged), then writes one byte
  to FD: ready;
- it blocks reading one assignment line on stdin; the supervisor pins it to the dead
  child's core (psutil) and writes its `assignment`; from there on it is
  that child (`child.py` runs the same code for a first start);
- a standby that dies is replaced; one that is not ready yet is never handed a role (a
  plain spawn is then the path, and logged as such); EOF on stdin makes it exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import psutil


def child_env() -> dict:
    """The environment every child starts with (the role adds SHMEX_SHARED_CORE)."""
    return dict(os.environ, PYTHONUNBUFFERED="1", SHMEX_SUPERVISOR_PID=str(os.getpid()))


def start_child(env: dict, standby_fd: int | None = None, label: tuple = (),
                roles: tuple = ()) -> subprocess.Popen:
    """Start ``python -m shmex.engine.child``; it waits for its assignment on stdin. A first
    start carries its role and index as a label (``ps`` tells the processes apart); a
    standby the names of the roles it may be handed (the ones it warms)."""
    argv = [sys.executable, "-m", "shmex.engine.child", *map(str, label)]
    fds: tuple = ()
    if standby_fd is not None:
        argv += ["--standby", str(standby_fd), *roles]
        fds = (standby_fd,)
    return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, pass_fds=fds)


def pin(pid: int, core: int) -> None:
    try:
        psutil.Process(pid).cpu_affinity([core])
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OSError):
        pass  # it died already (the watch loop reports it) or pinning is not allowed here


def assignment(spec, index: int, slot: int, cfg, env: dict) -> dict:
    """What a child is told: its role (name and module, from the registry), its index
    and control-segment slot, the run's EngineConfig and its environment additions."""
    return {"role": spec.name, "module": spec.module, "index": int(index), "slot": int(slot),
            "cfg": cfg.to_dict(), "env": env}


def assign(popen: subprocess.Popen, a: dict) -> bool:
    """Write the assignment line and close stdin; False when the child is gone."""
    line = json.dumps(a) + "\n"
    try:
        popen.stdin.write(line.encode())
        popen.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        return False
    return True


class Standby:
    """The supervisor's handle on the spare child."""

    def __init__(self, env: dict, roles: tuple):
        r, w = os.pipe()
        self.roles = tuple(roles)
        self.t0 = time.monotonic()
        try:
            self.popen = start_child(env, standby_fd=w, roles=roles)
        finally:
            os.close(w)
        os.set_blocking(r, False)
        self._r = r
        self.ready = False
        self.ready_s = 0.0          # monotonic time it said ready
        self.warm_ms = 0.0          # start -> ready

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> str:
        """'warming', 'ready' or 'dead' (reads the ready byte when it came)."""
        if self.popen.poll() is not None:
            self._close_pipe()
            return "dead"
        if not self.ready and self._r is not None:
            try:
                b = os.read(self._r, 1)
            except BlockingIOError:
                return "warming"
            if b:
                self.ready, self.ready_s = True, time.monotonic()
                self.warm_ms = round((self.ready_s - self.t0) * 1e3, 1)
            self._close_pipe()      # a byte: ready; EOF: it is dying (poll says so next time)
        return "ready" if self.ready else "warming"

    def take(self, core: int, a: dict) -> bool:
        """Hand it a role: pin to `core`, then the assignment; False when it is gone."""
        if self.poll() != "ready":
            return False
        pin(self.pid, core)
        return assign(self.popen, a)

    def kill(self) -> None:
        self._close_pipe()
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.popen.stdin and not self.popen.stdin.closed:
            try:
                self.popen.stdin.close()
            except OSError:
                pass

    def _close_pipe(self) -> None:
        if self._r is not None:
            os.close(self._r)
            self._r = None


# ---- the child side: load every role's kernels on scratch arrays of the live types ------

@contextlib.contextmanager
def compile_lock(name: str):
    """An exclusive lock per kernel set (a role's name, or "ring"), held while a process
    loads that set's kernels: on a cold cache the first holder compiles them and writes
    numba's cache, and the next, taking the lock after it, loads them from there instead
    of compiling the same kernels at the same time (a matcher and the warm standby, two
    producers). The file lives in the temporary directory, named after this package's
    location and numba's version (one lock per cache); flock drops with its process."""
    import fcntl
    import hashlib
    import tempfile

    import numba

    import shmex

    tag = hashlib.sha1(f"{os.path.dirname(shmex.__file__)} {numba.__version__}".encode()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"shmex-compile-{tag}-{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def warm_role(spec) -> float:
    """Load one role's kernels under its compile lock; -> seconds it took (a cold cache:
    the compile, or the wait for another process's)."""
    from shmex.engine import registry

    t0 = time.monotonic()
    with compile_lock(spec.name):
        registry.module(spec).warm()
    return time.monotonic() - t0


def warm_ring() -> None:
    from shmex.engine import ctl

    with compile_lock("ring"):
        ctl.warm_ring_kernels()


def warm_all(names=()) -> None:
    """Import the named roles' modules (every registered role when none is named) and call
    each one's ``warm()`` under its compile lock: each loads its numba kernels (from the
    cache) on scratch data, including what its start calls (a matcher's recovery path), so
    that a role taken later starts warm. Touches no shared memory."""
    from shmex.engine import registry

    warm_ring()
    for spec in registry.roles():
        if not names or spec.name in names:
            warm_role(spec)

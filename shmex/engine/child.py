"""Entry point of every engine child: ``python -m shmex.engine.child [ROLE INDEX | --standby FD [ROLE...]]``.

One path for a first start and a warm standby (`standby.py`):

1. set up: ignore SIGINT (the supervisor owns the shutdown; a terminal's Ctrl-C reaches
   the whole process group), die with the supervisor (parent-death signal), lower the
   timer slack to 1 us (short sleeps stay short);
2. a standby (``--standby FD ROLE...``) imports the roles it may be handed and loads
   their numba kernels (`standby.warm_all`, in a thread at nice 19), then writes one byte
   to FD: ready;
3. read the assignment, one JSON line on stdin (`standby.assignment`: role name and
   module from the registry, index, slot, the EngineConfig, env additions; the
   supervisor writes it at once for a first start, whose ROLE INDEX arguments are only a
   label for ``ps``; a standby waits for it; EOF: no role wanted, exit 0);
4. load the role's kernels under its compile lock (`standby.warm_role`: on a cold cache
   one process compiles a kernel set, the others load it), attach the control segment,
   run the role's ``run(cfg, ctl, me, index)``, record its usage.

Exit status: 0 done, 1 an error (traceback on stderr), 3 a durability fault (WAL writer).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback


COMPILED_S = 5.0     # a warm-up longer than this was a cold cache: said on stderr


def _timer_slack_1us() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """SIGKILL this process when the supervisor dies (PR_SET_PDEATHSIG): a killed
    supervisor leaves no engine process behind; the next launch cleans its segments and
    recovers from the WAL. SHMEX_SUPERVISOR_PID closes the race with a parent that died
    before the prctl."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    want = os.environ.get("SHMEX_SUPERVISOR_PID")
    if want and os.getppid() != int(want):
        os._exit(1)


def _forks_drop_segment_fds() -> None:
    """A process this child forks (the matcher's snapshot writer) lets go of the run's
    shared-memory segments at once: unmaps them and closes their descriptors. Each
    mapping holds the segment's open file, and with it the ring's OFD side lock, which
    would otherwise outlive this process for as long as the fork runs: a successor that
    starts fast (the warm standby) could not attach. The fork must not touch a segment."""
    os.register_at_fork(after_in_child=_drop_segments)


def _drop_segments() -> None:
    from shmex.shm.names import PREFIX, SHM_DIR

    head = os.path.join(SHM_DIR, PREFIX)
    munmap = ctypes.CDLL(None, use_errno=True).munmap
    munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    with open("/proc/self/maps") as f:
        spans = [line.split(None, 5) for line in f]
    for parts in spans:
        if len(parts) == 6 and parts[5].startswith(head):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            munmap(lo, hi - lo)
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(head):
                os.close(int(name))
        except OSError:
            pass      # the listing's own descriptor, or one closed meanwhile


def _warm_at_low_priority(names) -> None:
    """standby.warm_all in a thread at nice 19: the warm-up never competes with the engine,
    and the niceness leaves with the thread (Linux nice is per thread), so the role runs
    at the priority this process started with, no privilege needed to get it back."""
    failed: list[BaseException] = []

    def body():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        try:
            from shmex.engine.standby import warm_all

            warm_all(names)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            failed.append(e)

    t = threading.Thread(target=body, name="standby-warm")
    t.start()
    t.join()
    if failed:
        raise failed[0]


def _read_assignment() -> dict | None:
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return None
    a = json.loads(line)
    for key in ("role", "module", "index", "slot", "cfg", "env"):
        if key not in a:
            raise SystemExit(f"child: assignment lacks {key!r}: {line[:200]!r}")
    return a


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _timer_slack_1us()
    _forks_drop_segment_fds()
    if argv[:1] == ["--standby"]:
        t0 = time.monotonic()
        _warm_at_low_priority(argv[2:])
        fd = int(argv[1])
        os.write(fd, b"R")
        os.close(fd)
        a = _read_assignment()
        if a is None:
            return 0
        print(f"standby (pid {os.getpid()}, warmed in {time.monotonic() - t0:.2f} s) takes the role "
              f"{a['role']} {a['index']}", file=sys.stderr, flush=True)
    elif len(argv) in (0, 2):
        a = _read_assignment()
        if a is None:
            return 0
        if argv and argv != [a["role"], str(a["index"])]:
            raise SystemExit(f"child: labelled {argv}, assigned {a['role']} {a['index']}")
    else:
        raise SystemExit(f"usage: python -m shmex.engine.child [ROLE INDEX | --standby FD [ROLE...]] (got {argv})")
    os.environ.update(a["env"])
    return run_role(a)


def run_role(a: dict) -> int:
    import importlib

    from shmex.engine.config import EngineConfig   # numpy and numba: a standby imported them at nice 19
    from shmex.engine import registry, standby
    from shmex.engine.ctl import Aborted, Ctl, ProcessSlot

    role, index = a["role"], int(a["index"])
    cfg = EngineConfig.from_dict(a["cfg"])
    standby.warm_ring()
    took = standby.warm_role(registry.get(role))
    if took > COMPILED_S:
        print(f"{role} {index}: kernels ready in {took:.1f} s (compiled, or loaded after another "
              f"process compiled them; numba's cache holds them for later launches)", file=sys.stderr, flush=True)
    ctl = Ctl.attach(cfg.run_id)
    me = ProcessSlot(ctl, int(a["slot"]))
    rc = 1
    try:
        mod = importlib.import_module(a["module"])
        prof_dir = os.environ.get("SHMEX_PROFILE")
        if prof_dir:  # developer aid: a cProfile dump per process
            import cProfile

            prof = cProfile.Profile()
            rc = prof.runcall(mod.run, cfg, ctl, me, index)
            prof.dump_stats(os.path.join(prof_dir, f"{role}-{index}.prof"))
        else:
            rc = mod.run(cfg, ctl, me, index)
    except Aborted:
        rc = 0
    except BaseException:  # noqa: BLE001 - the supervisor reports the status; the trace goes to stderr
        print(f"{role} {index}: failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        me.finish()
        ctl.close()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

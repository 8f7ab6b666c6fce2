"""Entry point of every engine child: ``python -m shmex.procs.child ROLE INDEX CONFIG_JSON``.

A child ignores SIGINT (the supervisor owns the shutdown; a terminal's Ctrl-C reaches
the whole process group), lowers its timer slack to 1 us (short sleeps stay short),
attaches the control segment, runs its role, and records its usage. Exit status: 0 done,
1 an error (traceback on stderr), 3 a durability fault (WAL writer). A child dies with
its supervisor (parent-death signal).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback

from shmex.procs import layout as L
from shmex.procs.ctl import Aborted, Ctl, ProcessSlot, warm_ring_kernels


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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _timer_slack_1us()
    role, index, cfg = argv[0], int(argv[1]), json.loads(argv[2])
    ctl = Ctl.attach(cfg["run_id"], cfg["producers"] + cfg["clients"])
    slot = {"matcher": L.SLOT_MATCHER, "walwriter": L.SLOT_WAL,
            "publisher": L.SLOT_PUBLISHER}.get(role, L.SLOT_PRODUCER0 + index)
    me = ProcessSlot(ctl, slot)
    warm_ring_kernels()
    rc = 1
    try:
        if role == "matcher":
            from shmex.procs import matcher_proc as mod
        elif role == "walwriter":
            from shmex.procs import walwriter as mod
        elif role == "publisher":
            from shmex.procs import publisher as mod
        elif role == "producer":
            from shmex.procs import producer as mod
        else:
            raise SystemExit(f"unknown role {role!r}")
        call = (lambda: mod.run(cfg, ctl, me, index)) if role == "producer" else (lambda: mod.run(cfg, ctl, me))
        prof_dir = os.environ.get("SHMEX_PROFILE")
        if prof_dir:  # developer aid: a cProfile dump per process
            import cProfile

            prof = cProfile.Profile()
            rc = prof.runcall(call)
            prof.dump_stats(os.path.join(prof_dir, f"{role}-{index}.prof"))
        else:
            rc = call()
    except Aborted:
        rc = 0
    except BaseException:  # noqa: BLE001 - the supervisor reports the status; the trace goes to stderr
        name = role if role != "producer" else f"producer-{index}"
        print(f"{name}: failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        me.finish()
        ctl.close()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

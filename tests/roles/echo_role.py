"""A toy engine role for the registry test: it echoes its heartbeat count into its own
control cells and, at each start, notes its pid and CPU affinity in ``$ECHO_ROLE_DIR``.
Declared here only (``ROLE``), registered through ``SHMEX_ROLES=echo_role``."""

from __future__ import annotations

import os
import time

from shmex.engine import cells
from shmex.engine.registry import KILL, RoleSpec

ROLE = RoleSpec("echo", __name__, rank=9, drill={"echo": KILL})

ECHO = cells.P_ROLE      # the echoed heartbeat count, in the role's own cells


def warm() -> None:
    """Nothing compiled: the toy role has no kernels."""


def run(cfg, ctl, me, index: int) -> int:
    note = os.path.join(os.environ["ECHO_ROLE_DIR"], f"start-{os.getpid()}")
    with open(note, "w") as f:
        f.write(" ".join(map(str, sorted(os.sched_getaffinity(0)))))
    me.ready()
    me.wait_go()
    beats = 0
    while ctl.phase == cells.PH_RUNNING:
        ctl.check()
        me.beat()
        beats += 1
        ctl.store(cells.proc_cell(me.slot, ECHO), beats)
        time.sleep(0.005)
    return 0

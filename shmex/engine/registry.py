"""The role registry: every engine process role declared once.

A role is a module with ``run(cfg, ctl, me, index) -> exit status`` and ``warm()`` (load
its numba kernels on scratch data, touching no shared memory), and one `RoleSpec` here
saying how the engine runs it. The supervisor, the child entry point, the warm standby,
the placement plan, ``launch --wait``, ``drill --targets``, the control-segment slots and
the summary all read this table; none of them names a role.

Adding a role is one module and one `RoleSpec`: in `BUILTIN` for a role of the engine
itself, or, for a role that lives elsewhere (a plugin, a test's toy role), a module named
in the ``SHMEX_ROLES`` environment variable (comma-separated) that defines ``ROLE =
RoleSpec(...)``. Children inherit the environment, so every process of the run sees the
same table.

Process slots in the control segment follow the table's order: each role has
``slots(cfg)`` consecutive slots (the producer role has one per producer slot, load and
client slots alike); `slot_table` computes them, and the supervisor stores the count in
``CFG_PROC_SLOTS`` so that a client computes the same offsets.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable

ENV_EXTRA = "SHMEX_ROLES"

# drill fault kinds a role can offer (`shmex drill` implements each)
KILL = "kill"                     # SIGKILL the process at a random instant
KILL_IN_FORK = "kill_in_fork"     # SIGKILL it while a child it forked runs (the snapshot writer)
KILL_TEAR_WAL = "kill_tear_wal"   # SIGKILL it, then write half a record after the log's end
HANG = "hang"                     # SIGSTOP it: alive and silent, the supervisor's watchdog must act
SYNC_ERROR = "sync_error"         # its next fdatasync fails with EIO: it must halt the engine, not restart
# Fault injection a role reads (FAULT_SYNC) exists only where the drill set this in the
# environment of the run: in any other engine no control cell can fail a sync.
FAULTS_ENV = "SHMEX_DRILL_FAULTS"


def _one(cfg) -> int:
    return 1


@dataclass(frozen=True)
class RoleSpec:
    """How the engine runs one role. ``cfg`` below is the run's `EngineConfig`."""

    name: str                          # logs, --wait keys, summaries; a process is name or name-k
    module: str                        # dotted module with run() and warm()
    rank: int                          # placement order: rank 0 gets a core to itself first
    processes: Callable = _one         # cfg -> processes to launch (0: not run as a process)
    slots: Callable | None = None      # cfg -> control-segment slots (default: processes)
    wait: str = "block"                # default wait strategy (`ring.wait.resolve` names)
    starts_first: bool = False         # started and READY before every other role
    restart: bool = True               # restart after a death under load (else the engine stops)
    on_restart: Callable | None = None      # (cfg, ctl_array) -> None: reset cells before the successor
    restart_cfg: Callable | None = None     # (cfg, restarts) -> cfg for the successor
    drill: dict = field(default_factory=dict)   # drill target name -> fault kind
    rings: Callable | None = None      # cfg -> [(ring role, dtype, capacity)] the supervisor creates
    numbered: bool = False             # processes are named name-k (several of the role)
    reports: bool = False              # the module has report(cfg, ctl_array, cells_base) -> (doc, line):
                                       # its part of the run's result document and summary
    load_done: Callable | None = None  # (cfg, ctl_array, proc_slots, slot) -> True once the load this
                                       # role drives is sent (slot: its first process slot; the run stops
                                       # once every such role's is)

    def slot_count(self, cfg) -> int:
        return int((self.slots or self.processes)(cfg))

    def process_name(self, index: int) -> str:
        return f"{self.name}-{index}" if self.numbered else self.name


# -- the engine's own roles -------------------------------------------------------------

def _reset_pub_done(cfg, ctl) -> None:
    from shmex.engine import cells

    ctl[cells.PUB_DONE] = 0


def _reset_pub_done_if_inline(cfg, ctl) -> None:
    if cfg.publisher_inline:
        _reset_pub_done(cfg, ctl)


def _fresh_client_ids(cfg, restarts: int):
    """A restarted load producer's pool of orders is gone: new client ids."""
    return cfg.replace(cid_base=int(cfg.cid_base) + (restarts << 28))


def _producers_done(cfg, ctl, proc_slots: int, slot: int) -> bool:
    from shmex.engine import cells

    return all(ctl[cells.prod_base(proc_slots, k) + cells.C_SENDING_DONE] for k in range(cfg.producers))


def _tcp_load_done(cfg, ctl, proc_slots: int, slot: int) -> bool:
    from shmex.engine import cells

    return bool(ctl[cells.proc_cell(slot, cells.P_ROLE + cells.T_DONE)])


def _matcher_rings(cfg):
    from shmex.schema import COMMAND, REPORT

    return [("journal", COMMAND, cfg.ring_journal), ("out", REPORT, cfg.ring_out)]


def _producer_rings(cfg):
    from shmex.engine.cells import in_role, rep_role
    from shmex.schema import COMMAND, REPORT

    out = []
    for k in range(cfg.producer_slots):
        out += [(in_role(k), COMMAND, cfg.ring_in), (rep_role(k), REPORT, cfg.ring_rep)]
    return out


BUILTIN: tuple[RoleSpec, ...] = (
    RoleSpec("matcher", "shmex.roles.matcher", rank=0, on_restart=_reset_pub_done_if_inline,
             drill={"matcher": KILL, "snapshot": KILL_IN_FORK, "hang": HANG}, rings=_matcher_rings),
    # 'hybrid': yields between journal polls while commands keep coming, blocks once the
    # journal stayed empty for a while (mode none's duty kernel runs the spin and yield)
    RoleSpec("walwriter", "shmex.roles.walwriter", rank=1, wait="hybrid", starts_first=True,
             drill={"walwriter": KILL, "wal": KILL, "torn": KILL_TEAR_WAL, "syncerror": SYNC_ERROR}),
    RoleSpec("publisher", "shmex.roles.publisher", rank=2,
             processes=lambda cfg: 0 if cfg.publisher_inline else 1, slots=_one,
             on_restart=_reset_pub_done, drill={"publisher": KILL}),
    RoleSpec("producer", "shmex.roles.producer", rank=3,
             processes=lambda cfg: cfg.producers, slots=lambda cfg: cfg.producer_slots,
             restart_cfg=_fresh_client_ids, drill={"producer": KILL}, rings=_producer_rings,
             numbered=True, load_done=_producers_done),
    # members over TCP: OUCH 5.0 on SoupBinTCP; it feeds the last producer slot (its rings
    # are the producer role's), and a restarted one resumes every session from its journal
    RoleSpec("gateway", "shmex.roles.gateway", rank=4, processes=lambda cfg: cfg.gateways,
             drill={"gateway": KILL}),
    # the durable WAL -> the NATS JetStream stream (only with --nats); it holds the lease,
    # and a restarted one continues after the stream's last message
    RoleSpec("replicator", "shmex.roles.replicator", rank=5,
             processes=lambda cfg: 1 if cfg.replicated else 0, drill={"replicator": KILL}),
    # market data: ITCH 5.0 over MoldUDP64 from the durable journal (only with --feed); a
    # restarted one regenerates the feed and goes on after the last packet it sent
    RoleSpec("feed", "shmex.roles.feed", rank=6, wait="yield",
             processes=lambda cfg: 0 if cfg.feed is None else 1, drill={"feed": KILL}, reports=True),
    # the load over TCP (launch --via tcp): members that log in at the gateway and send OUCH
    # orders; it does not reconnect, so a death of it or of the gateway stops the run
    RoleSpec("tcpload", "shmex.roles.tcpload", rank=7, processes=lambda cfg: 1 if cfg.via == "tcp" else 0,
             restart=False, reports=True, load_done=_tcp_load_done),
)


def _extra() -> tuple[RoleSpec, ...]:
    out = []
    for name in filter(None, (s.strip() for s in os.environ.get(ENV_EXTRA, "").split(","))):
        spec = getattr(importlib.import_module(name), "ROLE", None)
        if not isinstance(spec, RoleSpec):
            raise ImportError(f"{ENV_EXTRA}: module {name} defines no ROLE = RoleSpec(...)")
        out.append(spec)
    return tuple(out)


def roles() -> tuple[RoleSpec, ...]:
    """Every role of this process's engine: the built-in ones, then ``SHMEX_ROLES``."""
    specs = BUILTIN + _extra()
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"role registry: {', '.join(dup)} declared twice")
    return specs


def get(name: str) -> RoleSpec:
    for s in roles():
        if s.name == name:
            return s
    raise KeyError(f"no role {name!r} (roles: {', '.join(s.name for s in roles())})")


def module(spec: RoleSpec):
    return importlib.import_module(spec.module)


def default_waits() -> dict[str, str]:
    return {s.name: s.wait for s in roles()}


def drill_targets() -> dict[str, tuple[RoleSpec, str]]:
    """drill target name -> (role, fault kind)."""
    out: dict[str, tuple[RoleSpec, str]] = {}
    for s in roles():
        for target, kind in s.drill.items():
            out[target] = (s, kind)
    return out


@dataclass(frozen=True)
class Process:
    """One process the supervisor launches (or one slot it keeps for clients)."""

    spec: RoleSpec
    index: int
    slot: int
    name: str


def slot_table(cfg) -> list[Process]:
    """Every control-segment process slot, in registry order; `launched` marks the ones
    that run as processes."""
    out, slot = [], 0
    for s in roles():
        for i in range(s.slot_count(cfg)):
            out.append(Process(s, i, slot, s.process_name(i)))
            slot += 1
    return out


def launched(cfg) -> list[Process]:
    """The processes to start, in placement rank order (then index)."""
    procs = [p for p in slot_table(cfg) if p.index < p.spec.processes(cfg)]
    return sorted(procs, key=lambda p: (p.spec.rank, p.index))


def slot_of(cfg, role: str, index: int = 0) -> int:
    for p in slot_table(cfg):
        if p.spec.name == role and p.index == index:
            return p.slot
    raise KeyError(f"no slot for {role} {index}")

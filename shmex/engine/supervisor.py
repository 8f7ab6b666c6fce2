"""The supervisor: creates every segment, spawns and pins the processes, watches them,
stops them in order, and unlinks every segment whatever happened.

Segments of run R (mode 0600, `shmex clean` finds them if the supervisor is killed):
``ctl`` (control cells), ``hist`` (latency buckets), ``in-k`` and ``rep-k`` per producer
slot (load producers, then client slots), ``cli-k`` per client slot (what its client
writes: counters, latency row, binding requests; clients map ``ctl`` read-only),
``journal`` (matcher -> WAL writer) and ``out`` (matcher -> publisher).

Start: the WAL writer first (it opens the log; its end is where the book must be), then
the matcher (recovering the book from the data directory if it has a log), the
publisher and the producers; each warms its numba kernels and reports READY; then the
load starts (PHASE = RUNNING).

Stop, in order: producers stop sending (order count reached, --duration over, SIGINT
or SIGTERM) -> the matcher drains the input rings, waits until everything is durable,
writes the final snapshot -> the WAL writer seals the run -> the publisher routes the
last reports -> the producers read them and leave. A child that dies (any status but
a clean exit after the stop began) aborts the run: every other child is told to stop
at once (the WAL writer still seals what it holds), stragglers are killed after a grace
period, and the result names the process and its exit status.

Restarts: once the load runs, a matcher, WAL writer, publisher or load producer
that dies (SIGKILL at any instant included) is started again in its slot, and the new
process resumes from the rings (`resume.py`: the ring is the retransmission buffer). Each
restart is logged with its reason, the seq at the time and the time to recover (death
seen -> the successor READY), and kept in `Supervisor.restarts`. A process that dies more
than ``max_restarts`` times within ``restart_window_s`` stops the engine with a message
naming it; ``max_restarts`` 0 restores stop-on-first-death. A process that exits with
`halt.HALT_STATUS` fail-stopped on a durability fault: it is never restarted, and the
engine stops with the one line `halt.describe` makes of what it recorded. A restarted load producer
continues its pseq from its input ring (new client ids). Children die with the
supervisor (parent-death signal in `child.py`).

Warm standby (`standby.py`, ``cfg.standby``, on by default): from the start (the load
waits until the first one is ready), and again after each successor reported READY, the
supervisor keeps one spare child that has
imported every role and loaded every kernel and waits for a role. A restart hands the
standby the dead child's role (pinned to its core, its environment) when one is ready,
and spawns a plain child otherwise; the log line and the restart's ``path`` ("standby"
or "spawn") say which. A standby that dies is replaced (after 3 that die before they
are ready, no more are started: the reason is logged); it is killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import psutil

from shmex.engine import cells
from shmex.engine import clientseg
from shmex.engine import halt
from shmex.engine import placement
from shmex.engine import registry
from shmex.engine import standby
from shmex.engine.latency import hist_cells, hist_views
from shmex.ring import Ring
from shmex.shm.registry import remove_dead_runs
from shmex.shm.segment import Segment
from shmex.shm.segment import unlink as shm_unlink

READY_TIMEOUT_S = 900      # a cold numba cache compiles every kernel (minutes on 2 cores)
STOP_TIMEOUT_S = 60
ABORT_GRACE_S = 10
WARMING_SAY_S = 15.0       # a progress line this often while children warm up
STANDBY_READY_TIMEOUT_S = 120   # the first standby: waited for before the load starts


@dataclass
class Child:
    name: str          # the role's process name (`RoleSpec.process_name`)
    spec: registry.RoleSpec
    index: int
    slot: int
    core: int
    popen: subprocess.Popen | None = None
    cpu_s: float = 0.0
    rss: int = 0
    peak_rss: int = 0
    rss_first: int = 0     # the first sample after the load started (flatness check)
    shared: bool = True    # shares its core (passed to the process)
    restarts: int = 0
    sched_first: tuple | None = None   # (monotonic s, run-queue wait ns) at the first sample under load
    sched_last: tuple | None = None    # ... at the latest sample under load
    hung_s: float = 0.0    # > 0: the watchdog killed it after this long without a heartbeat

    @property
    def runq_wait(self) -> tuple[float, float] | None:
        """(ms spent runnable but waiting for a CPU, over how many seconds) under load, of
        the slot's current process (a restart starts it again):
        time the scheduler gave this process's core to something else while it had work
        (or was yielding). None where /proc/PID/schedstat is not there."""
        if self.sched_first is None or self.sched_last is None or self.sched_last[0] <= self.sched_first[0]:
            return None
        return ((self.sched_last[1] - self.sched_first[1]) / 1e6, self.sched_last[0] - self.sched_first[0])

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0

    @property
    def role(self) -> str:
        return self.spec.name


@dataclass
class Outcome:
    status: str = "ok"            # ok | interrupted | terminated | failed
    reason: str = ""
    exit_code: int = 0
    seconds: float = 0.0
    ctl: np.ndarray | None = None
    hist: np.ndarray | None = None
    stages: np.ndarray | None = None   # per-stage latency rows (latency.stage_row)
    children: list = field(default_factory=list)
    placement: str = ""
    segments: list = field(default_factory=list)
    leaked: list = field(default_factory=list)
    cleaned: int = 0              # segments of dead runs removed at the start
    cleaned_runs: list = field(default_factory=list)   # their run ids
    started_ns: int = 0
    warmup_s: float = 0.0
    restarts: list = field(default_factory=list)   # Supervisor.restarts
    standby: dict = field(default_factory=dict)    # Supervisor.standby_stats


def _runq_wait_ns(pid: int) -> int | None:
    """Nanoseconds the process has spent runnable but not running (Linux schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


def restart_refused(restarts: list[dict], name: str, now: float, max_restarts: int, window_s: float) -> str:
    """Why the process `name`, dead at `now`, may not be restarted ('' if it may): it was
    restarted `max_restarts` times within the last `window_s` seconds already. `restarts`
    are the supervisor's restart events (``name``, ``died_s``)."""
    if max_restarts <= 0:
        return "died and restarts are off (--restarts 0)"
    recent = [e for e in restarts if e["name"] == name and now - e["died_s"] <= window_s]
    if len(recent) >= max_restarts:
        return f"died {len(recent) + 1} times within {window_s:g} s"
    return ""


def describe_status(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


class Supervisor:
    def __init__(self, cfg, progress=None, warm=()):
        self.cfg = cfg                    # EngineConfig
        # standbys warmed before this run (a follower about to take over): the first start
        # of a role takes a ready one that warmed it instead of a cold child
        self._warm: list[standby.Standby] = list(warm)
        self.P = cfg.producer_slots
        self.slots = registry.slot_table(cfg)
        self.progress = progress          # callable(sup, elapsed_s) every ~second, or None
        self.segments: list[str] = []
        self.children: list[Child] = []
        self._signal: int | None = None
        self._signals = 0
        self.restarts: list[dict] = []      # one per restart: name, pid, reason, at_seq, recovery_ms
        self._recovering: dict[str, dict] = {}
        self.max_restarts = cfg.max_restarts
        self.restart_window_s = cfg.restart_window_s
        self._stop_requested = False
        self._disconnects = None          # cancel-on-disconnect of client slots (`disconnect.Watch`)
        self._binds = None                # client slots' account bindings (`clientseg.Binds`)
        self._cli: dict = {}              # client slot k -> the cells of its own segment
        self.ctl = self.hist = None
        self.use_standby = cfg.standby
        self.standby: standby.Standby | None = None
        self.standby_roles = tuple(sorted({p.spec.name for p in registry.launched(cfg)}))   # what it warms
        self.standby_stats = {"started": 0, "ready": 0, "taken": 0, "died": 0, "died_warming": 0,
                              "prewarmed": 0}
        self._standby_failures = 0          # standbys in a row that died before they were ready

    def prod_cell(self, k: int, counter: int) -> int:
        """Index of producer slot k's `counter` (cells.C_*) in the control cells."""
        return cells.prod_base(len(self.slots), k) + counter

    def request_stop(self) -> None:
        """Stop the load as if --duration were over (thread-safe: a flag the watch loop reads)."""
        self._stop_requested = True

    # -- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        if self._signal is None:
            self._signal = signum
        if self._signals > 1 and self.ctl is not None:
            self.ctl[cells.PHASE] = cells.PH_ABORT   # a second signal: stop now

    # -- segments --------------------------------------------------------------------------
    def _create(self) -> None:
        run_id, cfg = self.cfg.run_id, self.cfg
        n = cells.ctl_cells(len(self.slots), self.P)
        seg = Segment.create(run_id, "ctl", n * 8, layout="ctl")
        self.segments.append(seg.name)
        self._ctl_seg = seg
        self.ctl = seg.view(0, np.int64, n)
        self.ctl[cells.CFG_PROC_SLOTS] = len(self.slots)
        self.ctl[cells.CFG_PRODUCERS] = cfg.producers
        self.ctl[cells.CFG_CLIENTS] = cfg.clients
        self.ctl[cells.CFG_GATEWAYS] = cfg.gateways
        self.ctl[cells.CFG_CANCEL_ON_DISCONNECT] = int(cfg.cancel_on_disconnect)
        b = cfg.book
        self.ctl[cells.CFG_SYMBOLS], self.ctl[cells.CFG_PRICE_LO] = b["symbols"], b["price_lo"]
        self.ctl[cells.CFG_PRICE_HI], self.ctl[cells.CFG_CAPACITY] = b["price_hi"], b["capacity"]
        for k in range(self.P):
            self.ctl[self.prod_cell(k, cells.C_ACCOUNT)] = cfg.account_of(k)
        hseg = Segment.create(run_id, "hist", hist_cells(self.P) * 8, layout="hist")
        self.segments.append(hseg.name)
        self._hist_seg = hseg
        self.hist, self.stages, _ = hist_views(hseg, self.P)
        self._rings = []
        rings = [r for spec in registry.roles() if spec.rings for r in spec.rings(cfg)]
        for role, dt, cap in rings:
            r = Ring.create(run_id, role, cap, dt)
            self.segments.append(r.name)
            self._rings.append(r)
        by_name = {r.name: r for r in self._rings}
        in_rings = {k: by_name[Ring.name_for(run_id, cells.in_role(k))] for k in range(self.P)}
        self._cli_segs = {}
        for k in clientseg.client_slots(cfg):      # what each client writes: its own segment
            self._cli_segs[k] = cseg = clientseg.create(run_id, k)
            self.segments.append(cseg.name)
        self._cli = {k: clientseg.cells_of(cseg) for k, cseg in self._cli_segs.items()}
        self._binds = clientseg.Binds(self.ctl, self._cli, in_rings, self.P) if self._cli else None
        self._disconnects = None
        if cfg.cancel_on_disconnect and cfg.clients:
            from shmex.engine.disconnect import Watch

            self._disconnects = Watch(cfg, self.ctl, in_rings)

    def _release_segments(self) -> list[str]:
        """Close our mappings and unlink every segment of the run; -> names that were left."""
        self._disconnects = self._binds = None    # they hold views of the control segment
        self._cli = {}
        for r in getattr(self, "_rings", []):
            r.close()
        self.ctl = self.hist = self.stages = None
        for s in (getattr(self, "_ctl_seg", None), getattr(self, "_hist_seg", None),
                  *getattr(self, "_cli_segs", {}).values()):
            if s is not None:
                s.close()
        for name in self.segments:
            shm_unlink(name, missing_ok=True)
        prefix = f"shmex-{self.cfg.run_id}-"
        return sorted(e for e in os.listdir("/dev/shm") if e.startswith(prefix))

    # -- children --------------------------------------------------------------------------
    @staticmethod
    def _role_env(shared: bool) -> dict:
        return {"SHMEX_SHARED_CORE": "1" if shared else "0"}

    def _spawn(self, ch: Child, shared: bool, cfg=None) -> None:
        ch.shared = shared
        sb = self._prewarmed(ch.role)
        if sb is not None and sb.take(ch.core, self._assignment(ch, cfg or self.cfg)):
            ch.popen = sb.popen
            self.standby_stats["prewarmed"] += 1
        else:
            if sb is not None:
                sb.kill()         # it died as it was handed the role: a cold child instead
            ch.popen = standby.start_child(dict(standby.child_env(), **self._role_env(shared)),
                                           label=(ch.role, ch.index))
            standby.pin(ch.popen.pid, ch.core)
            standby.assign(ch.popen, self._assignment(ch, cfg or self.cfg))
        if ch not in self.children:
            self.children.append(ch)

    def _prewarmed(self, role: str):
        """A ready pre-warmed standby that warmed `role`, taken out of the list (dead ones
        are dropped); None when there is none."""
        for sb in list(self._warm):
            state = sb.poll()
            if state == "dead":
                self._warm.remove(sb)
                sb.kill()
            elif state == "ready" and role in sb.roles:
                self._warm.remove(sb)
                return sb
        return None

    def _assignment(self, ch: Child, cfg) -> dict:
        return standby.assignment(ch.spec, ch.index, ch.slot, cfg, self._role_env(ch.shared))

    # -- the warm standby ------------------------------------------------------------------
    def _keep_standby(self) -> None:
        """Notice the standby's readiness or death; start one when none is there."""
        if not self.use_standby or self.ctl is None:
            return
        sb = self.standby
        if sb is not None:
            was_ready = sb.ready
            state = sb.poll()
            if state == "ready" and not was_ready:
                self.standby_stats["ready"] += 1
                self._standby_failures = 0
                print(f"supervisor: standby pid {sb.pid} ready (warmed in {sb.warm_ms:.0f} ms)",
                      file=sys.stderr, flush=True)
            elif state == "dead":
                rc = sb.popen.poll()
                self.standby_stats["died"] += 1
                if not was_ready:
                    self.standby_stats["died_warming"] += 1
                    self._standby_failures += 1
                sb.kill()
                self.standby = None
                more = self._standby_failures < 3
                print(f"supervisor: standby pid {sb.pid} died ({describe_status(rc)}, "
                      f"{'ready' if was_ready else 'still warming'}); "
                      + ("replacing it" if more else "3 standbys in a row died before they were ready: "
                         "no more standbys, restarts spawn plain children"), file=sys.stderr, flush=True)
        if (self.standby is None and not self._recovering and self._standby_failures < 3
                and self.ctl[cells.PHASE] in (cells.PH_STARTING, cells.PH_RUNNING)):
            try:
                self.standby = standby.Standby(standby.child_env(), self.standby_roles)
            except OSError as e:
                self._standby_failures += 1
                print(f"supervisor: cannot start a standby: {e}", file=sys.stderr, flush=True)
                return
            self.standby_stats["started"] += 1

    def _wait_standby_ready(self, deadline: float) -> None:
        """Before the load starts: until the first standby is ready (or given up on), so
        that its start-up (a Python process importing numba, ~1-2 s of CPU) is not paid
        inside the measured load. Measured, 100K/s mode none, 5 s: with the standby
        warming during the load p99 4.8 ms (intended -> published p99 4.2 ms: producers
        waiting for their core), without it 0.7 ms."""
        said, t0 = False, time.monotonic()
        while self.use_standby and self._signal is None and time.monotonic() < deadline:
            self._keep_standby()
            if self.standby is None and self._standby_failures >= 3:
                return
            if self.standby is not None and self.standby.ready:
                return
            if not said and time.monotonic() - t0 > 3.0:   # a cold cache: it compiles
                said = True
                print("supervisor: the engine is ready; the load starts once the warm standby is "
                      "(it loads every kernel at nice 19)", file=sys.stderr, flush=True)
            time.sleep(0.01)
        if self.use_standby and self._signal is None:
            print(f"supervisor: no standby ready after {STANDBY_READY_TIMEOUT_S} s; the load starts "
                  f"without one (it becomes ready later)", file=sys.stderr, flush=True)

    def _take_standby(self, ch: Child, cfg) -> bool:
        """Hand the ready standby `ch`'s role; False when none is ready (or it just died)."""
        sb = self.standby
        if sb is None or sb.poll() != "ready":
            return False
        self.standby = None
        if not sb.take(ch.core, self._assignment(ch, cfg)):
            print(f"supervisor: standby pid {sb.pid} died before it could take {ch.name}",
                  file=sys.stderr, flush=True)
            self.standby_stats["died"] += 1
            sb.kill()
            return False
        ch.popen = sb.popen
        self.standby_stats["taken"] += 1
        return True

    def _stop_standby(self) -> None:
        if self.standby is not None:
            self.standby.kill()
            self.standby = None
        for sb in self._warm:           # pre-warmed ones no role took
            sb.kill()
        self._warm = []

    # -- restarts --------------------------------------------------------------------------
    def _restart_or_fail(self, out: Outcome, expected_done: bool) -> Child | None:
        """Restart every child that died (if allowed); -> one that must stop the engine."""
        self._note_recovered()
        self._keep_standby()
        while True:
            dead = self._dead(expected_done)
            if dead is None:
                return None
            rc = dead.popen.poll()
            if rc == halt.HALT_STATUS:    # a fail-stop: a successor would trust what the fault left
                return dead
            if self.max_restarts <= 0 or not dead.spec.restart or self.ctl[cells.PHASE] == cells.PH_ABORT:
                return dead
            now = time.monotonic()
            refused = restart_refused(self.restarts, dead.name, now, self.max_restarts, self.restart_window_s)
            if refused:
                out.reason = (f"{dead.name} (pid {dead.pid}) {refused} (last: {describe_status(rc)}); "
                              f"not restarting it again; engine stopped")
                return dead
            self._restart(dead, rc, now)

    def _restart(self, ch: Child, rc: int, now: float) -> None:
        reason = describe_status(rc)
        if ch.hung_s:
            reason = f"hung: no heartbeat for {ch.hung_s:.1f} s, killed by the watchdog"
            ch.hung_s = 0.0
        ev = {"name": ch.name, "role": ch.role, "pid": ch.pid, "reason": reason,
              "at_seq": int(self.ctl[cells.MATCHER_SEQ]), "durable_seq": int(self.ctl[cells.DURABLE_SEQ]),
              "died_s": now, "recovery_ms": None, "new_pid": 0, "path": "spawn", "ready_s": None}
        base = cells.proc_cell(ch.slot, 0)
        self.ctl[base + cells.P_READY] = 0
        self.ctl[base + cells.P_DONE] = 0
        self.ctl[base + cells.P_HEARTBEAT] = 0
        if ch.spec.on_restart:
            ch.spec.on_restart(self.cfg, self.ctl)
        cfg = self.cfg
        ch.restarts += 1
        if ch.spec.restart_cfg:
            cfg = ch.spec.restart_cfg(self.cfg, ch.restarts)
        if self._take_standby(ch, cfg):
            ev["path"] = "standby"
            how = "the warm standby takes its place"
        else:
            self._spawn(ch, ch.shared, cfg)
            how = ("no standby ready: spawning a plain child" if self.use_standby
                   else "spawning a plain child (standby off)")
        ev["new_pid"] = ch.pid
        ch.sched_first = ch.sched_last = None   # the run-queue wait of the new process only
        self.restarts.append(ev)
        self.ctl[cells.RESTARTS] += 1
        self._recovering[ch.name] = ev
        print(f"supervisor: {ch.name} (pid {ev['pid']}) died: {ev['reason']} at seq {ev['at_seq']:,} "
              f"(durable {ev['durable_seq']:,}); {how} as pid {ch.pid} "
              f"(restart {len(self.restarts)})", file=sys.stderr, flush=True)

    def _note_recovered(self) -> None:
        for ch in self.children:
            ev = self._recovering.get(ch.name)
            if ev is not None and self.ctl[cells.proc_cell(ch.slot, cells.P_READY)]:
                ev["ready_s"] = time.monotonic()
                ev["recovery_ms"] = round((ev["ready_s"] - ev["died_s"]) * 1e3, 1)
                del self._recovering[ch.name]
                print(f"supervisor: {ch.name} recovered in {ev['recovery_ms']:.0f} ms (pid {ch.pid}, "
                      f"{ev['path']})",
                      file=sys.stderr, flush=True)

    def _watchdog(self) -> None:
        """SIGKILL every READY child whose heartbeat is older than the bound (it is hung:
        stopped, or stuck in a syscall); its death is then handled like any other. Only
        while the load runs: the stop (a final snapshot, the seal) has its own bound,
        STOP_TIMEOUT_S."""
        if self.ctl is None or self.ctl[cells.PHASE] != cells.PH_RUNNING:
            return
        now = time.monotonic_ns()
        bound = int(self.cfg.heartbeat_timeout_s * 1e9)
        for ch in self.children:
            base = cells.proc_cell(ch.slot, 0)
            hb = int(self.ctl[base + cells.P_HEARTBEAT])
            if (ch.popen.poll() is None and self.ctl[base + cells.P_READY] and not self.ctl[base + cells.P_DONE]
                    and hb and now - hb > bound and ch.name not in self._recovering):
                ch.hung_s = (now - hb) / 1e9
                print(f"supervisor: {ch.name} (pid {ch.pid}): no heartbeat for {ch.hung_s:.1f} s "
                      f"(bound {self.cfg.heartbeat_timeout_s:g} s): hung; killing it", file=sys.stderr, flush=True)
                ch.popen.kill()
                ch.popen.wait(timeout=10)

    def _dead(self, expected_done: bool) -> Child | None:
        """The first child that exited when it should not have."""
        self._watchdog()
        for ch in self.children:
            rc = ch.popen.poll()
            if rc is None:
                continue
            if rc != 0 or not expected_done:
                return ch
        return None

    def _sample(self) -> None:
        if self._cli and self.ctl is not None:
            clientseg.overlay(self.ctl, self.hist, self._cli)
        for ch in self.children:
            try:
                p = psutil.Process(ch.pid)
                t = p.cpu_times()
                ch.cpu_s = t.user + t.system
                ch.rss = p.memory_info().rss
                ch.peak_rss = max(ch.peak_rss, ch.rss)
                running = self.ctl is not None and self.ctl[cells.PHASE] == cells.PH_RUNNING
                if not ch.rss_first and running:
                    ch.rss_first = ch.rss
                if running:
                    wait_ns = _runq_wait_ns(ch.pid)
                    if wait_ns is not None:
                        ch.sched_last = (time.monotonic(), wait_ns)
                        if ch.sched_first is None:
                            ch.sched_first = ch.sched_last
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass

    def _wait_ready(self, children: list[Child], deadline: float) -> Child | None:
        t0 = said = time.monotonic()
        while True:
            waiting = [c.name for c in children if not self.ctl[cells.proc_cell(c.slot, cells.P_READY)]]
            if not waiting:
                return None
            if time.monotonic() - said >= WARMING_SAY_S:     # a cold cache: say who is compiling
                said = time.monotonic()
                print(f"supervisor: warming up, {said - t0:.0f} s: {', '.join(waiting)} not ready yet "
                      f"(numba compiles its kernels on a first run, then loads them from its cache)",
                      file=sys.stderr, flush=True)
            dead = self._dead(expected_done=False)
            if dead is not None:
                return dead
            if self._signal is not None:
                return None
            if time.monotonic() > deadline:
                raise TimeoutError(f"children not ready after {READY_TIMEOUT_S} s: {', '.join(waiting)}")
            time.sleep(0.01)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Outcome:
        out = Outcome()
        cfg = self.cfg
        self.ctl = None
        removed = remove_dead_runs()
        out.cleaned = len(removed)
        out.cleaned_runs = sorted({seg.run_id for seg in removed})
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        own_cores = os.sched_getaffinity(0)    # given back at the end: a next run plans from it
        try:
            self._create()
            out.segments = list(self.segments)
            procs = registry.launched(cfg)          # placement rank order
            place = placement.plan([p.name for p in procs])
            sh = placement.shared(place)
            out.placement = placement.describe(place)
            first_core = place[procs[0].name]        # rank 0 (the matcher): a core to itself
            cfg = self.cfg = cfg.replace(snapshot_cores=placement.snapshot_cores(place, first_core))
            try:  # the supervisor mostly sleeps; keep it off the rank-0 role's core
                others = sorted(set(place.values()) - {first_core})
                if others:
                    psutil.Process().cpu_affinity(others[:1])
            except (psutil.AccessDenied, OSError):
                pass
            t_ready = time.monotonic()
            first = [Child(p.name, p.spec, p.index, p.slot, place[p.name]) for p in procs if p.spec.starts_first]
            rest = [Child(p.name, p.spec, p.index, p.slot, place[p.name]) for p in procs if not p.spec.starts_first]
            for ch in first:     # the WAL writer opens the log: its end is where the book must be
                self._spawn(ch, sh[ch.name])
            dead = self._wait_ready(first, time.monotonic() + READY_TIMEOUT_S)
            self.ctl[cells.RUN_BASE_SEQ] = self.ctl[cells.DURABLE_SEQ]   # where this run's log starts
            if dead is None and self._signal is None:
                for ch in rest:
                    self._spawn(ch, sh[ch.name])
                self._keep_standby()      # it warms beside the others (at nice 19)
                dead = self._wait_ready(self.children, time.monotonic() + READY_TIMEOUT_S)
                # a takeover (a promoted follower) opens for orders at once: the time
                # without an exchange counts more than a clean first measurement
                if dead is None and not self.cfg.lease_revision:
                    self._wait_standby_ready(time.monotonic() + STANDBY_READY_TIMEOUT_S)
            out.warmup_s = time.monotonic() - t_ready
            if dead is None and self._signal is None:
                out.started_ns = time.time_ns()
                self.ctl[cells.GO_NS] = time.monotonic_ns()
                self.ctl[cells.PHASE] = cells.PH_RUNNING
                dead = self._watch(out)
            else:
                self.ctl[cells.PHASE] = cells.PH_ABORT   # nothing was sent: everyone leaves now
            if dead is not None:
                self._fail(out, dead)
            self._finish_children(out)
            self._sample()
            out.ctl = self.ctl.copy()
            out.hist = self.hist.copy()
            out.stages = self.stages.copy()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            try:
                os.sched_setaffinity(0, own_cores)
            except OSError:
                pass
            self._stop_standby()
            self._kill_all()
            out.children = self.children
            out.restarts = self.restarts
            out.standby = dict(self.standby_stats)
            out.leaked = self._release_segments()
        if out.status == "ok" and self._signal is not None:
            out.status = "interrupted" if self._signal == signal.SIGINT else "terminated"
            out.exit_code = 0      # an asked-for stop that drained cleanly is a success
            out.reason = f"stopped by {signal.Signals(self._signal).name}"
        return out

    def _watch(self, out: Outcome) -> Child | None:
        """RUNNING until the load is done, the duration is over or a signal came."""
        cfg = self.cfg
        t0 = time.monotonic()
        last_progress = t0
        duration = cfg.duration
        loads = [(p.spec.load_done, p.slot) for p in registry.launched(cfg) if p.spec.load_done and p.index == 0]
        while True:
            dead = self._restart_or_fail(out, expected_done=False)
            if dead is not None:
                return dead
            now = time.monotonic()
            if self._signal is not None or self._stop_requested:
                break
            if duration and now - t0 >= duration:
                break
            if loads and all(done(cfg, self.ctl, len(self.slots), slot) for done, slot in loads):
                break
            if self._binds is not None:
                self._binds.poll()
            if self._disconnects is not None:
                self._disconnects.poll()
            last_progress = self._tick(last_progress, now, t0)
            time.sleep(0.02)
        self.ctl[cells.PHASE] = cells.PH_STOPPING
        # the stop chain: every child leaves by itself
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(ch.popen.poll() is None for ch in self.children) or self._recovering:
            dead = self._restart_or_fail(out, expected_done=True)
            if dead is not None:
                return dead
            if self.ctl[cells.PHASE] == cells.PH_ABORT:   # a second signal
                break
            if time.monotonic() > deadline:
                out.reason = f"the stop did not finish within {STOP_TIMEOUT_S} s"
                out.status, out.exit_code = "failed", 1
                self.ctl[cells.PHASE] = cells.PH_ABORT
                break
            now = time.monotonic()
            last_progress = self._tick(last_progress, now, t0)
            time.sleep(0.01)
        return self._dead(expected_done=True)

    def _tick(self, last_progress: float, now: float, t0: float) -> float:
        """Sample the children and show progress once a second; -> when it last did."""
        if now - last_progress < 1.0:
            return last_progress
        self._sample()
        if self.progress:
            self.progress(self, now - t0)
        return now

    def _fail(self, out: Outcome, dead: Child) -> None:
        rc = dead.popen.poll()
        out.status, out.exit_code = "failed", 1
        if not out.reason and rc == halt.HALT_STATUS:
            out.reason = (f"{dead.name} (pid {dead.pid}) halted: {halt.describe(self.cfg, self.ctl)}; "
                          f"engine stopped (a halted process is not restarted)")
        if not out.reason:
            out.reason = f"{dead.name} (pid {dead.pid}) died: {describe_status(rc)}; engine stopped"
        self.ctl[cells.PHASE] = cells.PH_ABORT

    def _finish_children(self, out: Outcome) -> None:
        grace = time.monotonic() + (ABORT_GRACE_S if self.ctl[cells.PHASE] == cells.PH_ABORT else STOP_TIMEOUT_S)
        while any(ch.popen.poll() is None for ch in self.children) and time.monotonic() < grace:
            self._sample()
            time.sleep(0.01)

    def _kill_all(self) -> None:
        for ch in self.children:
            if ch.popen is not None and ch.popen.poll() is None:
                ch.popen.kill()
        for ch in self.children:
            if ch.popen is not None:
                try:
                    ch.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

"""``shmex drill``: crash-recovery drill. Launch the engine under load, SIGKILL a randomly
chosen process at random moments K times, let the supervisor recover each time, finish
the load, then prove the outcome::

    shmex drill --kills 20 --seed 7 --targets matcher,wal,publisher,producer --json drill.json

Checks: (1) every command whose report (acknowledgment) a producer received is in the
WAL (``acked_lost``, and no (producer, pseq) logged twice: ``duplicates_applied``);
(2) a clean replay of the WAL gives the live matcher's final state_hash; (3) every
producer got a report for each command it submitted; (4) ``shmex verify`` passes;
(5) no shared-memory segment leaked. Exit 0 when all pass, 1 otherwise, 2 bad usage.

Targets come from the role registry (each role names its drill targets and their fault:
a plain SIGKILL, a SIGKILL while the process's fork runs, a SIGKILL after a torn write), plus
``standby``. They are picked from a fresh random permutation of ``--targets`` per round, so
K >= number of targets kills each at least once. Kills are by pid (the supervisor's Popen),
never by name. ``producer`` kills one load producer: the supervisor restarts it and the
new process continues its pseq from its input ring (new client ids); the other
producers are not touched. ``snapshot`` kills the matcher while its forked snapshot
writer is running (falls back to any moment after 5 s). ``walwriter`` (alias ``wal``)
kills the WAL writer. ``hang`` stops the matcher (SIGSTOP): alive, silent; the
supervisor's watchdog must take it for hung after ``--heartbeat-timeout`` and restart
it. ``torn`` stops the WAL writer
(SIGSTOP), writes a torn record (garbage that fails its CRC) right after the last intact
record of the log, then SIGKILLs it: its successor must cut that tail and go on.
``gateway`` kills the OUCH gateway; the drill then runs one with a TCP member
(`bench.tcp_member`, user dave, 2,000 orders/s) that reconnects after each kill, asks for
the message after the last it read and resends what had no answer: every order it saw
Accepted must be in the WAL exactly once, none answered twice, none left unanswered.
``feed`` kills the ITCH feed; the drill then runs one with a subscriber (`net.subscriber`)
from the start: (6) what the subscriber received, re-requests included, must be the feed
file message for message, and the file what ``shmex feed`` regenerates from the WAL.
``standby`` kills the supervisor's warm standby (`standby.py`): it must be replaced.
``client`` kills a client of the client API mid-submit: the drill runs one on the
engine's client slot from the start (`bench.api_member`, its own process, 2,000
orders/s in batches of 8, always with commands sent and not yet answered) and SIGKILLs
it; the next one connects to the slot (a new session) and must get answers. Every
command a session saw answered must be in the WAL once; each killed session must be
closed by one CANCEL_ALL right after its last command (cancel-on-disconnect); no order
of the member is rejected; the last session, stopped by SIGTERM, has every order
answered. Its ``recovery_ms`` is from the kill to the next session's first answer.
``syncerror`` makes the WAL writer's next fdatasync fail with EIO (an injection hook that
exists only in a drill's engine: `registry.FAULTS_ENV`): the engine must halt with a line
naming the file and the errno, restart nothing, and have lost nothing acknowledged. It is
always the drill's last fault (the engine stops there): the other kills come first. The
checks after a halt are (1), (4) and (5), plus: the engine stopped with that line, no
successor was started, replay rebuilds the log up to the durable seq of the halt (the
live state_hash and (3) count commands that were never durable: they do not apply).

With the standby on (default; ``--no-standby`` turns it off), each kill waits (up to
120 s) until the supervisor has a ready standby, so every kill measures the takeover
(``--no-wait-standby``: kill when the gap says, with or without a ready standby); each
kill's ``path`` says whether the standby took the role or a plain child was spawned.

Throughput recovery, per kill (not a check: a figure). A thread samples the orders the
load producers got answered (C_ANSWERED) every 10 ms. The pre-kill level is the median
rate of the 0.25-s windows in the 2 s before the kill, leaving out windows that overlap
an earlier kill's outage (kill -> READY; None if no window is left); ``throughput_back_ms`` is
the time from the successor's READY to the end of the first 0.25-s window (sliding in
10 ms steps from READY) whose rate is >= 90% of that level (None if never, within the run);
``throughput_back_from_kill_ms`` is the same moment measured from the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from shmex.engine import cells, clientseg, registry


DRILL_MARK = ".shmex-drill"   # marks a directory the drill made (and may empty again)
STANDBY = "standby"       # the supervisor's warm spare: not a role, a drill target of its own
SYNC_TARGET = "syncerror"  # the fault that ends the drill: the engine must halt
CLIENT_TARGET = "client"    # a client-API member, killed mid-submit: not a role, a drill target of its own
CLIENT_RATE = 2000.0        # the client member's orders/s
GATEWAY_TARGET = "gateway"  # brings the gateway and a TCP member (`bench.tcp_member`) into the run
FEED_TARGET = "feed"        # brings the feed and a subscriber into the run
MEMBER_RATE = 2000.0        # the member's orders/s
HALT_WAIT_S = 30.0         # how long a failed sync may take to halt the engine under load
STANDBY_WAIT_S = 120.0   # generous for a loaded CI box (the standby warms up at nice 19)
SAMPLE_S = 0.01            # throughput sampling period
WINDOW_S = 0.25            # throughput window
BEFORE_S = 2.0             # pre-kill level: the windows in this span before the kill
BACK_FRACTION = 0.9        # "back": a window at >= this fraction of the pre-kill level


def targets() -> list[str]:
    return list(registry.drill_targets()) + [STANDBY, CLIENT_TARGET]


def add_arguments(p) -> None:
    p.add_argument("--kills", type=int, default=10, metavar="K")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--targets", default="matcher,walwriter,publisher,producer",
                   help=f"comma list of {', '.join(targets())}")
    p.add_argument("--orders", type=int, default=200_000, metavar="M",
                   help="orders at least (the load goes on until every kill has recovered)")
    p.add_argument("--rate", type=float, default=40_000, help="offered orders/s over all producers")
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--durability", choices=("none", "group", "always"), default="group")
    p.add_argument("--snapshot-every", type=int, default=50_000, metavar="N")
    p.add_argument("--segment-bytes", type=int, default=4 << 20, metavar="B",
                   help="WAL segment size (default 4 MiB: rotations during the drill)")
    p.add_argument("--gap", type=float, nargs=2, default=(0.2, 1.0), metavar=("MIN_S", "MAX_S"),
                   help="random wait between a recovery and the next kill")
    p.add_argument("--data-dir", metavar="DIR", help="log directory (emptied first; default a temp dir, removed)")
    p.add_argument("--no-standby", action="store_true",
                   help="no warm standby: every restart spawns a fresh child")
    p.add_argument("--no-wait-standby", action="store_true",
                   help="kill without waiting for a ready standby (the kill may take the spawn path)")
    p.add_argument("--heartbeat-timeout", type=float, default=2.0, metavar="S",
                   help="the watchdog's bound (target hang: the stopped process is found after S seconds)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--quiet", action="store_true")


def _config(args):
    """The drill's engine: its own load and restart window, and every process a target needs."""
    from shmex.engine.config import EngineConfig

    clients = 1 if CLIENT_TARGET in args.target_list else 0     # the client member's slot
    ns = argparse.Namespace(producers=args.producers, clients=clients, symbols=4, orders=None, duration=None,
                            rate=args.rate, name=None, data_dir=args.data_dir, wait=None,
                            durability=args.durability, seed=args.seed,
                            snapshot_every=args.snapshot_every, capacity=1 << 20, publisher=None,
                            keep_snapshots=0,   # the whole log: check (1) reads every command
                            restarts=5, restart_window=10.0,   # a crash loop stops the drill
                            heartbeat_timeout=args.heartbeat_timeout,
                            segment_bytes=args.segment_bytes, no_standby=args.no_standby)
    cfg = EngineConfig.from_args(ns).replace(orders=None)   # the drill says when to stop
    wanted = [registry.drill_targets()[t][0] for t in args.target_list if t not in (STANDBY, CLIENT_TARGET)]
    if GATEWAY_TARGET in args.target_list:    # the gateway with a TCP member as its load
        cfg = cfg.replace(gateway="127.0.0.1:0")
    if FEED_TARGET in args.target_list:
        from shmex.engine.config import DEFAULT_FEED

        cfg = cfg.replace(feed=DEFAULT_FEED, feed_linger_s=10.0)
    if any(spec.processes(cfg) == 0 for spec in wanted):     # e.g. the publisher, inline by default
        cfg = cfg.replace(publisher_inline=False)
    return cfg


class FeedWatcher(threading.Thread):
    """A feed subscriber for the whole drill: every message it gets, in order."""

    def __init__(self, data_dir: str):
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.parts: list[bytes] = []
        self.stats = None
        self.error: str | None = None

    def run(self) -> None:
        from shmex.errors import CannotOpen
        from shmex.net.subscriber import Subscriber

        deadline = time.monotonic() + 600
        while True:
            try:
                sub = Subscriber.of_run(self.data_dir, idle_timeout=120)
                break
            except CannotOpen:
                if time.monotonic() > deadline:
                    self.error = "no feed info appeared"
                    return
                time.sleep(0.05)
        try:
            with sub:
                for _, block, _ in sub.blocks():
                    self.parts.append(block)
        except TimeoutError as e:
            self.error = str(e)
        self.stats = sub.stats

    def verdict(self, problems: list[str]) -> dict:
        from shmex.net.feedfile import paths

        live, _ = paths(self.data_dir)
        got = b"".join(self.parts)
        if self.is_alive() or self.error:
            problems.append(f"(6) the feed subscriber did not reach the end of session: {self.error or 'still waiting'}")
        with open(live, "rb") as f:
            same = f.read() == got
        if not same:
            problems.append(f"(6) the feed subscriber's {len(got):,} bytes differ from the feed file {live}")
        r = subprocess.run([sys.executable, "-m", "shmex.cli", "feed", self.data_dir], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"(6) shmex feed exited {r.returncode}: {(r.stdout + r.stderr).strip()[-400:]}")
        s = self.stats
        return {"subscriber_bytes": len(got), "equal_to_file": same, "regenerated_equal": r.returncode == 0,
                "gaps": s.gaps if s else None, "rerequests": s.rerequests if s else None,
                "duplicates": s.duplicates if s else None}


class Killer(threading.Thread):
    def __init__(self, sup, args, rng: random.Random, log):
        super().__init__(daemon=True)
        self.sup, self.args, self.rng, self.log = sup, args, rng, log
        self.kills: list[dict] = []
        self.error: str | None = None
        self.stop_flag = False
        self.torn = 0
        self.member = None                         # the TCP member, with a gateway
        self.client = None                         # the client-API member (`bench.api_member`)

    def _ctl(self, i: int) -> int:
        c = self.sup.ctl
        return int(c[i]) if c is not None else 0

    def _sent(self) -> int:
        c = self.sup.ctl
        return sum(int(c[self.sup.prod_cell(k, cells.C_SENT)]) for k in range(self.sup.cfg.producers))

    def _alive(self) -> bool:
        return not self.stop_flag and self.sup.ctl is not None and self._ctl(cells.PHASE) in (cells.PH_STARTING, cells.PH_RUNNING)

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - reported in the verdict
            self.error = f"killer: {type(e).__name__}: {e}"
        finally:
            if self.member is not None:           # its last orders answered before the stop
                self.member.finish()
            if self.client is not None:
                self.client.finish()
            self.sup.request_stop()

    def _run(self) -> None:
        while self.sup.ctl is None or self._ctl(cells.PHASE) == cells.PH_STARTING:
            if self.stop_flag or (self.sup.ctl is not None and self._ctl(cells.PHASE) >= cells.PH_STOPPING):
                return
            time.sleep(0.05)
        order: list[str] = []
        for i in range(self.args.kills):
            if not order:
                order = list(self.args.target_list)
                self.rng.shuffle(order)
            target = order.pop()
            if i == self.args.kills - 1 and SYNC_TARGET in self.args.target_list:
                target = SYNC_TARGET             # the last fault: the engine stops there
            elif target == SYNC_TARGET:
                target = order.pop() if order else self._other_target()
            time.sleep(self.rng.uniform(*self.args.gap))
            if self.sup.use_standby and (target == STANDBY or not self.args.no_wait_standby):
                self._wait_standby()
            if not self._alive():
                self.error = f"the engine stopped before kill {i + 1}"
                return
            if target in (STANDBY, CLIENT_TARGET):
                k = self._kill_standby() if target == STANDBY else self._kill_client()
                if k is None:
                    return
                self.kills.append(k)
                self.log(f"drill: kill {i + 1}/{self.args.kills}: {target} (pid {k['pid']}) at seq "
                         f"{k['at_seq']:,}: {k['path']} pid {k['new_pid']} ready in {k['recovery_ms']:.0f} ms")
                continue
            ch, fault = self._pick(target)
            if fault == registry.SYNC_ERROR:
                self.kills.append(self._fail_sync(ch))
                return
            sb = self.sup.standby
            sb_pid = sb.pid if sb is not None and sb.ready else 0
            if fault == registry.KILL_IN_FORK:
                self._wait_snapshot_child(ch)
            elif fault == registry.KILL_TEAR_WAL:
                ch.popen.send_signal(signal.SIGSTOP)
                self._tear_tail()
            at_seq = self._ctl(cells.MATCHER_SEQ)
            pid = ch.pid
            n_before = len(self.sup.restarts)
            # by pid, through our Popen (never a reused pid)
            ch.popen.send_signal(signal.SIGSTOP if fault == registry.HANG else signal.SIGKILL)
            t_kill = time.monotonic()
            ev = self._wait_recovered(pid, n_before)
            if ev is None:
                return
            k = {"target": target, "process": ch.name, "pid": pid, "at_seq": at_seq,
                 "recovery_ms": ev["recovery_ms"], "path": ev["path"], "new_pid": ev["new_pid"],
                 "standby_pid": sb_pid, "t_kill": t_kill, "t_ready": ev["ready_s"]}
            self.kills.append(k)
            self.log(f"drill: kill {i + 1}/{self.args.kills}: {target} ({ch.name}, pid {pid}) at seq "
                     f"{at_seq:,}: recovered in {ev['recovery_ms']:.0f} ms ({ev['path']}, pid {ev['new_pid']})")
        # the load goes on: the orders asked for, and long enough after the last recovery
        # for its throughput to be measured
        hold = time.monotonic() + BEFORE_S + WINDOW_S
        while self._alive() and (self._sent() < self.args.orders or time.monotonic() < hold):
            time.sleep(0.05)

    def _other_target(self) -> str:
        return self.rng.choice([t for t in self.args.target_list if t != SYNC_TARGET])

    def _fail_sync(self, ch) -> dict:
        """Fail the WAL writer's next fdatasync (FAULT_SYNC); wait until the engine stops.
        Mode none syncs only when it seals: the load is then stopped, so that it does."""
        at_seq, durable = self._ctl(cells.MATCHER_SEQ), self._ctl(cells.DURABLE_SEQ)
        self.sup.ctl[cells.FAULT_SYNC] += 1
        t_fault = time.monotonic()
        self.log(f"drill: fault {len(self.kills) + 1}/{self.args.kills}: syncerror ({ch.name}, pid {ch.pid}) at "
                 f"seq {at_seq:,} (durable {durable:,}): its next fdatasync fails with EIO")
        deadline = t_fault + (0.0 if self.args.durability == "none" else HALT_WAIT_S)
        while self._alive() and self._ctl(cells.WAL_DONE) != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.sup.request_stop()
        return {"target": SYNC_TARGET, "process": ch.name, "pid": ch.pid, "at_seq": at_seq,
                "durable_seq": durable, "recovery_ms": None, "path": "halt", "new_pid": 0,
                "standby_pid": 0, "t_kill": t_fault, "t_ready": None}

    def _wait_standby(self) -> None:
        """Until the supervisor has a ready standby (bounded: a kill then takes the spawn path)."""
        deadline = time.monotonic() + STANDBY_WAIT_S
        while self._alive() and time.monotonic() < deadline:
            sb = self.sup.standby
            if sb is not None and sb.ready:
                return
            time.sleep(0.01)

    def _kill_standby(self) -> dict | None:
        """SIGKILL the ready standby; wait until a new one is ready."""
        sb = self.sup.standby
        if sb is None or not sb.ready:
            self.error = f"no ready standby to kill within {STANDBY_WAIT_S:.0f} s"
            return None
        pid, at_seq = sb.pid, self._ctl(cells.MATCHER_SEQ)
        sb.popen.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        deadline = t_kill + 120.0
        while time.monotonic() < deadline:
            new = self.sup.standby
            if new is not None and new.pid != pid and new.ready:
                return {"target": STANDBY, "process": STANDBY, "pid": pid, "at_seq": at_seq,
                        "recovery_ms": round((new.ready_s - t_kill) * 1e3, 1), "path": "replaced",
                        "new_pid": new.pid, "standby_pid": pid, "t_kill": t_kill, "t_ready": None}
            if not self._alive():
                self.error = f"the engine stopped before the killed standby (pid {pid}) was replaced"
                return None
            time.sleep(0.01)
        self.error = f"the killed standby (pid {pid}) was not replaced by a ready one within 120 s"
        return None

    def _kill_client(self) -> dict | None:
        """SIGKILL the client member once its session trades; wait for the next session's first answer."""
        m = self.client
        if m.proc is None or m.first_ack_s(m.proc.pid, STANDBY_WAIT_S) is None:
            self.error = m.errors[-1] if m.errors else "the client member is not running"
            return None
        at_seq = self._ctl(cells.MATCHER_SEQ)
        k = m.kill(STANDBY_WAIT_S)
        if k is None:
            self.error = m.errors[-1]
            return None
        slot = clientseg.client_slots(self.sup.cfg)[0]
        return {"target": CLIENT_TARGET, "process": f"client-{slot}", "pid": k["pid"],
                "at_seq": at_seq, "recovery_ms": k["recovery_ms"], "path": "new session", "new_pid": k["new_pid"],
                "standby_pid": 0, "t_kill": k["t_kill"], "t_ready": None}

    def _tear_tail(self) -> None:
        """Write a torn record after the log's last intact record (the writer is stopped)."""
        from shmex.wal import WalReader
        from shmex.wal import layout as wal_layout

        time.sleep(0.005)
        r = WalReader(self.sup.cfg.data_dir)
        for _ in r.commands():
            pass
        end = r.end
        if not end.path or end.damage is not None:
            return
        size = os.path.getsize(end.path)
        if end.offset + wal_layout.SLOT_BYTES > size:
            return                                   # the segment is full: nothing to tear
        junk = bytes(self.rng.randrange(1, 256) for _ in range(wal_layout.SLOT_BYTES // 2))
        fd = os.open(end.path, os.O_WRONLY)
        try:
            os.pwrite(fd, junk, end.offset)          # half a record: a torn write
        finally:
            os.close(fd)
        self.torn += 1

    def _pick(self, target: str):
        """-> (one of the target role's processes, at random; the fault kind)."""
        spec, fault = registry.drill_targets()[target]
        return self.rng.choice([c for c in self.sup.children if c.role == spec.name]), fault

    def _wait_snapshot_child(self, ch, timeout_s: float = 5.0) -> None:
        import psutil

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if psutil.Process(ch.pid).children():
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(0.001)

    def _wait_recovered(self, pid: int, n_before: int, timeout_s: float = 300.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ev in self.sup.restarts[n_before:]:
                if ev["pid"] == pid and ev["recovery_ms"] is not None:
                    return ev
            if self.sup.ctl is None or self._ctl(0) == 3:   # aborted
                self.error = f"the engine stopped while pid {pid} was being recovered"
                return None
            time.sleep(0.01)
        self.error = f"pid {pid} not recovered within {timeout_s:.0f} s"
        return None


class Sampler(threading.Thread):
    """Orders answered (all load producers) every SAMPLE_S while the load runs, read from
    a mapping of the control segment of its own (the supervisor unmaps its own at the end)."""

    def __init__(self, sup):
        super().__init__(daemon=True)
        self.sup = sup
        self.t: list[float] = []
        self.n: list[int] = []
        self.stop_flag = False

    def run(self) -> None:
        from shmex.errors import ShmexError
        from shmex.engine.ctl import Ctl

        while self.sup.ctl is None:
            if self.stop_flag:
                return
            time.sleep(0.01)
        cfg = self.sup.cfg
        try:
            ctl = Ctl.attach(cfg.run_id)
        except (ShmexError, OSError):
            return          # the run is over already
        a = ctl.a
        answered = [ctl.prod_cell(k, cells.C_ANSWERED) for k in range(cfg.producers)]
        try:
            while not self.stop_flag:
                ph = int(a[cells.PHASE])
                if ph == cells.PH_RUNNING:
                    self.t.append(time.monotonic())
                    self.n.append(int(sum(int(a[c]) for c in answered)))
                elif ph > cells.PH_RUNNING:
                    break
                time.sleep(SAMPLE_S)
        finally:
            del a
            ctl.close()


def throughput(t: list[float], n: list[int], t_kill: float, t_ready: float | None,
               outages: list[tuple[float, float]] = ()) -> tuple:
    """(pre-kill orders/s, back ms after READY, back ms after the kill) by the rule in this
    module's docstring; `outages`: (kill, READY) of the earlier kills."""
    import numpy as np

    if len(t) < 2:
        return None, None, None
    ts, ns = np.asarray(t), np.asarray(n, dtype=np.float64)

    def rate(a):
        return (np.interp(a + WINDOW_S, ts, ns) - np.interp(a, ts, ns)) / WINDOW_S

    lo = max(t_kill - BEFORE_S, ts[0])
    starts = np.arange(lo, t_kill - WINDOW_S + 1e-9, WINDOW_S)
    for a, b in outages:
        starts = starts[(starts + WINDOW_S <= a) | (starts >= b)]
    if len(starts) == 0:
        return None, None, None
    level = float(np.median(rate(starts)))  # a measurement, off the trade path
    if t_ready is None or level <= 0:
        return level, None, None
    after = np.arange(t_ready, ts[-1] - WINDOW_S + 1e-9, SAMPLE_S)
    ok = np.nonzero(rate(after) >= BACK_FRACTION * level)[0] if len(after) else []
    if not len(ok):
        return level, None, None
    end = after[ok[0]] + WINDOW_S
    return level, float(round((end - t_ready) * 1e3, 1)), float(round((end - t_kill) * 1e3, 1))


def _wal_pairs(data_dir: str, base: int):
    import numpy as np

    from shmex.wal import WalReader

    prods, pseqs, kinds = [], [], []
    r = WalReader(data_dir)
    for cmds in r.commands(base + 1):
        prods.append(cmds["producer"].astype(np.int64))
        pseqs.append(cmds["pseq"].astype(np.int64))
        kinds.append(cmds["kind"].astype(np.int64))
    if not prods:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(prods), np.concatenate(pseqs), np.concatenate(kinds)


def _member_check(cfg, m, data: str, base: int, problems: list[str]) -> dict:
    """The TCP member's view: every order it saw Accepted is a NEW command of its user in
    the WAL, none is logged twice, none was answered twice, every order was answered, and
    each resumed stream went on at the number asked for."""
    import numpy as np

    from shmex.net.users import load as load_users
    from shmex.wal import WalReader

    u = next(x.index for x in load_users(cfg.users_path) if x.name == m.user)
    cids = []
    for cmds in WalReader(data).commands(base + 1):
        mine = cmds[(cmds["producer"] == cfg.gateway_slot + 1) & (cmds["kind"] == 1)]
        cids.append(mine["client_id"].astype(np.int64))
    logged = np.concatenate(cids) if cids else np.zeros(0, np.int64)
    urns = logged[(logged >> 32) == u] & 0xFFFFFFFF
    lost = sorted(set(m.acked) - set(int(x) for x in urns))
    twice_logged = int(len(urns) - len(np.unique(urns)))
    unanswered = m.unanswered
    if lost:
        problems.append(f"(1) tcp: {len(lost)} orders the member saw Accepted are not in the WAL: {lost[:5]}")
    if twice_logged:
        problems.append(f"(1) tcp: {twice_logged} of the member's orders were logged twice")
    if m.twice:
        problems.append(f"(1) tcp: {len(m.twice)} orders were answered twice: {m.twice[:5]}")
    if unanswered:
        problems.append(f"(3) tcp: {len(unanswered)} of {m.sent} orders got no answer: {unanswered[:5]}")
    if m.errors:
        problems.append(f"tcp: {m.errors[0]}")
    return {"user": m.user, "sent": m.sent, "acked": len(m.acked), "logged": int(len(urns)),
            "reconnects": m.reconnects, "acked_lost": len(lost), "answered_twice": len(m.twice),
            "unanswered": len(unanswered)}


def _client_check(cfg, member, prods, pseqs, kinds, problems: list[str]) -> dict:
    """The client member's sessions against the WAL: every answered command logged once,
    each killed session closed by one CANCEL_ALL right after its last command, the next
    session answered, no order rejected, the last session's orders all answered."""
    import numpy as np

    from shmex.bench.api_member import sessions
    from shmex.schema import K_CANCEL_ALL

    mine = prods == clientseg.client_slots(cfg)[0] + 1     # a slot's producer id is the slot + 1
    pseqs = pseqs[mine]
    cancel_alls = pseqs[kinds[mine] == K_CANCEL_ALL]
    ss = sessions(member.log_path)
    acked = set().union(*(s.acked for s in ss)) if ss else set()
    lost = sorted(acked - set(pseqs.tolist()))
    twice = int(len(pseqs) - len(np.unique(pseqs)))
    killed = closed = mid_submit = in_flight = 0
    lo = 1                                  # the session's first pseq (the slot's sequence goes on)
    for s, nxt in zip(ss, ss[1:]):
        hi = nxt.first or (int(pseqs.max()) + 1 if len(pseqs) else 1)   # the next session's first
        own, lo = pseqs[(pseqs >= lo) & (pseqs < hi)], hi
        if s.end:
            continue                        # it ended by itself (it was not killed)
        killed += 1
        ca = own[np.isin(own, cancel_alls)]
        if len(ca) == 1 and int(ca[0]) == hi - 1 and nxt.first:
            closed += 1
        else:
            problems.append(f"client: the session of pid {s.pid} (pseq {s.first}..) was closed by "
                            f"{len(ca)} CANCEL_ALLs at {ca[:3].tolist()}, want one at pseq {hi - 1}")
        orders = own[~np.isin(own, ca)]
        mid_submit += bool((orders > s.last).any())     # published by the submit the kill cut short
        in_flight += int((orders > max(s.acked, default=0)).sum())
        if not nxt.acked:
            problems.append(f"client: the session after the kill of pid {s.pid} (pid {nxt.pid}) got no answer")
    if lost:
        problems.append(f"(1) client: {len(lost)} commands the member saw answered are not in the WAL: {lost[:5]}")
    if twice:
        problems.append(f"(1) client: {twice} of the member's commands were logged twice")
    rejected = [r for s in ss for r in s.rejected]
    if rejected:
        problems.append(f"client: {len(rejected)} of the member's orders were rejected (reason, pseq): {rejected[:5]}")
    if not ss:
        problems.append(f"client: the member never connected: {member._stderr_tail()}")
    elif ss[-1].end.split()[::2] != ["done", "0"]:
        problems.append(f"(3) client: the last session (pid {ss[-1].pid}) ended {ss[-1].end or 'killed'!r}: "
                        f"want 'done SENT 0' (every order answered)")
    problems += [f"client: {e}" for e in member.errors]
    return {"sessions": len(ss), "sent": int(len(pseqs) - len(cancel_alls)), "acked": len(acked),
            "killed": killed, "closed": closed, "killed_mid_submit": mid_submit, "in_flight_at_kill": in_flight,
            "cancel_alls": int(len(cancel_alls)), "acked_lost": len(lost), "logged_twice": twice,
            "rejected": len(rejected)}


def _percentiles(xs: list[float]) -> dict:
    import numpy as np

    if not xs:
        return {}
    a = np.asarray(xs, dtype=float)
    return {"n": len(xs), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def main(args) -> int:
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in args.target_list if t not in targets()]
    if STANDBY in args.target_list and args.no_standby:
        print("drill: --targets standby needs the standby (drop --no-standby)", file=sys.stderr)
        return 2
    if bad or not args.target_list or args.kills < 0 or args.producers < 1:
        print(f"drill: --targets {args.targets!r}: want a comma list of {', '.join(targets())}; "
              f"--kills >= 0; --producers >= 1", file=sys.stderr)
        return 2
    if SYNC_TARGET in args.target_list and (args.kills < 1 or (args.kills > 1 and args.target_list == [SYNC_TARGET])):
        print(f"drill: --targets {SYNC_TARGET} ends the drill (the engine halts): it is the last of "
              f"--kills K >= 1 faults, and the K - 1 before it need another target", file=sys.stderr)
        return 2
    if SYNC_TARGET in args.target_list:
        os.environ[registry.FAULTS_ENV] = "1"    # the engine's children inherit it: the hook exists
    tmp = client_dir = None
    if args.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="shmex-drill-")
        args.data_dir = tmp
    elif os.path.isdir(args.data_dir) and os.listdir(args.data_dir) and \
            not os.path.exists(os.path.join(args.data_dir, DRILL_MARK)):
        print(f"drill: --data-dir {args.data_dir}: not empty and not a drill's directory (no {DRILL_MARK}); "
              f"the drill empties its directory, so give it an empty or a drill's one", file=sys.stderr)
        return 2
    from shmex.engine.machine import describe
    from shmex.files import make_private_dir
    from shmex.recovery.recover import remove_log
    from shmex.engine.ctl import load_hash
    from shmex.engine.supervisor import Supervisor
    from shmex.shm.names import PREFIX, SHM_DIR

    def log(msg):
        if not args.quiet:
            print(msg, flush=True)

    try:
        cfg = _config(args)
        remove_log(cfg.data_dir)
        make_private_dir(cfg.data_dir)
        os.close(os.open(os.path.join(cfg.data_dir, DRILL_MARK), os.O_WRONLY | os.O_CREAT, 0o600))
        log(f"drill: run {cfg.run_id}, {args.kills} kills of {','.join(args.target_list)}, seed {args.seed}, "
            f">= {args.orders:,} orders at {args.rate:,.0f}/s, {args.producers} producers, durability "
            f"{args.durability}, data {cfg.data_dir}; warming up...")
        sup = Supervisor(cfg)
        killer = Killer(sup, args, random.Random(args.seed), log)
        sampler = Sampler(sup)
        if cfg.gateway is not None:
            from shmex.bench.tcp_member import Member

            killer.member = Member(cfg.data_dir, cfg.run_id, "dave", "dave1", MEMBER_RATE)
            killer.member.start()
        if CLIENT_TARGET in args.target_list:
            from shmex.bench.api_member import ApiMember

            client_dir = tempfile.mkdtemp(prefix="shmex-drill-client-")
            killer.client = ApiMember(cfg.run_id, os.path.join(client_dir, "member.log"), CLIENT_RATE)
            killer.client.start()
        watcher = FeedWatcher(cfg.data_dir) if cfg.feed is not None else None
        if watcher is not None:
            watcher.start()
        killer.start()
        sampler.start()
        t0 = time.monotonic()
        out = sup.run()
        killer.stop_flag = sampler.stop_flag = True
        killer.join(timeout=30)
        sampler.join(timeout=30)
        outages: list[tuple[float, float]] = []
        for k in killer.kills:
            k["orders_per_s_before"], k["throughput_back_ms"], k["throughput_back_from_kill_ms"] = throughput(
                sampler.t, sampler.n, k["t_kill"], k["t_ready"], outages)
            if k["t_ready"] is not None:
                outages.append((k["t_kill"], k["t_ready"]))
        wall = time.monotonic() - t0
        doc = _check(cfg, out, killer, args, wall, load_hash, PREFIX, SHM_DIR)
        if watcher is not None:
            watcher.join(timeout=120)
            doc["feed"] = watcher.verdict(doc["problems"])
            doc["passed"] = not doc["problems"]
        doc["machine"] = describe()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if client_dir is not None:
            shutil.rmtree(client_dir, ignore_errors=True)
    _print_verdict(doc, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0 if doc["passed"] else 1


def _check(cfg, out, killer, args, wall, load_hash, PREFIX, SHM_DIR) -> dict:
    import numpy as np

    from shmex.recovery import recover as recovery

    data = cfg.data_dir
    ctl = out.ctl
    problems: list[str] = []
    halted = any(k["target"] == SYNC_TARGET for k in killer.kills)
    if halted:
        problems += _halt_problems(cfg, out)
    elif out.status != "ok":
        problems.append(f"engine: {out.status}: {out.reason}")
    if killer.error:
        problems.append(killer.error)
    if len(killer.kills) < args.kills:
        problems.append(f"only {len(killer.kills)} of {args.kills} kills were done")
    base = int(ctl[cells.RUN_BASE_SEQ]) if ctl is not None else 0
    prods, pseqs, kinds = _wal_pairs(data, base)
    key = prods * (1 << 40) + pseqs
    uniq = np.unique(key)
    duplicates = int(len(key) - len(uniq))
    acked_lost = 0
    unanswered = 0
    per_producer = []
    for k in range(cfg.producers):
        b = cells.prod_base(int(ctl[cells.CFG_PROC_SLOTS]), k) if ctl is not None else 0
        sent = int(ctl[b + cells.C_SENT]) if ctl is not None else 0
        answered = int(ctl[b + cells.C_ANSWERED]) if ctl is not None else 0
        last_ans = int(ctl[b + cells.C_LAST_ANSWERED]) if ctl is not None else 0
        mine = np.unique(pseqs[prods == k + 1])
        have = np.isin(np.arange(1, last_ans + 1), mine).sum() if last_ans else 0
        acked_lost += last_ans - int(have)
        missing_sent = sent - int(np.isin(np.arange(1, sent + 1), mine).sum())
        unanswered += max(0, sent - answered)
        per_producer.append({"producer": k, "sent": sent, "answered": answered, "last_answered": last_ans,
                             "logged": int(len(mine)), "sent_not_logged": missing_sent})
    member = _member_check(cfg, killer.member, data, base, problems) if killer.member is not None else None
    client = _client_check(cfg, killer.client, prods, pseqs, kinds, problems) if killer.client is not None else None
    if acked_lost:
        problems.append(f"(1) {acked_lost} acknowledged commands are not in the WAL")
    if duplicates:
        problems.append(f"(1) {duplicates} commands were logged (applied) twice")
    live = load_hash(ctl) if ctl is not None else ""
    try:
        r = recovery.recover(data)
        replay = r.matcher.state_hash()
        if r.damage:
            problems.append(f"(2) replay stopped at damage: {r.damage}")
        if halted and ctl is not None and r.last_seq != int(ctl[cells.DURABLE_SEQ]):
            problems.append(f"(2) replay reached seq {r.last_seq}, the halt left the log durable up to "
                            f"{int(ctl[cells.DURABLE_SEQ])}")
    except Exception as e:  # noqa: BLE001
        replay = ""
        problems.append(f"(2) replay failed: {e}")
    if live != replay and not halted:
        problems.append(f"(2) live state_hash {live} != replay {replay}")
    # a halted engine answers nothing after its durable seq: (3) does not apply to it
    if not halted and (unanswered or any(p["sent_not_logged"] for p in per_producer)):
        problems.append(f"(3) {unanswered} submitted commands got no report "
                        f"({sum(p['sent_not_logged'] for p in per_producer)} not logged)")
    v = subprocess.run([sys.executable, "-m", "shmex.cli", "verify", data], capture_output=True, text=True)
    if v.returncode != 0:
        problems.append(f"(4) shmex verify exited {v.returncode}: {(v.stdout + v.stderr).strip()[-400:]}")
    left = sorted(e for e in os.listdir(SHM_DIR) if e.startswith(f"{PREFIX}{cfg.run_id}-"))
    leaked = sorted(set(left) | set(out.leaked))
    if leaked:
        problems.append(f"(5) segments leaked: {leaked}")
    by_target: dict[str, list[float]] = {}
    back: dict[str, list[float]] = {}
    back_kill: dict[str, list[float]] = {}
    for k in killer.kills:
        if k["recovery_ms"] is None:
            continue          # the sync error: a halt, not a recovery
        by_target.setdefault(k["target"], []).append(k["recovery_ms"])
        if k["throughput_back_ms"] is not None:
            for t in (k["target"], "all"):
                back.setdefault(t, []).append(k["throughput_back_ms"])
                back_kill.setdefault(t, []).append(k["throughput_back_from_kill_ms"])
    never = [i + 1 for i, k in enumerate(killer.kills) if k["target"] != STANDBY and k["t_ready"] is not None
             and k["orders_per_s_before"] is not None and k["throughput_back_ms"] is None]
    return {
        "run_id": cfg.run_id, "seed": args.seed, "targets": args.target_list, "durability": args.durability,
        "kills": [{x: (round(v) if x == "orders_per_s_before" and v is not None else v)
                   for x, v in k.items() if x not in ("t_kill", "t_ready")} for k in killer.kills],
        "standby": out.standby, "standby_on": bool(cfg.standby),
        "restarts": [{x: v for x, v in e.items() if x not in ("died_s", "ready_s")} for e in out.restarts],
        "recovery_ms": {t: _percentiles(v) for t, v in sorted(by_target.items())},
        "throughput_back_ms": {t: _percentiles(v) for t, v in sorted(back.items())},
        "throughput_back_from_kill_ms": {t: _percentiles(v) for t, v in sorted(back_kill.items())},
        "throughput_never_back": never,
        "throughput_rule": (f"pre-kill level: median orders/s answered over the {int(BEFORE_S / WINDOW_S)} "
                            f"{WINDOW_S:g}-s windows in the {BEFORE_S:g} s before the kill; back: end of the first "
                            f"{WINDOW_S:g}-s window after READY (sliding {SAMPLE_S * 1e3:g} ms) at >= "
                            f"{BACK_FRACTION:.0%} of it, measured from READY"),
        "torn_records_written": killer.torn, "halted": halted,
        "acked_lost": acked_lost, "duplicates_applied": duplicates,
        "state_hash_live": live, "state_hash_replay": replay, "verify_exit": v.returncode,
        "segments_leaked": leaked, "orders": int(sum(p["sent"] for p in per_producer)),
        "tcp_member": member, "client_member": client,
        "last_seq": int(ctl[cells.MATCHER_SEQ]) if ctl is not None else 0,
        "producers": per_producer, "engine_status": out.status, "engine_reason": out.reason,
        "seconds": round(wall, 2), "problems": problems, "passed": not problems,
    }


def _halt_problems(cfg, out) -> list[str]:
    """After the "sync error" fault: the engine stopped on the WAL writer's halt, with a
    line naming the segment file and EIO, and no successor of the WAL writer was started."""
    from shmex.engine import halt

    role = registry.drill_targets()[SYNC_TARGET][0].name
    problems = []
    if out.status != "failed" or "halted" not in out.reason:
        problems.append(f"syncerror: the engine did not halt: {out.status}: {out.reason}")
    elif "fdatasync" not in out.reason or "EIO" not in out.reason or cfg.data_dir not in out.reason:
        problems.append(f"syncerror: the halt does not name the fdatasync, the file and EIO: {out.reason}")
    again = [e for e in out.restarts if e["role"] == role and e["reason"] == f"exit status {halt.HALT_STATUS}"]
    if again:
        problems.append(f"syncerror: the halted {role} was restarted (pid {again[0]['new_pid']})")
    return problems


def _print_verdict(doc: dict, log) -> None:
    print(f"drill {doc['run_id']}: {len(doc['kills'])} kills, {doc['orders']:,} orders, last seq "
          f"{doc['last_seq']:,}, {doc['seconds']:.1f} s ({doc['machine']})")
    for i, k in enumerate(doc["kills"]):
        if k["target"] == SYNC_TARGET:
            print(f"  fault {i + 1:>2}: {k['target']:<9} {k['process']:<11} at seq {k['at_seq']:>10,}: its next "
                  f"fdatasync failed (durable {k['durable_seq']:,}); engine: {doc['engine_reason']}")
            continue
        rate = k.get("orders_per_s_before")
        tb = k.get("throughput_back_ms")
        tput = ("" if k["target"] in (STANDBY, CLIENT_TARGET) else   # the load producers were not touched
                f"; {rate:,.0f} orders/s before, back to >= {BACK_FRACTION:.0%} "
                + (f"{tb:,.0f} ms after READY ({k['throughput_back_from_kill_ms']:,.0f} ms after the kill)"
                   if tb is not None else "never (within the run)")
                if rate is not None else "; throughput: no clean window before the kill")
        print(f"  kill {i + 1:>2}: {k['target']:<9} {k['process']:<11} at seq {k['at_seq']:>10,}: recovered in "
              f"{k['recovery_ms']:>6,.0f} ms ({k['path']}){tput}")
    if doc.get("tcp_member"):
        m = doc["tcp_member"]
        print(f"  tcp member {m['user']}: {m['sent']:,} orders, {m['acked']:,} accepted, {m['logged']:,} in the WAL, "
              f"{m['reconnects']} reconnects; lost {m['acked_lost']}, answered twice {m['answered_twice']}, "
              f"unanswered {m['unanswered']}")
    if doc.get("client_member"):
        c = doc["client_member"]
        print(f"  client member: {c['sessions']} sessions, {c['sent']:,} commands in the WAL, {c['acked']:,} "
              f"answered to it; {c['killed_mid_submit']} kills inside a submit, {c['in_flight_at_kill']} commands "
              f"unanswered at the kills; lost {c['acked_lost']}, closed by CANCEL_ALL {c['closed']} of "
              f"{c['killed']}")
    for t, p in doc["recovery_ms"].items():
        print(f"  recovery {t:<10} n={p['n']:<3} p50 {p['p50']:,.0f} ms  p90 {p['p90']:,.0f} ms  "
              f"max {p['max']:,.0f} ms")
    for t, p in doc["throughput_back_ms"].items():
        q = doc["throughput_back_from_kill_ms"][t]
        print(f"  throughput back {t:<10} n={p['n']:<3} after READY p50 {p['p50']:,.0f} ms  p90 {p['p90']:,.0f} ms  "
              f"max {p['max']:,.0f} ms; after the kill p50 {q['p50']:,.0f} ms  p90 {q['p90']:,.0f} ms  "
              f"max {q['max']:,.0f} ms")
    if doc["throughput_never_back"]:
        print(f"  throughput never back to {BACK_FRACTION:.0%} within the run after kills "
              f"{doc['throughput_never_back']}")
    print(f"  standby: {doc['standby'] if doc['standby_on'] else 'off'}")
    print(f"  (1) acknowledged commands lost: {doc['acked_lost']}; applied twice: {doc['duplicates_applied']}")
    if doc["halted"]:
        print(f"  (2) replay rebuilt the log up to the durable seq of the halt: state_hash {doc['state_hash_replay']}"
              f" (the live one counts commands never durable)")
        print("  (3) every submitted command answered: does not apply after a halt")
    else:
        print(f"  (2) state_hash live {doc['state_hash_live']}  replay {doc['state_hash_replay']}")
        print(f"  (3) every submitted command answered: "
              f"{all(p['answered'] >= p['sent'] for p in doc['producers'])}")
    print(f"  (4) shmex verify exit {doc['verify_exit']}")
    print(f"  (5) segments leaked: {len(doc['segments_leaked'])}")
    f = doc.get("feed")
    if f:
        print(f"  (6) feed: the subscriber got {f['subscriber_bytes']:,} bytes, equal to the feed file: "
              f"{f['equal_to_file']}; regenerated from the WAL equal: {f['regenerated_equal']} "
              f"({f['gaps']} gaps, {f['rerequests']} re-requests, {f['duplicates']} duplicates)")
    for pr in doc["problems"]:
        print(f"  FAILED: {pr}")
    print(f"  verdict: {'PASSED' if doc['passed'] else 'FAILED'}")

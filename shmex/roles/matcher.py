"""The matcher process: the sequencer and the only owner of the book.

Duty cycle: take up to BATCH commands from the input rings (round robin, a fair share
each), stamp seq/engine_ns and match them (`Matcher.process_into`), forward the stamped
commands to the journal ring, the reports to the out ring, then release input-ring
slots whose commands are durable.

- Matching never waits for the disk; only the release of results does (publisher).
- Input slots are released only when DURABLE_SEQ covers them (`released` is the
  retransmission point a restarted matcher resumes from; the WAL skips via pseq).
- Snapshots every `snapshot_every` commands: fork(), the child writes the book as it
  was at that seq (copy-on-write) and exits; the parent's pause is the fork itself,
  measured and kept in SNAP_PAUSE_MAX_NS. A final snapshot is written at a clean stop.
- Stop: when STOPPING, every load producer has finished sending and the rings are
  empty, it waits for DURABLE_SEQ to reach its last seq, snapshots, stores the state
  hash and MATCHER_DONE.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from shmex.matcher import Matcher
from shmex.matcher.book import FIELDS
from shmex.engine import cells
from shmex.roles import matcher_duty, publisher, views
from shmex.engine.ctl import Aborted, Backoff, Ctl, shares_core
from shmex.ring import Ring
from shmex.schema import COMMAND, REPORT, commands
from shmex.recovery import recover as recovery
from shmex.snapshot import store

BATCH = 4096
DUTY_BUDGET_NS = 20_000_000  # back to Python (heartbeat, phase, snapshot reaping) at least this often (~11 us a return)
POLL_NS = 20_000             # idle: spin this long on a core of its own, then sched_yield
IDLE_NS = 1_000_000          # idle this long inside the duty call, then Python's Backoff naps


def _warm(m: Matcher) -> None:
    """Compile/load the matching kernel on a scratch book of the same shape."""
    scratch = Matcher(symbols=1, price_lo=1, price_hi=100, capacity=16)
    c = commands(2)
    c["kind"], c["side"], c["order_type"], c["tif"] = 1, [1, 2], 1, 1
    c["producer"], c["client_id"], c["price"], c["qty"] = 1, [1, 2], 50, 1
    scratch.process_into(c)
    scratch.state_hash()
    # the duty cycle, on scratch rings (a standby calls this before it has a role)
    matcher_duty.warm(scratch.book, scratch._out, commands(4))


def _prefault(m: Matcher) -> None:
    """Fault in every page of the book's preallocated arrays and the report buffer
    (`prefault`): the arena (1M orders by default) would otherwise be faulted in as orders
    first land in it, which shows as resident memory growing for minutes (2 MiB at a
    time per arena column where the kernel backs numpy's large arrays with huge pages)
    and as page-fault stalls on the matching path."""
    prefault(list(m.book) + [m._out])


def prefault(arrays) -> None:
    """Write every page of each large C-contiguous array back with its own bytes.

    The bytes go through a copy: numpy treats ``v[::4096] = v[::4096]`` (the same
    memory, the same strides) as a no-op and writes nothing, so a zero-filled array from
    calloc would stay unmapped."""
    for arr in arrays:
        if isinstance(arr, np.ndarray) and arr.nbytes >= 4096 and arr.flags.c_contiguous:
            v = arr.reshape(-1).view(np.uint8)
            v[::4096] = v[::4096].copy()


class MatcherAgent:
    def __init__(self, cfg, ctl: Ctl):
        run_id = cfg.run_id
        self.cfg, self.ctl = cfg, ctl
        P = cfg.producer_slots
        w = cfg.wait["matcher"]
        self.ins = [Ring.attach(Ring.name_for(run_id, cells.in_role(k)), COMMAND, side="consumer", wait=w)
                    for k in range(P)]
        self.journal = Ring.attach(Ring.name_for(run_id, "journal"), COMMAND, side="producer", wait=w)
        self.out = Ring.attach(Ring.name_for(run_id, "out"), REPORT, side="producer", wait=w)
        self.buf = commands(BATCH)
        self._resume(cfg, ctl)
        _warm(self.m)
        _prefault(self.m)
        from shmex.engine.latency import hist_views, stage_row
        from shmex.shm.segment import Segment

        self._hseg = Segment.attach(Ring.name_for(run_id, "hist"), layout="hist")
        _, stages, _ = hist_views(self._hseg, P)
        self.h_to_matcher = stages[stage_row(P, "to_matcher")]
        del stages
        self.share = max(64, BATCH // max(P, 1))
        self._duty_arrays(P)
        self.snap_dir = recovery.snapshot_dir(cfg.data_dir)
        self.snap_every = int(cfg.snapshot_every)
        self.snap_keep = int(cfg.keep_snapshots) or None   # None: keep every one (retention off)
        self.snap_cores = cfg.snapshot_cores   # placement.snapshot_cores
        self.next_snap = next_snapshot_due(self.resumed.snapshot_seq, self.m.last_seq, self.snap_every)
        self.child = 0
        ctl.store(cells.MATCHER_SEQ, self.m.last_seq)

    def _resume(self, cfg, ctl: Ctl) -> None:
        """The book and the rings as a never-crashed matcher would leave them (`resume`):
        the book at the log's end, the out ring's missing reports queued (backlog), the
        input commands the WAL already holds released."""
        from shmex.recovery import resume

        r = resume.resume_book(cfg, ctl, self.journal, self.out, sum(x.capacity for x in self.ins))
        self.m = r.matcher
        self.backlog, self.blo = (r.backlog if len(r.backlog) else None), 0
        skipped = sum(resume.skip_logged(ring, int(r.last_pseq[k + 1]), self.buf)
                      for k, ring in enumerate(self.ins))
        self.resumed = r
        if r.durable > ctl.load(cells.RUN_BASE_SEQ) or skipped or len(r.backlog):
            resume.log(f"matcher: resumed at seq {r.durable:,} (snapshot {r.snapshot_seq:,}) in "
                  f"{r.seconds * 1e3:.0f} ms; {len(r.backlog):,} reports re-emitted from command "
                  f"{r.reemit_from:,}; {skipped:,} logged input commands skipped")

    def _drain_backlog(self) -> int:
        k = self.out.publish(self.backlog[self.blo:], wait=False)
        self.blo += k
        if self.blo >= len(self.backlog):
            self.backlog = None
        return k

    def _duty_arrays(self, P: int) -> None:
        """What `matcher_duty.duty` works on: the rings' arrays (views of their mappings,
        dropped in close()), the semaphore addresses it posts, the release FIFOs."""
        self.bufw = self.buf.view(np.uint64).reshape(BATCH, -1)
        self.in_rings = views.rings([r.arrays() for r in self.ins], [r.sem_addrs()[1] for r in self.ins])
        self.idents = slot_idents(self.cfg, self.ctl)
        self.journal_ring = views.Ring(*self.journal.arrays(), self.journal.sem_addrs()[0])
        self.out_ring = views.Ring(*self.out.arrays(), self.out.sem_addrs()[0])
        qcap = max(r.capacity for r in self.ins)
        self.pq = np.zeros((P, qcap, 2), dtype=np.int64)   # per ring: (last seq, read position)
        self.pqi = np.zeros((P, 2), dtype=np.int64)        # per ring: FIFO head, tail
        self.got = np.zeros(P, dtype=np.int64)
        self.ds = np.zeros(matcher_duty.S_CELLS, dtype=np.int64)
        prefault([self.pq])
        self.routing = publisher.routing_args(False)

    def attach_publisher(self, pub) -> None:
        """Route inline from the duty cycle: the inline publisher's routing (its arrays and state)."""
        self.routing = pub.routing

    def duty(self, idle_ns: int, poll_ns: int) -> int:
        """One `matcher_duty.duty` call, then what it asked Python for; -> RET_*."""
        m = self.m
        self.ds[matcher_duty.S_NEXT_SNAP] = self.next_snap
        out = m._out
        rc = matcher_duty.duty(m.book, out, m._outw, self.buf, self.bufw,
                    self.in_rings, self.idents, self.journal_ring, self.out_ring, self.ctl.a, self.h_to_matcher,
                    self.pq, self.pqi, self.got, self.ds, self.share, self.routing, DUTY_BUDGET_NS, poll_ns, idle_ns)
        if rc == matcher_duty.RET_SNAPSHOT:
            self.snapshot()
        elif rc == matcher_duty.RET_GROW:
            self._grow(int(self.ds[matcher_duty.S_GROW_AT]))
        if self.child:
            self._reap(block=False)
        return rc

    def _grow(self, i: int) -> None:
        """The report buffer cannot hold command i's worst case even empty: double it."""
        from shmex.matcher import _kernels as matcher_kernels

        m = self.m
        need = int(matcher_kernels._worst_case(m.book, self.buf[i]))
        m._out = np.zeros(max(2 * len(m._out), 1 << (need - 1).bit_length()), REPORT)

    def release_durable(self) -> None:
        r = self.in_rings
        matcher_duty.release_durable(self.ctl.load(cells.DURABLE_SEQ), r.ctls, r.locs, r.sems, self.pq, self.pqi)

    def snapshot(self) -> None:
        """Fork a child that writes the book as of now; the parent pays only the fork."""
        if self.child:
            self._reap(block=False)
            if self.child:           # the last one is still writing: try again later
                self.next_snap = self.m.last_seq + self.snap_every // 4
                return
        # the duty kernel stored it before the batch was journaled; this covers a snapshot
        # due on another path (a replicator that already shipped past it skips it)
        self.ctl.store(cells.SNAP_SEQ, self.m.last_seq)
        t0 = time.monotonic_ns()
        pid = os.fork()
        if pid == 0:                 # child: write and leave without running any cleanup
            code = 0
            try:
                _off_the_matchers_core(self.snap_cores)
                b = self.m.book
                state = {name: arr for name, arr in zip(FIELDS, b)}
                store.write_state(self.snap_dir, state, self.m.last_seq, self.m.state_hash(),
                                  keep=self.snap_keep, pause=os.sched_yield)
            except BaseException as e:  # noqa: BLE001 - report and exit non-zero, never return
                print(f"matcher snapshot child: {e}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        pause = time.monotonic_ns() - t0
        a = self.ctl.a
        a[cells.SNAPSHOTS] += 1
        if pause > a[cells.SNAP_PAUSE_MAX_NS]:
            a[cells.SNAP_PAUSE_MAX_NS] = pause
        self.child = pid
        self.next_snap = self.m.last_seq + self.snap_every

    def _reap(self, block: bool) -> None:
        pid, status = os.waitpid(self.child, 0 if block else os.WNOHANG)
        if pid:
            self.child = 0
            if status != 0:
                print(f"matcher: snapshot child exited with status {status}", file=sys.stderr, flush=True)

    def inputs_empty(self) -> bool:
        return (self.backlog is None and self.ds[matcher_duty.S_N] == 0
                and all(r.published_seq == r.read_seq for r in self.ins))

    def wait_durable(self) -> None:
        """Wait until the WAL holds every command sequenced; release their input slots."""
        last = self.m.last_seq
        while self.ctl.load(cells.DURABLE_SEQ) < last:
            self.ctl.check(every_ns=0)
            time.sleep(50e-6)
        self.release_durable()

    def final_snapshot(self) -> None:
        if self.child:
            self._reap(block=True)
        last = self.m.last_seq
        if last > 0 and not os.path.exists(os.path.join(self.snap_dir, store.name_of(last))):
            # views, not export_state()'s copies: the book no longer changes, and a copy
            # would double the matcher's resident memory at the stop
            state = {name: arr for name, arr in zip(FIELDS, self.m.book)}
            store.write_state(self.snap_dir, state, last, self.m.state_hash(), keep=self.snap_keep)
            self.ctl.a[cells.SNAPSHOTS] += 1

    def drop_views(self) -> None:
        """Drop every view of a ring mapping this agent holds (before any ring closes)."""
        self.in_rings = self.journal_ring = self.out_ring = None
        self.routing = None

    def close(self) -> None:
        self.drop_views()
        for r in self.ins + [self.journal, self.out]:
            r.close()
        self.h_to_matcher = None
        self._hseg.close()


def slot_idents(cfg, ctl: Ctl) -> np.ndarray:
    """Where each input ring's account comes from (`matcher_duty.ID_*`): a load producer's
    is fixed by the config, a client slot's is the cell its client writes at connect, a
    multi-account slot's commands keep their own."""
    P = cfg.producer_slots
    idents = np.zeros((P, 2), dtype=np.int64)
    for k in range(P):
        if k in cfg.multi_account_slots:
            idents[k] = matcher_duty.ID_MULTI, 0
        elif k < cfg.producers:
            idents[k] = matcher_duty.ID_FIXED, cfg.account_of(k)
        else:
            idents[k] = matcher_duty.ID_CELL, ctl.prod_cell(k, cells.C_ACCOUNT)
    return idents


def loads_done(ctl: Ctl, cfg) -> bool:
    """Every load producer has finished sending."""
    return all(ctl.a[ctl.prod_cell(k, cells.C_SENDING_DONE)] for k in range(cfg.producers))


def next_snapshot_due(snapshot_seq: int, last_seq: int, every: int) -> int:
    """The seq after which a (re)started matcher takes its next snapshot (-1: none):
    `every` commands after the newest snapshot, not after this start, so that a matcher
    restarted more often than that still takes them (the 50-kill drill, killed every ~1M
    commands with snapshots every 1M, replayed 2M-command tails from an old snapshot);
    overdue: at the first batch."""
    if every <= 0:
        return -1
    return max(snapshot_seq + every, last_seq + 1)


def _off_the_matchers_core(cores) -> None:
    """In the forked snapshot writer: leave the matcher's core (the pinning is inherited)
    and yield to everything else (nice 19). Measured, 1M orders/s offered, 5 s, snapshot
    every 1M commands: left on the matcher's core it kept the matcher waiting for its
    CPU 300 ms of every second."""
    try:
        if cores:
            os.sched_setaffinity(0, cores)
        os.nice(19)
    except OSError as e:   # the snapshot is still written; only the matcher pays for it
        print(f"matcher snapshot child: cannot leave the matcher's core ({e}); writing beside it",
              file=sys.stderr, flush=True)


def run(cfg, ctl: Ctl, me, index: int = 0) -> int:
    agent = MatcherAgent(cfg, ctl)
    pub = None
    if cfg.publisher_inline:
        from shmex.roles.publisher import PublisherAgent

        pub = PublisherAgent(cfg, ctl)
        prefault([pub.pend, pub.scratch])   # routed batches would first-touch them for minutes
        if agent.backlog is None:
            agent.attach_publisher(pub)
    me.ready()
    idle = Backoff(shares_core())
    poll_ns = 0 if shares_core() else POLL_NS    # never spin for a peer on this very core
    done = 2
    try:
        me.wait_go()
        stopping = False
        idle_ns = IDLE_NS
        while True:
            if agent.backlog is not None:    # a resumed matcher re-emits first (Python)
                w = agent._drain_backlog() + (pub.work() if pub is not None else 0)
                if agent.backlog is None and pub is not None:
                    agent.attach_publisher(pub)
            elif not stopping:
                rc = agent.duty(idle_ns, poll_ns)
                w = int(agent.ds[matcher_duty.S_WORK])
                if rc == matcher_duty.RET_DEST_FULL:
                    pub.finish_stalled()
                if pub is not None and pub._gone:
                    pub.revive()                     # a new reader on a dropped slot
                if rc != matcher_duty.RET_IDLE:         # budget spent, snapshot, growth, delivery
                    if w:
                        idle.reset()
                        me.beat()
                    idle_ns = IDLE_NS
                    ctl.check()
                    continue
                # idle for idle_ns inside the call: until work comes again, Python's
                # Backoff paces the calls (one pass each)
                idle_ns = IDLE_NS if w else 0
            else:
                w = pub.work() if pub is not None else 0
            if w:
                idle.reset()
                me.beat()
                if stopping or agent.backlog is not None:
                    continue
            ctl.check()
            if not stopping and ctl.phase == cells.PH_STOPPING and loads_done(ctl, cfg) and agent.inputs_empty():
                # the stop chain: all durable -> MATCHER_DONE (the WAL writer seals, the
                # publisher drains) -> the final snapshot, off the reports' path
                stopping = True
                agent.wait_durable()
                ctl.store_hash(agent.m.state_hash())
                ctl.store(cells.MATCHER_DONE, 1)
                done = 1
            if stopping and (pub is None or pub.drained()):
                agent.final_snapshot()
                break
            if not w:
                idle.idle()
    except Aborted:
        pass
    finally:
        if done != 1:
            ctl.store_hash(agent.m.state_hash())
            ctl.store(cells.MATCHER_DONE, done)
        agent.drop_views()
        if pub is not None:
            ctl.store(cells.PUB_DONE, 1)
            pub.close()
        if agent.child:
            agent._reap(block=True)
        agent.close()
    return 0


def warm() -> None:
    """The matcher's kernels, its duty cycle and its restart path (WAL write and scan,
    snapshot write and load, replay, the pseq scan), on scratch data."""
    _warm(None)
    _warm_matcher_start()
    _warm_recovery()


def _warm_matcher_start() -> None:
    import numpy as np

    from shmex.engine import latency
    from shmex.schema import commands

    buf = commands(4)
    latency.record_since(buf["engine_ns"], 0, 0, 0, np.zeros(latency.NBUCKETS, np.int64))


SCRATCH_PREFIX = "shmex-standby-"


def _remove_dead_scratch(parent: str) -> None:
    """Scratch logs of standbys killed while warming (``shmex-standby-<pid>-*``, pid gone)."""
    import shutil

    import psutil

    for name in os.listdir(parent):
        if not name.startswith(SCRATCH_PREFIX):
            continue
        pid = name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _warm_recovery() -> None:
    """A tiny log and snapshot, written and recovered the way a restarted matcher does."""
    import shutil
    import tempfile

    from shmex.matcher import Matcher
    from shmex.recovery import resume
    from shmex.schema import commands
    from shmex.recovery import recover as recovery
    from shmex.snapshot import store
    from shmex.wal import WalReader
    from shmex.wal import layout as wal_layout
    from shmex.wal.writer import WalWriter

    book = {"symbols": 1, "price_lo": 1, "price_hi": 100, "capacity": 16}
    _remove_dead_scratch(tempfile.gettempdir())
    tmp = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    try:
        w = WalWriter(tmp, mode="none", config=book, segment_bytes=wal_layout.MIN_SEGMENT_BYTES + 64 * wal_layout.SLOT_BYTES)
        m = Matcher(**book)
        c = commands(4)
        c["kind"], c["side"], c["order_type"], c["tif"] = 1, [1, 2, 1, 2], 1, 1
        c["producer"], c["client_id"], c["price"], c["qty"] = 1, [1, 2, 3, 4], [50, 51, 52, 53], 1
        m.process_into(c[:2])
        w.append(c[:2])
        w.commit()
        store.write_snapshot(recovery.snapshot_dir(tmp), m)
        m.process_into(c[2:])
        w.append(c[2:])
        w.close(seal=True)
        r = recovery.recover(tmp, until=3)
        for cmds in WalReader(tmp).commands(4, 4):
            r.matcher.process_into(cmds, stamp=False)
        r.matcher.state_hash()
        resume.last_pseqs(tmp, 1, 4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

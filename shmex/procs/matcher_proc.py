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
from collections import deque

import numpy as np

from shmex.matcher import Matcher
from shmex.matcher.book import FIELDS
from shmex.procs import layout as L
from shmex.procs.ctl import Aborted, Backoff, Ctl, publish_all, shares_core
from shmex.ring import Ring
from shmex.schema import COMMAND, REPORT, commands
from shmex.snapshot import recovery, store

BATCH = 4096


def _open_book(cfg: dict, ctl: Ctl) -> Matcher:
    """A fresh book, or the book the data directory's WAL and snapshots hold."""
    durable = ctl.load(L.DURABLE_SEQ)   # the WAL writer opened the log first: its end
    if durable > 0:
        r = recovery.recover(cfg["data_dir"])
        if r.last_seq != durable or r.damage:
            raise RuntimeError(f"recovery of {cfg['data_dir']} reached seq {r.last_seq} "
                               f"but the log ends at {durable}" + (f": {r.damage}" if r.damage else ""))
        print(f"matcher: recovered {r.last_seq:,} commands from {cfg['data_dir']} "
              f"({'snapshot ' + str(r.snapshot.seq) if r.snapshot else 'no snapshot'}) "
              f"in {r.seconds:.2f} s", file=sys.stderr, flush=True)
        m = r.matcher
        if m.config != cfg["book"]:
            raise RuntimeError(f"the data directory's book is {m.config}, this launch asks for "
                               f"{cfg['book']}: use another --data-dir or --fresh")
        return m
    return Matcher(**cfg["book"])


def _warm(m: Matcher) -> None:
    """Compile/load the matching kernel on a scratch book of the same shape."""
    scratch = Matcher(symbols=1, price_lo=1, price_hi=100, capacity=16)
    c = commands(2)
    c["kind"], c["side"], c["order_type"], c["tif"] = 1, [1, 2], 1, 1
    c["producer"], c["client_id"], c["price"], c["qty"] = 1, [1, 2], 50, 1
    scratch.process_into(c)
    scratch.state_hash()


def _prefault(m: Matcher) -> None:
    """Touch every page of the book's preallocated arrays (and the report buffer) for
    writing, without changing a byte: the arena (1M orders by default) is otherwise
    faulted in page by page as orders first land in it, which shows as resident memory
    growing for minutes and as page-fault stalls on the matching path."""
    for arr in list(m.book) + [m._out]:
        if isinstance(arr, np.ndarray) and arr.nbytes >= 4096 and arr.flags.c_contiguous:
            v = arr.reshape(-1).view(np.uint8)
            v[::4096] = v[::4096]     # read then write back each page's first byte


class MatcherAgent:
    def __init__(self, cfg: dict, ctl: Ctl):
        run_id = cfg["run_id"]
        self.cfg, self.ctl = cfg, ctl
        P = cfg["producers"] + cfg["clients"]
        w = cfg["wait"]["matcher"]
        self.ins = [Ring.attach(Ring.name_for(run_id, L.in_role(k)), COMMAND, side="consumer", wait=w)
                    for k in range(P)]
        self.journal = Ring.attach(Ring.name_for(run_id, "journal"), COMMAND, side="producer", wait=w)
        self.out = Ring.attach(Ring.name_for(run_id, "out"), REPORT, side="producer", wait=w)
        self.buf = commands(BATCH)
        self._resume(cfg, ctl)
        _warm(self.m)
        _prefault(self.m)
        self.sent_ns = self.buf["engine_ns"]   # a producer's send time until process_into stamps it
        from shmex.procs.latency import hist_views, record_since, stage_row
        from shmex.shm.segment import Segment

        self._hseg = Segment.attach(Ring.name_for(run_id, "hist"), layout="hist")
        _, stages, _ = hist_views(self._hseg, P)
        self.h_to_matcher = stages[stage_row(P, "to_matcher")]
        del stages
        self._record_since = record_since
        record_since(self.sent_ns, 0, 0, 0, np.zeros_like(self.h_to_matcher))   # load the kernel
        self.share = max(64, BATCH // max(P, 1))
        self.start = 0
        self.pending = [deque() for _ in range(P)]   # per ring: (last seq, ring position)
        self.got = np.zeros(P, dtype=np.int64)
        self.snap_dir = recovery.snapshot_dir(cfg["data_dir"])
        self.snap_every = int(cfg["snapshot_every"])
        self.next_snap = self.m.last_seq + self.snap_every if self.snap_every > 0 else -1
        self.child = 0
        ctl.store(L.MATCHER_SEQ, self.m.last_seq)

    def _resume(self, cfg: dict, ctl: Ctl) -> None:
        """The book and the rings as a never-crashed matcher would leave them (`resume`):
        the book at the log's end, the out ring's missing reports queued (backlog), the
        input commands the WAL already holds released."""
        from shmex.procs import resume as R

        r = R.resume_book(cfg, ctl, self.journal, self.out, sum(x.capacity for x in self.ins))
        self.m = r.matcher
        self.backlog, self.blo = (r.backlog if len(r.backlog) else None), 0
        skipped = sum(R.skip_logged(ring, k + 1, int(r.last_pseq[k + 1]), self.buf)
                      for k, ring in enumerate(self.ins))
        self.resumed = r
        if r.durable > ctl.load(L.RUN_BASE_SEQ) or skipped or len(r.backlog):
            R.log(f"matcher: resumed at seq {r.durable:,} (snapshot {r.snapshot_seq:,}) in "
                  f"{r.seconds * 1e3:.0f} ms; {len(r.backlog):,} reports re-emitted from command "
                  f"{r.reemit_from:,}; {skipped:,} logged input commands skipped")

    def _drain_backlog(self) -> int:
        k = self.out.publish(self.backlog[self.blo:], wait=False)
        self.blo += k
        if self.blo >= len(self.backlog):
            self.backlog = None
        return k

    def work(self) -> int:
        if self.backlog is not None:
            return self._drain_backlog()
        P = len(self.ins)
        n = 0
        got = self.got
        capped = False
        for j in range(P):
            k = (self.start + j) % P
            lim = min(BATCH, n + self.share)
            g = self.ins[k].consume(self.buf[n:lim], release=False) if lim > n else 0
            got[k] = g
            n += g
            capped = capped or n == lim
        if capped and n < BATCH:   # a second pass gives the busy rings what the idle ones left
            for j in range(P):
                k = (self.start + j) % P
                if n >= BATCH:
                    break
                g = self.ins[k].consume(self.buf[n:], release=False)
                got[k] += g
                n += g
        self.start = (self.start + 1) % max(P, 1)
        if n:
            self._record_since(self.sent_ns, 0, n, time.monotonic_ns(), self.h_to_matcher)
            reps = self.m.process_into(self.buf[:n])
            publish_all(self.journal, self.buf[:n], self.ctl)
            publish_all(self.out, reps, self.ctl)
            last = self.m.last_seq
            self.ctl.store(L.MATCHER_SEQ, last)
            self.ctl.a[L.BATCHES] += 1
            # commands of ring k are not contiguous after a second pass: the batch's last
            # seq is a safe bound for all of them
            for k in range(P):
                if got[k]:
                    self.pending[k].append((last, self.ins[k].read_seq))
            if 0 < self.next_snap <= last:
                self.snapshot()
        self.release_durable()
        if self.child:
            self._reap(block=False)
        return n

    def release_durable(self) -> None:
        durable = self.ctl.load(L.DURABLE_SEQ)
        for k, q in enumerate(self.pending):
            pos = -1
            while q and q[0][0] <= durable:
                pos = q.popleft()[1]
            if pos >= 0:
                self.ins[k].release(pos)

    def snapshot(self) -> None:
        """Fork a child that writes the book as of now; the parent pays only the fork."""
        if self.child:
            self._reap(block=False)
            if self.child:           # the last one is still writing: try again later
                self.next_snap = self.m.last_seq + self.snap_every // 4
                return
        t0 = time.monotonic_ns()
        pid = os.fork()
        if pid == 0:                 # child: write and leave without running any cleanup
            code = 0
            try:
                b = self.m.book
                state = {name: arr for name, arr in zip(FIELDS, b)}
                store.write_state(self.snap_dir, state, self.m.last_seq, self.m.state_hash())
            except BaseException as e:  # noqa: BLE001 - report and exit non-zero, never return
                print(f"matcher snapshot child: {e}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        pause = time.monotonic_ns() - t0
        a = self.ctl.a
        a[L.SNAPSHOTS] += 1
        if pause > a[L.SNAP_PAUSE_MAX_NS]:
            a[L.SNAP_PAUSE_MAX_NS] = pause
        self.child = pid
        self.next_snap = self.m.last_seq + self.snap_every

    def _reap(self, block: bool) -> None:
        pid, status = os.waitpid(self.child, 0 if block else os.WNOHANG)
        if pid:
            self.child = 0
            if status != 0:
                print(f"matcher: snapshot child exited with status {status}", file=sys.stderr, flush=True)

    def inputs_empty(self) -> bool:
        return self.backlog is None and all(r.published_seq == r.read_seq for r in self.ins)

    def wait_durable(self) -> None:
        """Wait until the WAL holds every command sequenced; release their input slots."""
        last = self.m.last_seq
        while self.ctl.load(L.DURABLE_SEQ) < last:
            self.ctl.check(every_ns=0)
            time.sleep(50e-6)
        self.release_durable()

    def final_snapshot(self) -> None:
        if self.child:
            self._reap(block=True)
        last = self.m.last_seq
        if last > 0 and not os.path.exists(os.path.join(self.snap_dir, store.name_of(last))):
            store.write_state(self.snap_dir, self.m.export_state(), last, self.m.state_hash())
            self.ctl.a[L.SNAPSHOTS] += 1

    def close(self) -> None:
        for r in self.ins + [self.journal, self.out]:
            r.close()
        self.h_to_matcher = None
        self._hseg.close()


def store_hash(ctl: Ctl, h: str) -> None:
    raw = np.frombuffer(bytes.fromhex(h), dtype="<i8")
    ctl.a[L.STATE_HASH] = raw[0]
    ctl.a[L.STATE_HASH + 1] = raw[1]


def load_hash(ctl_array: np.ndarray) -> str:
    return np.asarray(ctl_array[L.STATE_HASH:L.STATE_HASH + 2], dtype="<i8").tobytes().hex()


def loads_done(ctl: Ctl, cfg: dict) -> bool:
    """Every load producer has finished sending."""
    return all(ctl.a[L.prod_base(ctl.producers, k) + L.C_SENDING_DONE] for k in range(cfg["producers"]))


def run(cfg: dict, ctl: Ctl, me) -> int:
    agent = MatcherAgent(cfg, ctl)
    pub = None
    if cfg["publisher_inline"]:
        from shmex.procs.publisher import PublisherAgent

        pub = PublisherAgent(cfg, ctl)
    me.ready()
    idle = Backoff(shares_core())
    done = 2
    try:
        me.wait_go()
        stopping = False
        while True:
            w = agent.work() if not stopping else 0
            if pub is not None:
                w += pub.work()
            if w:
                idle.reset()
                me.beat()
                continue
            ctl.check()
            if not stopping and ctl.phase == L.PH_STOPPING and loads_done(ctl, cfg) and agent.inputs_empty():
                # the stop chain: all durable -> MATCHER_DONE (the WAL writer seals, the
                # publisher drains) -> the final snapshot, off the reports' path
                stopping = True
                agent.wait_durable()
                store_hash(ctl, agent.m.state_hash())
                ctl.store(L.MATCHER_DONE, 1)
                done = 1
            if stopping and (pub is None or pub.drained()):
                agent.final_snapshot()
                break
            idle.idle()
    except Aborted:
        pass
    finally:
        if done != 1:
            store_hash(ctl, agent.m.state_hash())
            ctl.store(L.MATCHER_DONE, done)
        if pub is not None:
            ctl.store(L.PUB_DONE, 1)
            pub.close()
        if agent.child:
            agent._reap(block=True)
        agent.close()
    return 0

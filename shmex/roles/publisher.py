"""The publisher: out ring -> each producer's report ring, gated on durability.

- Log before acknowledgment: the reports of command s leave only when DURABLE_SEQ >= s
  (in mode replicated when the replicator's R_REPLICATED_SEQ >= s, which never passes
  DURABLE_SEQ: the cell is `EngineConfig.release_cell`).
  Reports arrive in cmd_seq order, so the releasable ones are always a prefix.
- Routing is by the report's ``producer`` (the owner: a maker's fill goes to the maker).
  A destination is anything with ``publish(records)``; today each is a report ring, a
  network gateway would be one more destination behind the same table.
- Out-ring slots are released only after their reports were routed (a publisher killed
  mid-batch leaves them for its successor: at least once, in order).
- A destination whose reader is gone (a client that detached) has its reports dropped
  and counted (DROPPED), so one dead client cannot stall everyone else; its ring is
  looked at again every REVIVE_NS, and a new reader on it is delivered to again.
- A client slot whose reader is alive but leaves its ring full for `slow_client_s`
  (no report taken meanwhile) is disconnected the same way: its session's number (the
  ring's consumer-attach count) goes into the slot's C_EVICTED cell, its client's next
  call raises `Disconnected` and leaves the slot (whose orders are then cancelled, see
  `engine.disconnect`), and the slot's next session is delivered to again.

One routing step (`route`, numba) serves both places the publisher runs: its own process
(`PublisherAgent.work()`, one duty cycle) and inline in the matcher's duty kernel
(``--publisher inline``), on the same arrays and state; what the kernel leaves (a report
ring that could not take its share) the agent finishes (`finish_stalled`).
"""

from __future__ import annotations

import time
from collections import namedtuple

import numpy as np
from numba import njit

from shmex.engine import cells, clientseg
from shmex.engine._sys import post_if_woken as _wake
from shmex.errors import RingFull
from shmex.engine.ctl import Aborted, Ctl
from shmex.ring import Ring
from shmex.ring import _kernels as ring_kernels
from shmex.ring.atomics import load_acquire
from shmex.ring.layout import C_DATA_POSTS, C_SPACE_POSTS
from shmex.roles import views
from shmex.schema import REPORT, reports

PENDING = 1 << 15
REVIVE_NS = 100_000_000

# the routing state (int64 cells, private to the process that routes)
ST_LO, ST_HI = 0, 1     # the window pend[lo:hi]: consumed from the out ring, not yet routed
ST_OUTREL = 2           # out-ring position released after routing
ST_STALL_K = 3          # > 0: a routed prefix of k reports waits for `finish_stalled`
ST_GATE = 4             # the control cell whose seq releases reports (`EngineConfig.release_cell`; 0: DURABLE_SEQ)
ST_CELLS = 8

# route()'s input: `on` (False: scratch; the matcher's duty then routes nothing), the
# state, what each destination took of its share (`done`), the out ring it consumes, its
# pending reports, their destinations (by producer id), the report rings (`dests`)
Routing = namedtuple("Routing", "on state done out pend pendw dest_of scratch scratchw counts dests")


@njit(cache=True, nogil=True)
def _route_prefix(pend, lo, hi, durable, dest_of, scratch, counts):
    """Partition pend[lo:hi] by destination up to the first report not yet durable;
    -> how many were taken. dest_of[producer] < 0: drop (counted in counts[-1])."""
    nd = scratch.shape[0]
    for d in range(counts.shape[0]):
        counts[d] = 0
    i = lo
    while i < hi:
        r = pend[i]
        if r.cmd_seq > durable:
            break
        p = r.producer
        d = dest_of[p] if p < dest_of.shape[0] else -1
        if d == -2:
            pass                    # delivered already by a predecessor (resume.skip_delivered)
        elif d < 0:
            counts[nd] += 1
        else:
            scratch[d, counts[d]] = r
            counts[d] += 1
        i += 1
    return i - lo


@njit(cache=True, nogil=True)
def route(ctl, r):
    """One routing step, the publisher's in its own process and inline in the matcher's
    duty: consume from the out ring into the window, route its durable prefix to the
    report rings, release it; -> reports routed, or -1 when a report ring could not take
    its share (ST_STALL_K set, r.done[d] = what d took): `finish_stalled` delivers the rest."""
    st = r.state
    pend, pendw, dest_of, scratch, scratchw, counts = r.pend, r.pendw, r.dest_of, r.scratch, r.scratchw, r.counts
    p = r.out
    d_slots, d_ctls, d_locs, d_sems = r.dests.slots, r.dests.ctls, r.dests.locs, r.dests.sems
    lo = st[ST_LO]
    hi = st[ST_HI]
    if lo == hi:
        lo = 0
        hi = 0
    elif hi > PENDING // 2:
        k = hi - lo
        for i in range(k):
            for w in range(pendw.shape[1]):
                pendw[i, w] = pendw[lo + i, w]
        lo = 0
        hi = k
    if hi < pendw.shape[0]:
        hi += ring_kernels._consume_batch(p.slots, p.ctl, p.loc, pendw[hi:], False, True)
    st[ST_LO] = lo
    st[ST_HI] = hi
    if lo == hi:
        return 0
    # ORDER: acquire the release cell: pairs with the WAL writer's (replicator's) release
    # store after its flush (quorum acknowledgement)
    gate = st[ST_GATE] if st[ST_GATE] else cells.DURABLE_SEQ   # 0 (PHASE) is never a release cell
    durable = load_acquire(ctl, gate)
    k = _route_prefix(pend, lo, hi, durable, dest_of, scratch, counts)
    if k == 0:
        return 0
    nd = scratch.shape[0]
    stalled = False
    for d in range(nd):
        c = counts[d]
        s = 0
        if c:
            s = ring_kernels._publish_range(d_slots[d], d_ctls[d], d_locs[d], scratchw[d], 0, c, True)
            _wake(d_ctls[d], d_locs[d], d_sems[d], C_DATA_POSTS)
        r.done[d] = s
        if s < c:
            stalled = True
    if stalled:
        st[ST_STALL_K] = k
        return -1
    st[ST_LO] = lo + k
    st[ST_OUTREL] += k
    ring_kernels._release_upto(p.ctl, p.loc, st[ST_OUTREL], True)
    _wake(p.ctl, p.loc, p.sem, C_SPACE_POSTS)
    ctl[cells.ROUTED] += k               # plain: this process is the only writer
    if counts[nd]:
        ctl[cells.DROPPED] += counts[nd]
    return k


def routing_args(on: bool, nd: int = 1) -> Routing:
    """route()'s input on scratch rings of the live types: for warming, and (on False) the
    matcher's duty when the publisher runs as its own process (one compiled signature)."""
    return Routing(on, np.zeros(ST_CELLS, np.int64), np.zeros(nd, np.int64), views.scratch_ring(),
                   np.zeros(4, REPORT), np.zeros((4, 8), np.uint64), np.full(nd + 2, -1, np.int64),
                   np.zeros((nd, 4), REPORT), np.zeros((nd, 4, 8), np.uint64), np.zeros(nd + 1, np.int64),
                   views.rings([views.scratch_ring() for _ in range(nd)], np.zeros(nd, np.int64)))


class PublisherAgent:
    def __init__(self, cfg, ctl: Ctl):
        run_id = cfg.run_id
        P = cfg.producer_slots
        self.ctl = ctl
        self.out = Ring.attach(Ring.name_for(run_id, "out"), REPORT, side="consumer",
                               wait=cfg.wait["publisher"])
        self.dests = [Ring.attach(Ring.name_for(run_id, cells.rep_role(k)), REPORT, side="producer",
                                  wait=cfg.wait["publisher"]) for k in range(P)]
        self.dest_of = np.full(P + 2, -1, dtype=np.int64)
        self.dest_of[1:P + 1] = np.arange(P)      # producer id k + 1 -> report ring k
        self.dest_of[P + 1] = -2                  # already delivered: skip silently
        self.scratch = np.zeros((P, PENDING), dtype=REPORT)
        self.counts = np.zeros(P + 1, dtype=np.int64)
        self.pend = reports(PENDING)
        self.state = np.zeros(ST_CELLS, dtype=np.int64)
        self.state[ST_GATE] = cfg.release_cell()
        self.state[ST_OUTREL] = self.out.released_seq
        self._gone: list[tuple[int, Ring, int]] = []   # (slot, ring, session) of readers gone or evicted
        self._revive_ns = 0
        self.slow_ns = int(cfg.slow_client_s * 1e9)
        self.evictable = set(clientseg.client_slots(cfg))
        # a restart: what the out ring still holds may have been routed by the dead publisher
        from shmex.recovery.resume import log, skip_delivered

        self.state[ST_HI] = self.out.consume(self.pend, release=False)
        self.resent_skipped = skip_delivered(self.pend, self.hi, self.dests, P + 1)
        if self.resent_skipped:
            log(f"publisher: resumed at out-ring position {self.out_rel:,}; "
                f"{self.resent_skipped:,} reports already delivered skipped")
        # the out ring's consumer side and the report rings' producer sides, as route() reads them
        self.routing = Routing(True, self.state, np.zeros(P, np.int64),
                               views.Ring(*self.out.arrays(), self.out.sem_addrs()[1]),
                               self.pend, self.pend.view(np.uint64).reshape(len(self.pend), -1), self.dest_of,
                               self.scratch, self.scratch.view(np.uint64).reshape(P, PENDING, -1), self.counts,
                               views.rings([r.arrays() for r in self.dests], [r.sem_addrs()[0] for r in self.dests]))

    # the window and the released position live in the routing state (route() moves them)
    @property
    def lo(self) -> int:
        return int(self.state[ST_LO])

    @property
    def hi(self) -> int:
        return int(self.state[ST_HI])

    @property
    def out_rel(self) -> int:
        return int(self.state[ST_OUTREL])

    def work(self) -> int:
        """One duty cycle; -> reports routed (0: idle)."""
        if self._gone:
            self.revive()
        k = route(self.ctl.a, self.routing)
        return self.finish_stalled() if k < 0 else k

    def finish_stalled(self) -> int:
        """A report ring could not take its share of a routed prefix (route() returned -1,
        here or in the matcher's duty): deliver the rest the waiting way (or drop it for a
        reader that is gone), then release the prefix; -> its length."""
        k, took = int(self.state[ST_STALL_K]), self.routing.done
        for d in range(len(self.dests)):
            c, done = int(self.counts[d]), int(took[d])
            if done < c:
                self.scratch[d, :c - done] = self.scratch[d, done:c].copy()
                self._deliver(d, c - done)
        self.state[ST_LO] += k
        self.state[ST_OUTREL] += k
        self.state[ST_STALL_K] = 0
        self.out.release(self.out_rel)
        a = self.ctl.a
        a[cells.ROUTED] += k
        if self.counts[-1]:
            a[cells.DROPPED] += int(self.counts[-1])
        return k

    def _deliver(self, d: int, c: int) -> None:
        ring = self.dests[d]
        recs = self.scratch[d, :c]
        done = ring.publish(recs, wait=False)        # the common case: it all fits
        full_since = time.monotonic_ns()
        while done < c:                              # back-pressure from this reader
            try:
                done += ring.publish(recs[done:], wait=True, timeout_s=0.05)
            except RingFull as e:
                done += e.published
                now = time.monotonic_ns()
                if e.published:
                    full_since = now                 # it reads: slow, not stuck
                if not ring.peer_alive():            # nobody will ever read these
                    self._drop(d, ring, c - done, 0)
                    return
                if d in self.evictable and now - full_since >= self.slow_ns:
                    session = ring.consumer_attaches
                    # ORDER: the cell before the drop: the client's next call sees it
                    self.ctl.store(self.ctl.prod_cell(d, cells.C_EVICTED), session)
                    self.ctl.a[cells.EVICTED] += 1
                    self._drop(d, ring, c - done, session)
                    return
                self.ctl.check(every_ns=0)

    def _drop(self, d: int, ring, n: int, session: int) -> None:
        """Stop delivering to slot d (its reader gone, or evicted in `session`)."""
        self.ctl.a[cells.DROPPED] += n
        self._gone.append((d, ring, session))
        self.dests[d] = _Gone()
        self.dest_of[self.dest_of == d] = -1         # later reports: dropped and counted
        self.ctl.store(self.ctl.prod_cell(d, cells.C_UNROUTED), 1)

    def drained(self) -> bool:
        """Everything the matcher produced has been routed (call after MATCHER_DONE)."""
        return self.lo == self.hi and self.out.published_seq == self.out.read_seq

    def revive(self) -> None:
        """A slot whose reader went away delivers again once a new reader holds its ring."""
        now = time.monotonic_ns()
        if now - self._revive_ns < REVIVE_NS:
            return
        self._revive_ns = now
        for d, ring, session in list(self._gone):
            if ring.peer_alive() and ring.consumer_attaches > session:   # a new session's reader
                self._gone.remove((d, ring, session))
                self.dests[d] = ring
                self.dest_of[d + 1] = d
                # ORDER: after the table: a client that reads 0 sends commands whose
                # reports are routed to it
                self.ctl.store(self.ctl.prod_cell(d, cells.C_UNROUTED), 0)

    def close(self) -> None:
        self.routing = None             # its views of the rings go before the rings
        self.out.close()
        for r in self.dests + [ring for _, ring, _ in self._gone]:
            r.close()


class _Gone:
    """The place of a destination whose reader went away (no report is routed to it)."""

    def close(self):
        pass


def warm() -> None:
    """Load this role's kernel (from numba's cache) on scratch arrays of the live types."""
    route(np.zeros(64, np.int64), routing_args(True))


def run(cfg, ctl: Ctl, me, index: int = 0) -> int:
    from shmex.engine.ctl import Backoff, shares_core

    agent = PublisherAgent(cfg, ctl)
    me.ready()
    idle = Backoff(shares_core())
    try:
        me.wait_go()
        while True:
            if agent.work():
                idle.reset()
                me.beat()
                continue
            if ctl.load(cells.MATCHER_DONE) and agent.drained():
                break
            ctl.check()
            if agent.lo == agent.hi:
                agent.out.wait_readable(1, timeout_s=0.02)   # nothing pending: sleep on the ring
            else:
                idle.idle()                                  # pending, not yet durable
    except Aborted:
        pass
    finally:
        ctl.store(cells.PUB_DONE, 1)
        agent.close()
    return 0

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

`PublisherAgent.work()` is one duty cycle; it runs in its own process or inline in the
matcher's loop (``--publisher inline``).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from shmex.engine import cells
from shmex.errors import RingFull
from shmex.engine.ctl import Aborted, Ctl
from shmex.ring import Ring
from shmex.schema import REPORT, reports

PENDING = 1 << 15
REVIVE_NS = 100_000_000


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


class PublisherAgent:
    def __init__(self, cfg, ctl: Ctl):
        run_id = cfg.run_id
        P = cfg.producer_slots
        self.ctl = ctl
        self.release_cell = cfg.release_cell()
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
        self.lo = self.hi = 0
        self.out_rel = self.out.released_seq
        self._gone: list[tuple[int, Ring, int]] = []   # (slot, ring, session) of readers gone or evicted
        self._revive_ns = 0
        self.slow_ns = int(cfg.slow_client_s * 1e9)
        self.evictable = set(range(cfg.producers, cfg.producers + cfg.clients))
        self._warm()
        # a restart: what the out ring still holds may have been routed by the dead publisher
        from shmex.recovery.resume import log, skip_delivered

        self.hi = self.out.consume(self.pend, release=False)
        self.resent_skipped = skip_delivered(self.pend, self.hi, self.dests, P + 1)
        if self.resent_skipped:
            log(f"publisher: resumed at out-ring position {self.out_rel:,}; "
                f"{self.resent_skipped:,} reports already delivered skipped")

    def _warm(self) -> None:
        _route_prefix(self.pend, 0, 0, 0, self.dest_of, self.scratch, self.counts)

    def work(self) -> int:
        """One duty cycle; -> reports routed (0: idle)."""
        if self._gone:
            self.revive()
        if self.lo == self.hi:
            self.lo = self.hi = 0
        elif self.hi > PENDING // 2:
            k = self.hi - self.lo
            self.pend[:k] = self.pend[self.lo:self.hi]
            self.lo, self.hi = 0, k
        if self.hi < PENDING:
            self.hi += self.out.consume(self.pend[self.hi:], release=False)
        if self.lo == self.hi:
            return 0
        durable = self.ctl.load(self.release_cell)
        k = _route_prefix(self.pend, self.lo, self.hi, durable, self.dest_of, self.scratch, self.counts)
        if k == 0:
            return 0
        for d in range(len(self.dests)):
            c = int(self.counts[d])
            if c:
                self._deliver(d, c)
        dropped = int(self.counts[-1])
        self.lo += k
        self.out_rel += k
        self.out.release(self.out_rel)
        a = self.ctl.a
        a[cells.ROUTED] += k
        if dropped:
            a[cells.DROPPED] += dropped
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
        self.out.close()
        for r in self.dests + [ring for _, ring, _ in self._gone]:
            r.close()


class _Gone:
    """The place of a destination whose reader went away (no report is routed to it)."""

    def close(self):
        pass


def warm() -> None:
    """Load this role's kernel (from numba's cache) on scratch arrays of the live types."""
    _route_prefix(reports(4), 0, 0, 0, np.full(3, -1, dtype=np.int64), np.zeros((1, 4), dtype=REPORT),
                  np.zeros(2, dtype=np.int64))


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

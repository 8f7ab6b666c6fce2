"""The matcher's duty cycle in numba: one call reads the input rings, matches, forwards,
releases durable input slots and (publisher inline) routes durable reports, batch after
batch, until nothing happened for a while or its time budget is spent.

- Input slots are released only when DURABLE_SEQ covers every command read from them:
  per ring a FIFO of (last seq of a batch, the ring's read position after it) entries
  (`pq`), popped while the entry's seq <= DURABLE_SEQ. Each entry covers at least one
  unreleased slot, so a ring's FIFO never holds more entries than the ring has slots.
- A batch is matched and published whole (journal, out ring) before the next is read; a
  full journal or out ring leaves the rest for the next pass (back-pressure: no input
  is read meanwhile); the same loop's routing step drains the out ring.
- The routing step is the publisher's (`publisher.route`, on its arrays and state): reports
  leave for a producer's report ring only when the release cell (DURABLE_SEQ, or
  R_REPLICATED_SEQ in mode replicated) >= their cmd_seq; a report ring that cannot take
  its share stops the call (RET_DEST_FULL) and the publisher finishes that delivery
  (`PublisherAgent.finish_stalled`: waits, or drops for a dead reader).
- A cursor move that finds the peer blocked on its semaphore posts it from here
  (`_sys.sem_post`), counted in the ring's post counter as `Ring._post_if_woken` does.
- Python keeps what is rare: snapshots (RET_SNAPSHOT), report-buffer growth (RET_GROW),
  heartbeats and the phase (RET_BUDGET), the stop and idle naps (RET_IDLE).
- The merge step is the trust boundary (`_stamp_identity`): a producer writes its own
  ring records, so each record read from ring k gets ``producer`` k + 1, ``pseq`` its
  place in the ring, the slot's account, and a ``verdict`` (BAD_PSEQ, WRONG_ACCOUNT)
  that the book rejects it with; the journal holds what was stamped.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shmex.matcher import _kernels as matcher_kernels
from shmex.matcher.book import M_LAST_SEQ
from shmex.engine import cells
from shmex.engine._sys import mono_ns, post_if_woken as _wake, sched_yield
from shmex.engine.latency import bucket_of
from shmex.roles.publisher import route, routing_args
from shmex.roles.views import rings, scratch_ring as _scratch_ring
from shmex.ring import _kernels as ring_kernels
from shmex.ring.atomics import load_acquire, store_release
from shmex.ring.layout import C_DATA_POSTS, C_SPACE_POSTS, L_POS
from shmex.schema import RS_BAD_PSEQ, RS_WRONG_ACCOUNT

# state cells (int64, private to the matcher process)
S_START = 0       # round-robin start ring
S_N = 1           # commands in the batch in flight (0: none)
S_I = 2           # of them matched
S_JPUB = 3        # of them published to the journal
S_NREP = 4        # reports in the report buffer (the current chunk of the batch)
S_OPUB = 5        # of them published to the out ring
S_STAMP = 6       # the batch's engine_ns
S_NEXT_SNAP = 7   # seq at which Python takes the next snapshot (<= 0: none)
S_WORK = 12       # commands + reports moved by the last call
S_GROW_AT = 13    # batch index of the command the report buffer is too small for
S_CELLS = 16

RET_BUDGET, RET_IDLE, RET_SNAPSHOT, RET_GROW, RET_DEST_FULL = range(5)

# idents[k] = (mode, value): where input ring k's account comes from
ID_FIXED = 0      # value is the account (a load producer's, from the engine config)
ID_CELL = 1       # value is the control cell a client writes its account into at connect
ID_MULTI = 2      # a trusted multi-account slot: commands keep the account they carry


@njit(cache=True, nogil=True)
def release_durable(durable, in_ctls, in_locs, in_sems, pq, pqi):
    """Release each input ring up to the end of its last batch whose seqs are all
    <= durable; -> rings released."""
    qmask = pq.shape[1] - 1
    freed = 0
    for k in range(len(in_ctls)):
        h = pqi[k, 0]
        t = pqi[k, 1]
        pos = -1
        while h < t and pq[k, h & qmask, 0] <= durable:
            pos = pq[k, h & qmask, 1]
            h += 1
        if pos >= 0:
            pqi[k, 0] = h
            loc = in_locs[k]
            ring_kernels._release_upto(in_ctls[k], loc, pos, True)
            _wake(in_ctls[k], loc, in_sems[k], C_SPACE_POSTS)
            freed += 1
    return freed


@njit(cache=True, nogil=True)
def _stamp_identity(buf, lo, g, k, pos0, ctl, idents):
    """buf[lo:lo + g] came from ring k, at ring positions pos0, pos0 + 1, ...: stamp what
    the engine, not the producer, decides. producer = k + 1; pseq = the place (pos + 1),
    verdict BAD_PSEQ when the producer wrote another; account 0 = the slot's, verdict
    WRONG_ACCOUNT for another one (a multi-account slot keeps what it wrote)."""
    mode = idents[k, 0]
    acct = idents[k, 1]
    if mode == ID_CELL:
        # plain load: the client stores its account before it publishes the records read
        # here (its release store of PUB_SEQ orders it; pairs with _consume_batch's acquire)
        acct = ctl[acct]
    prod = k + 1
    for i in range(g):
        c = buf[lo + i]
        place = np.uint64(pos0 + 1 + i)
        v = 0
        if c.pseq != place:
            v = RS_BAD_PSEQ
        elif mode != ID_MULTI:
            if c.account == 0:
                c.account = acct
            elif c.account != acct:
                v = RS_WRONG_ACCOUNT
        c.producer = prod
        c.pseq = place
        c.verdict = v


@njit(cache=True, nogil=True)
def _take_from(k, buf, bufw, lo, hi, in_slots, in_ctls, in_locs, ctl, idents):
    """Up to hi - lo records from ring k into buf[lo:hi], stamped; -> count."""
    pos0 = in_locs[k][L_POS]
    g = ring_kernels._consume_batch(in_slots[k], in_ctls[k], in_locs[k], bufw[lo:hi], False, True)
    _stamp_identity(buf, lo, g, k, pos0, ctl, idents)
    return g


@njit(cache=True, nogil=True)
def _read_batch(buf, bufw, in_slots, in_ctls, in_locs, ds, got, share, ctl, idents):
    """Up to len(bufw) commands from the rings, a fair share each, round robin; a second
    pass gives the busy rings what the idle ones left (only when a ring filled its share)."""
    P = len(in_slots)
    nb = bufw.shape[0]
    start = ds[S_START]
    n = 0
    capped = False
    for j in range(P):
        k = (start + j) % P
        lim = min(nb, n + share)
        g = 0
        if lim > n:
            g = _take_from(k, buf, bufw, n, lim, in_slots, in_ctls, in_locs, ctl, idents)
        got[k] = g
        n += g
        if n == lim:
            capped = True
    if capped and n < nb:
        for j in range(P):
            if n >= nb:
                break
            k = (start + j) % P
            g = _take_from(k, buf, bufw, n, nb, in_slots, in_ctls, in_locs, ctl, idents)
            got[k] += g
            n += g
    ds[S_START] = (start + 1) % P
    return n


@njit(cache=True, nogil=True)
def duty(b, out, outw, buf, bufw, ins, idents, journal, outq, ctl, h_to_matcher, pq, pqi, got, ds, share,
         routing, budget_ns, poll_ns, idle_ns):
    """Match and route until nothing happened for `idle_ns` or `budget_ns` passed; -> RET_*.

    `ins` (Rings) are the input rings, `journal` and `outq` (Ring) the rings to the WAL
    writer and to the publisher, `routing` (Routing) the inline publisher's step.

    Spins for `poll_ns` of idleness (0 on a shared core), then sched_yield()s between
    passes (a peer on this core gets it at once); never blocks."""
    start = mono_ns()
    idle_since = 0
    total = 0
    qmask = pq.shape[1] - 1
    while True:
        work = 0
        n = ds[S_N]
        if n == 0:
            n = _read_batch(buf, bufw, ins.slots, ins.ctls, ins.locs, ds, got, share, ctl, idents)
            if n:
                now = mono_ns()
                for q in range(n):   # 'to_matcher': the producer's send time in engine_ns
                    t = buf[q].engine_ns
                    if 0 < t <= now:
                        h_to_matcher[bucket_of(now - t)] += 1
                last = b.meta[M_LAST_SEQ] + n    # stamping gives every command the next seq
                if 0 < ds[S_NEXT_SNAP] <= last:
                    # ORDER: release SNAP_SEQ before the batch goes to the journal: a
                    # replicator that sees seq `last` durable sees where a snapshot falls
                    store_release(ctl, cells.SNAP_SEQ, last)
                for k in range(len(ins.locs)):
                    if got[k]:
                        t = pqi[k, 1]
                        pq[k, t & qmask, 0] = last
                        pq[k, t & qmask, 1] = ins.locs[k][L_POS]
                        pqi[k, 1] = t + 1
                ds[S_N] = n
                ds[S_I] = 0
                ds[S_JPUB] = 0
                ds[S_NREP] = 0
                ds[S_OPUB] = 0
                ds[S_STAMP] = mono_ns()
                work += n
        if n:
            i = ds[S_I]
            if i < n and ds[S_OPUB] == ds[S_NREP]:     # the report buffer is free: match on
                # np.int64/np.bool_ rather than 0/True: numba types those as literals and
                # compiles a second _run (a minute on a cold cache) beside Matcher's
                i2, nrep, st = matcher_kernels._run(b, buf, i, n, out, np.int64(0), np.bool_(True), ds[S_STAMP])
                if i2 == i and st == matcher_kernels.ST_OUT_FULL:
                    ds[S_GROW_AT] = i
                    ds[S_WORK] = total + work
                    return RET_GROW
                ds[S_I] = i2
                ds[S_NREP] = nrep
                ds[S_OPUB] = 0
                i = i2
            jp = ds[S_JPUB]
            if jp < i:
                s = ring_kernels._publish_range(journal.slots, journal.ctl, journal.loc, bufw, jp, i, True)
                _wake(journal.ctl, journal.loc, journal.sem, C_DATA_POSTS)
                ds[S_JPUB] = jp + s
                work += s
            op = ds[S_OPUB]
            if op < ds[S_NREP]:
                s = ring_kernels._publish_range(outq.slots, outq.ctl, outq.loc, outw, op, ds[S_NREP], True)
                _wake(outq.ctl, outq.loc, outq.sem, C_DATA_POSTS)
                ds[S_OPUB] = op + s
                work += s
            if i == n and ds[S_JPUB] == n and ds[S_OPUB] == ds[S_NREP]:
                last = b.meta[M_LAST_SEQ]
                # ORDER: release MATCHER_SEQ: after the batch went to the journal; pairs
                # with the supervisor's and resume's acquire loads
                store_release(ctl, cells.MATCHER_SEQ, last)
                ctl[cells.BATCHES] += 1          # plain: this process is the only writer
                ds[S_N] = 0
                if 0 < ds[S_NEXT_SNAP] <= last:
                    ds[S_WORK] = total + work
                    return RET_SNAPSHOT
        # ORDER: acquire DURABLE_SEQ: pairs with the WAL writer's release store after its flush
        release_durable(load_acquire(ctl, cells.DURABLE_SEQ), ins.ctls, ins.locs, ins.sems, pq, pqi)
        if routing.on:
            r = route(ctl, routing)
            if r < 0:
                ds[S_WORK] = total + work
                return RET_DEST_FULL
            work += r
        total += work
        now = mono_ns()
        if now - start >= budget_ns:
            ds[S_WORK] = total
            return RET_BUDGET
        if work:
            idle_since = 0
            continue
        if idle_since == 0:
            idle_since = now
        waited = now - idle_since
        if waited >= idle_ns:
            ds[S_WORK] = total
            return RET_IDLE
        if waited >= poll_ns:
            sched_yield()


def warm(book, out, buf) -> None:
    """Load `duty` and `release_durable` (from numba's cache) on scratch rings of the live
    types: one pass over empty rings, with and without routing; nothing shared is touched."""
    ins = rings([_scratch_ring()], np.zeros(1, np.int64))
    idents = np.zeros((1, 2), np.int64)
    pq, pqi = np.zeros((1, 4, 2), np.int64), np.zeros((1, 2), np.int64)
    for has_pub in (False, True):
        duty(book, out, out.view(np.uint64).reshape(len(out), -1), buf, buf.view(np.uint64).reshape(len(buf), -1),
             ins, idents, _scratch_ring(), _scratch_ring(), np.zeros(64, np.int64),
             np.zeros(8192, np.int64), pq, pqi, np.zeros(1, np.int64), np.zeros(S_CELLS, np.int64), 64,
             routing_args(has_pub), 0, 0, 0)
    release_durable(0, ins.ctls, ins.locs, ins.sems, pq, pqi)

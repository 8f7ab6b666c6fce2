"""The WAL writer's duty cycle in numba (mode ``none``): one call drains the journal ring
into the mapped segment, batch after batch, until nothing came for a while, the
prefilled room is spent or its time budget is up.

- Records are stored only over pages the writer's idle polls have prefilled (the page
  cache already holds them: no write fault, no syscall per batch; `WalWriter` module
  doc): ``st[W_ROOM]`` slots from word ``st[W_POS]``. A call that spent the room returns
  RET_ROOM and Python takes the next batch (pwrite, rotation).
- `publish` is every mode's one commit step, called here after each batch (mode none
  makes a command durable once it is in the page cache) and by the Python loop of modes
  group/always after its flush: the durable table gets the batch's times
  (`latency.mark_durable`), then DURABLE_SEQ is stored (release), then the journal slots
  are released - never before the store.
- A seq that does not continue the log stops the call (RET_BAD_SEQ) with what came
  before it written; Python raises. Nothing after it is released.
- It never blocks: it spins ``poll_ns`` of idleness, then sched_yield()s; after
  ``idle_ns`` it returns RET_IDLE and Python blocks on the journal's semaphore. With
  the journal empty and less than ``low_room`` slots prefilled it returns RET_PREFILL:
  Python prefills one step and calls again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shmex.engine import cells
from shmex.engine._sys import mono_ns, post_if_woken, sched_yield
from shmex.engine.latency import mark_durable
from shmex.ring import _kernels as ring_kernels
from shmex.ring.atomics import store_release
from shmex.ring.layout import C_SPACE_POSTS, L_POS, L_REL
from shmex.ring.wait import FOREVER
from shmex.wal import _kernels as wal_kernels
from shmex.wal.layout import SLOT_WORDS

# state cells (int64, private to the WAL writer), set by Python before each call
W_POS = 0        # word index in the segment of the next slot
W_ROOM = 1       # slots that may be stored from there (prefilled, within the segment)
W_NEXT = 2       # the seq the next command must carry
W_DONE = 3       # out: records written by this call
W_BAD_SEQ = 4    # out (RET_BAD_SEQ): the seq the offending command carries
W_CELLS = 8

RET_BUDGET, RET_IDLE, RET_ROOM, RET_PREFILL, RET_BAD_SEQ = range(5)
NEVER = 1 << 62


@njit(cache=True, nogil=True)
def publish(seqs, eng, n, durable, now, h_durable, dtab, ctl, j_ctl, j_loc, j_sem, upto):
    """Make `durable` known, every mode's one commit step once its flush returned: the
    durable table gets the times of the batch's `n` commands, DURABLE_SEQ is stored, the
    journal's slots below `upto` are freed (the matcher is woken if it waits for room)."""
    # before the store below: a reader of seq s finds its durable time
    mark_durable(seqs, eng, n, durable, now, h_durable, dtab)
    # ORDER: release DURABLE_SEQ: the flush the mode demands has returned and the durable
    # table is written; pairs with the matcher's and the publisher's acquire
    store_release(ctl, cells.DURABLE_SEQ, durable)
    # the journal's slots only after the store: a successor finds them otherwise
    if upto > j_loc[L_REL]:
        ring_kernels._release_upto(j_ctl, j_loc, upto, True)
        post_if_woken(j_ctl, j_loc, j_sem, C_SPACE_POSTS)
    ctl[cells.COMMITS] += 1             # plain: this process is the only writer


@njit(cache=True, nogil=True)
def duty(j_slots, j_ctl, j_loc, j_sem, bufw, seqs, eng, words, st, dg, hw, ctl, h_durable, dtab,
         low_room, budget_ns, poll_ns, idle_ns):
    """Journal -> page cache -> DURABLE_SEQ until idle, out of room or out of time; -> RET_*.

    ``bufw`` is the (n, 8) word view of the COMMAND buffer whose ``seq`` and ``engine_ns``
    columns are ``seqs`` and ``eng``; ``dg[0]`` chains the run digest."""
    start = mono_ns()
    idle_since = 0
    cap = bufw.shape[0]
    st[W_DONE] = 0
    while True:
        room = st[W_ROOM]
        if room <= 0:
            return RET_ROOM
        n = ring_kernels._consume_batch(j_slots, j_ctl, j_loc, bufw[:min(room, cap)], False, True)
        now = mono_ns()
        if n:
            k, d, bad = wal_kernels._encode_commands(bufw, words, st[W_POS], n, st[W_NEXT], dg[0], hw)
            dg[0] = d
            st[W_POS] += k * SLOT_WORDS
            st[W_ROOM] = room - k
            st[W_NEXT] += k
            st[W_DONE] += k
            if bad >= 0:
                st[W_BAD_SEQ] = seqs[bad]
                return RET_BAD_SEQ
            t = mono_ns()
            # mode none's promise is kept: the records are in the page cache
            publish(seqs, eng, n, st[W_NEXT] - 1, t, h_durable, dtab, ctl, j_ctl, j_loc, j_sem, j_loc[L_POS])
            idle_since = 0
            if t - start >= budget_ns:
                return RET_BUDGET
            continue
        if st[W_ROOM] < low_room:
            return RET_PREFILL
        if now - start >= budget_ns:
            return RET_BUDGET
        if idle_since == 0:
            idle_since = now
        waited = now - idle_since
        if waited >= idle_ns:
            return RET_IDLE
        if waited >= poll_ns:
            sched_yield()


def idle_params(strategy, shared: bool) -> tuple[int, int]:
    """(poll_ns, idle_ns) for `duty` from the journal's wait strategy: spin its spin
    phase (none on a shared core: the yields hand it to the producers at once), yield
    its yield phase, then return for Python to block (or never, if it does not block)."""
    spin = NEVER if strategy.spin_ns == FOREVER else int(strategy.spin_ns)
    poll_ns = 0 if shared else spin
    if not strategy.block:
        return poll_ns, NEVER
    yld = NEVER if strategy.yield_ns == FOREVER else int(strategy.yield_ns)
    return poll_ns, min(NEVER, spin + yld)


def warm() -> None:
    """Load `duty` (from numba's cache) on scratch arrays of the live types; nothing shared
    is touched."""
    from shmex.engine.latency import NBUCKETS
    from shmex.ring import layout as ring_layout
    from shmex.schema import commands
    from shmex.crc import HW

    buf = commands(4)
    buf["seq"] = np.arange(1, 5)
    jslots = buf.view(np.uint64).reshape(4, 8).copy()
    jctl = np.zeros(ring_layout.CTL_BYTES // 8, np.int64)
    jctl[ring_layout.C_PUB] = 4
    jloc = np.zeros(ring_layout.LOCAL_CELLS, np.int64)
    st = np.zeros(W_CELLS, np.int64)
    st[W_ROOM], st[W_NEXT] = 4, 1
    duty(jslots, jctl, jloc, 0, buf.view(np.uint64).reshape(4, 8), buf["seq"], buf["engine_ns"],
         np.zeros(4 * SLOT_WORDS, np.uint64), st, np.zeros(1, np.uint64), HW,
         np.zeros(max(cells.DURABLE_SEQ, cells.COMMITS) + 1, np.int64), np.zeros(NBUCKETS, np.int64),
         np.zeros((4, 2), np.int64), 0, 0, 0, 0)
    # the call modes group/always and the seal make from Python (its own entry point)
    publish(buf["seq"], buf["engine_ns"], 0, 0, 0, np.zeros(NBUCKETS, np.int64), np.zeros((4, 2), np.int64),
            np.zeros(cells.COMMITS + 1, np.int64), jctl, jloc, 0, 0)

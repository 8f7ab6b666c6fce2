"""Publish/consume kernels over arrays: the ring's hot path.

Arguments are always the same four kinds of array:

- ``slots``: the ring's slots as a 2-D word view, shape (capacity, words per record);
- ``ctl``:   the shared int64 control cells (layout.C_*);
- ``local``: this handle's private int64 cells (layout.L_*): own cursor, cached peer cursor;
- ``src`` / ``dst``: caller records as the same 2-D word view.

Kernels return counts (0 = full / empty) and never raise. `notify=True` makes the side
that moved a cursor check whether the peer is blocked on its semaphore and, if so, set
``local[L_WAKE]`` for the caller to post it (the Python side owns the semaphores).
"""

from __future__ import annotations

from numba import njit

from shmex.ring.atomics import fence_seq_cst, load_acquire, load_plain, store_plain, store_release, swap_seq_cst
from shmex.ring.layout import C_CONS_WAITING, C_PROD_WAITING, C_PUB, C_READ, C_RELEASED, L_PEER, L_POS, L_REL, L_WAKE


@njit(cache=True, nogil=True)
def _check_peer_waiting(ctl, local, flag):
    """After moving our cursor: if the peer raised its waiting flag, claim it for one post."""
    # ORDER: seq_cst fence: our cursor store before the load of the peer's flag; pairs
    # with the fence in _arm (Dekker: the waiter re-checks our cursor after raising its
    # flag, so either it sees our cursor or we see its flag; no lost wake-up).
    fence_seq_cst()
    if load_plain(ctl, flag) != 0:
        # ORDER: seq_cst swap: exactly one claimant (one post) per raised flag.
        if swap_seq_cst(ctl, flag, 0) != 0:
            local[L_WAKE] = 1


@njit(cache=True, nogil=True)
def _arm(ctl, flag):
    """Raise our waiting flag before re-checking the peer's cursor and blocking."""
    store_plain(ctl, flag, 1)
    # ORDER: seq_cst fence: the flag store before the re-check load of the peer's cursor
    # that the caller does next; pairs with the fence in _check_peer_waiting.
    fence_seq_cst()


@njit(cache=True, nogil=True)
def _disarm(ctl, flag):
    # ORDER: relaxed: a stale 1 costs the peer one spurious post, which the waiter absorbs.
    store_plain(ctl, flag, 0)


@njit(cache=True, nogil=True)
def _publish_range(slots, ctl, local, src, lo, hi, notify):
    """Copy as many of src[lo:hi] as fit into the ring and publish them; -> count (0 = full).

    Takes a range rather than a slice: a slice made in a loop costs an NRT reference
    count, a locked instruction that drains the store buffer on every publish.
    """
    n = hi - lo
    cap = slots.shape[0]
    pos = local[L_POS]
    free = cap - (pos - local[L_PEER])
    if free < n:
        # ORDER: acquire RELEASED_SEQ: the consumer's reads of released slots happen
        # before we overwrite them; pairs with store_release(C_RELEASED) in _release_upto.
        local[L_PEER] = load_acquire(ctl, C_RELEASED)
        free = cap - (pos - local[L_PEER])
    k = n if n < free else free
    if k <= 0:
        return 0
    mask = cap - 1
    words = src.shape[1]
    for i in range(k):
        s = (pos + i) & mask
        for w in range(words):
            slots[s, w] = src[lo + i, w]
    pos += k
    local[L_POS] = pos
    # ORDER: release PUB_SEQ: the slot writes above before the cursor; pairs with
    # load_acquire(C_PUB) in _consume_batch / _available.
    store_release(ctl, C_PUB, pos)
    if notify:
        _check_peer_waiting(ctl, local, C_CONS_WAITING)
    return k


@njit(cache=True, nogil=True)
def _publish_batch(slots, ctl, local, src, notify):
    """Publish as many of `src` as fit; -> count (0 = full)."""
    return _publish_range(slots, ctl, local, src, 0, src.shape[0], notify)


@njit(cache=True, nogil=True)
def _release_upto(ctl, local, upto, notify):
    """Let the producer reuse every slot below `upto` (caller: released <= upto <= read)."""
    local[L_REL] = upto
    # ORDER: release RELEASED_SEQ: our reads of the slots below `upto` complete before the
    # producer may overwrite them; pairs with load_acquire(C_RELEASED) in _publish_batch.
    store_release(ctl, C_RELEASED, upto)
    if notify:
        _check_peer_waiting(ctl, local, C_PROD_WAITING)


@njit(cache=True, nogil=True)
def _consume_batch(slots, ctl, local, dst, release, notify):
    """Copy up to len(dst) published records out; -> count (0 = empty). Release if asked."""
    n = dst.shape[0]
    pos = local[L_POS]
    avail = local[L_PEER] - pos
    if avail < n:
        # ORDER: acquire PUB_SEQ: the producer's slot writes are visible to the reads
        # below; pairs with store_release(C_PUB) in _publish_batch.
        local[L_PEER] = load_acquire(ctl, C_PUB)
        avail = local[L_PEER] - pos
    k = n if n < avail else avail
    if k <= 0:
        return 0
    mask = slots.shape[0] - 1
    words = dst.shape[1]
    for i in range(k):
        s = (pos + i) & mask
        for w in range(words):
            dst[i, w] = slots[s, w]
    pos += k
    local[L_POS] = pos
    # ORDER: relaxed READ_SEQ: informational (monitors, a successor's diagnostics);
    # nothing is published by it and the producer never reads it.
    store_plain(ctl, C_READ, pos)
    if release:
        _release_upto(ctl, local, pos, notify)
    return k


@njit(cache=True, nogil=True)
def _available(ctl, local):
    """Consumer: records published and not yet read (refreshes the cached PUB_SEQ)."""
    # ORDER: acquire PUB_SEQ: pairs with store_release(C_PUB) in _publish_batch.
    local[L_PEER] = load_acquire(ctl, C_PUB)
    return local[L_PEER] - local[L_POS]


@njit(cache=True, nogil=True)
def _free(ctl, local, cap):
    """Producer: slots it may write now (refreshes the cached RELEASED_SEQ)."""
    # ORDER: acquire RELEASED_SEQ: pairs with store_release(C_RELEASED) in _release_upto.
    local[L_PEER] = load_acquire(ctl, C_RELEASED)
    return cap - (local[L_POS] - local[L_PEER])


@njit(cache=True, nogil=True)
def _load(ctl, idx):
    """An acquire load of one control cell, for Python callers."""
    # ORDER: acquire: whatever the writer released before this cell is visible after it.
    return load_acquire(ctl, idx)


@njit(cache=True, nogil=True)
def _store(ctl, idx, value):
    """A release store of one control cell, for Python callers."""
    # ORDER: release: this process's earlier writes before the cell; pairs with _load.
    store_release(ctl, idx, value)

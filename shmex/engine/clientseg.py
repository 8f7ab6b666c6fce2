"""A client slot's own segment ``/shmex-<run>-cli-<k>``: everything the client of slot k
writes, so that clients map the control segment read-only.

One int64 array, written only by the slot's client (one at a time: the slot's input-ring
lock), read by the supervisor::

    0 .. PROD_CELLS-1            its counters, at the `cells.C_*` indices a client counts
                                 (C_SENT .. C_OTHER; the others stay 0 here)
    HIST .. HIST+NBUCKETS-1      its tick-to-trade histogram row
    WANT_ACCOUNT, BIND_REQUEST   an account binding asked of the supervisor (request n)

The supervisor answers a binding in the slot's control cells (`Binds`): C_BIND_RESULT and
C_BIND_HELD_BY, then C_BIND_ANSWERED = n; a client waits for that before its first
command. Each time it samples it copies the counters and the row into the control and
histogram segments (`overlay`), so that the summary, the progress line and the drills
read every slot in one place.
"""

from __future__ import annotations

import numpy as np

from shmex.engine import cells
from shmex.engine.latency import NBUCKETS
from shmex.ring import _kernels as ring_kernels
from shmex.shm.segment import Segment

LAYOUT = "cli"
HIST = cells.PROD_CELLS
WANT_ACCOUNT = HIST + NBUCKETS
BIND_REQUEST = WANT_ACCOUNT + 1
CELLS = BIND_REQUEST + 1
COUNTED = cells.C_ACCOUNT     # cells 0 .. COUNTED-1 of a slot's block are the client's counts

# C_BIND_RESULT values
BOUND, OTHERS_DEFAULT, HELD, OUT_OF_RANGE = 0, 1, 2, 3


def role(k: int) -> str:
    return f"cli-{k}"


def client_slots(cfg) -> range:
    return range(cfg.producers, cfg.producers + cfg.clients)


def create(run_id: str, k: int) -> Segment:
    return Segment.create(run_id, role(k), CELLS * 8, layout=LAYOUT)


def cells_of(seg: Segment) -> np.ndarray:
    return seg.view(0, np.int64, CELLS)


def overlay(ctl: np.ndarray, hist: np.ndarray, own: dict) -> None:
    """Copy each client slot's counters and histogram row (own: k -> its cells) into the
    control and histogram segments (the supervisor: their only writer for these cells)."""
    S = int(ctl[cells.CFG_PROC_SLOTS])
    for k, a in own.items():
        b = cells.prod_base(S, k)
        ctl[b:b + COUNTED] = a[:COUNTED]
        hist[k] = a[HIST:HIST + NBUCKETS]


def refusal(result: int, account: int, k: int, held_by: int) -> str:
    """What a refused binding says (the client raises it as a UsageError)."""
    if result == OTHERS_DEFAULT:
        return (f"account: {account:#x} is another slot's default (accounts from "
                f"{cells.DEFAULT_ACCOUNT_BASE:#x} up are the slots' own)")
    if result == HELD:
        return (f"account: {account} is bound to producer slot {held_by} (producer {held_by + 1}); "
                f"an account acts through one slot")
    return f"account: {account}: must be 0 .. {cells.ACCOUNT_MAX}"


class Binds:
    """The supervisor's side of account bindings: each poll answers every client slot's
    new request. An account acts through one slot, and the accounts from
    DEFAULT_ACCOUNT_BASE up are each slot's own; a slot is rebound only once every command
    of its previous client is released (the matcher checked those against the old one)."""

    def __init__(self, ctl: np.ndarray, own: dict, rings: dict, producer_slots: int):
        self.ctl, self.own, self.rings, self.P = ctl, own, rings, producer_slots
        S = int(ctl[cells.CFG_PROC_SLOTS])
        self.base = {k: cells.prod_base(S, k) for k in range(producer_slots)}

    def poll(self) -> None:
        for k, a in self.own.items():
            # ORDER: acquire: the request's WANT_ACCOUNT is visible; pairs with the client's release
            req = int(ring_kernels._load(a, BIND_REQUEST))
            b = self.base[k]
            if req == int(self.ctl[b + cells.C_BIND_ANSWERED]):
                continue
            account = int(a[WANT_ACCOUNT])
            result, held_by = self._check(k, account)
            if result == BOUND and int(self.ctl[b + cells.C_ACCOUNT]) != account:
                r = self.rings[k]
                if r.released_seq < r.published_seq:
                    continue          # the previous client's commands still to be released: next poll
                # ORDER: release: before the answer below; the client publishes only after
                # reading it, and the matcher reads the account after acquiring PUB_SEQ
                ring_kernels._store(self.ctl, b + cells.C_ACCOUNT, account)
            self.ctl[b + cells.C_BIND_RESULT] = result
            self.ctl[b + cells.C_BIND_HELD_BY] = held_by
            # ORDER: release: the result and the account before the answer; pairs with the client's load
            ring_kernels._store(self.ctl, b + cells.C_BIND_ANSWERED, req)

    def _check(self, k: int, account: int) -> tuple[int, int]:
        if not 0 <= account <= cells.ACCOUNT_MAX:
            return OUT_OF_RANGE, -1
        if account >= cells.DEFAULT_ACCOUNT_BASE and account != cells.default_account(k):
            return OTHERS_DEFAULT, -1
        if account:
            for j in range(self.P):
                if j != k and int(self.ctl[self.base[j] + cells.C_ACCOUNT]) == account:
                    return HELD, j
        return BOUND, -1

"""The supervisor's side of account bindings (`clientseg.Binds`), over plain cell arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from shmex.engine import cells, clientseg

S, P = 4, 3                     # process slots, producer slots (0: load producer, 1-2: clients)


def _rig():
    ctl = np.zeros(cells.ctl_cells(S, P), np.int64)
    ctl[cells.CFG_PROC_SLOTS] = S
    for k in range(P):
        ctl[cells.prod_base(S, k) + cells.C_ACCOUNT] = cells.default_account(k)
    own = {k: np.zeros(clientseg.CELLS, np.int64) for k in (1, 2)}
    rings = {k: SimpleNamespace(released_seq=0, published_seq=0) for k in range(P)}
    return ctl, own, rings, clientseg.Binds(ctl, own, rings, P)


def _ask(own, k, account):
    own[k][clientseg.WANT_ACCOUNT] = account
    own[k][clientseg.BIND_REQUEST] += 1
    return int(own[k][clientseg.BIND_REQUEST])


def _cell(ctl, k, c):
    return int(ctl[cells.prod_base(S, k) + c])


def test_a_binding_waits_for_the_previous_clients_commands_to_be_released():
    ctl, own, rings, binds = _rig()
    rings[1].published_seq, rings[1].released_seq = 10, 7
    n = _ask(own, 1, 55)
    binds.poll()
    assert _cell(ctl, 1, cells.C_BIND_ANSWERED) == 0 and _cell(ctl, 1, cells.C_ACCOUNT) == cells.default_account(1)
    rings[1].released_seq = 10
    binds.poll()
    assert _cell(ctl, 1, cells.C_BIND_ANSWERED) == n
    assert (_cell(ctl, 1, cells.C_BIND_RESULT), _cell(ctl, 1, cells.C_ACCOUNT)) == (clientseg.BOUND, 55)


def test_an_account_acts_through_one_slot_and_the_defaults_are_each_slots_own():
    ctl, own, rings, binds = _rig()
    _ask(own, 1, 55)
    binds.poll()
    for account, result, held_by in ((55, clientseg.HELD, 1), (cells.default_account(0), clientseg.OTHERS_DEFAULT, -1),
                                      (-1, clientseg.OUT_OF_RANGE, -1), (1 << 32, clientseg.OUT_OF_RANGE, -1)):
        n = _ask(own, 2, account)
        binds.poll()
        assert _cell(ctl, 2, cells.C_BIND_ANSWERED) == n
        assert (_cell(ctl, 2, cells.C_BIND_RESULT), _cell(ctl, 2, cells.C_BIND_HELD_BY)) == (result, held_by)
        assert _cell(ctl, 2, cells.C_ACCOUNT) == cells.default_account(2)       # unchanged
    assert "bound to producer slot 1" in clientseg.refusal(clientseg.HELD, 55, 2, 1)


def test_the_counters_and_the_latency_row_reach_the_control_and_histogram_cells():
    ctl, own, rings, binds = _rig()
    hist = np.zeros((P, clientseg.WANT_ACCOUNT - clientseg.HIST), np.int64)
    own[2][cells.C_SENT], own[2][cells.C_ACKS], own[2][clientseg.HIST + 5] = 9, 8, 3
    clientseg.overlay(ctl, hist, own)
    assert (_cell(ctl, 2, cells.C_SENT), _cell(ctl, 2, cells.C_ACKS), int(hist[2, 5])) == (9, 8, 3)
    assert _cell(ctl, 2, cells.C_ACCOUNT) == cells.default_account(2)     # the supervisor's cells stay

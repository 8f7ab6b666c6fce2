"""The WAL writer's numba duty cycle (`roles/walwriter_duty.py`, mode none) on an in-process
journal ring and a real WalWriter: it logs exactly what the journal held, stores
DURABLE_SEQ only for what is in the log, releases journal slots only up to it, stays
inside the room it was offered, and stops at a seq that does not continue the log."""

from __future__ import annotations

import numpy as np
import pytest

from shmex.engine import cells
from shmex.roles import walwriter_duty
from shmex.engine.latency import NBUCKETS
from shmex.ring import _kernels as ring_kernels
from shmex.ring import layout as ring_layout
from shmex.ring.wait import BLOCK, HYBRID, SPIN, YIELD
from shmex.schema import commands
from shmex.crc import HW
from shmex.wal.reader import WalReader
from shmex.recovery.verify import verify
from shmex.wal.writer import WalWriter

BATCH = 64


class _Rig:
    """A journal ring (the matcher publishes with `feed`), a WalWriter in mode none and
    the duty kernel's arguments, as walwriter.run sets them up."""

    def __init__(self, directory, cap=256):
        self.wal = WalWriter(directory, mode="none")
        self.slots = np.zeros((cap, 8), np.uint64)
        self.ctl = np.zeros(ring_layout.CTL_BYTES // 8, np.int64)
        self.loc = np.zeros(ring_layout.LOCAL_CELLS, np.int64)           # the WAL writer's (consumer)
        self.pub_loc = np.zeros(ring_layout.LOCAL_CELLS, np.int64)       # the matcher's (producer)
        self.buf = commands(BATCH)
        self.st = np.zeros(walwriter_duty.W_CELLS, np.int64)
        self.dg = np.zeros(1, np.uint64)
        self.engine = np.zeros(cells.COMMITS + 8, np.int64)         # the control cells it writes
        self.h_durable = np.zeros(NBUCKETS, np.int64)
        self.dtab = np.zeros((1024, 2), np.int64)
        self.next_seq = 1

    def feed(self, n, *, seq_from=None):
        c = commands(n)
        first = self.next_seq if seq_from is None else seq_from
        c["seq"] = np.arange(first, first + n)
        c["engine_ns"] = 1
        c["client_id"] = c["seq"] * 7
        self.next_seq = first + n
        assert ring_kernels._publish_batch(self.slots, self.ctl, self.pub_loc, c.view(np.uint64).reshape(n, 8), False) == n
        return c

    def duty(self, room=None, low_room=0):
        words, pos, offered = self.wal.mapped_room()
        self.st[walwriter_duty.W_POS], self.st[walwriter_duty.W_NEXT] = pos, self.wal.next_seq
        self.st[walwriter_duty.W_ROOM] = offered if room is None else room
        self.dg[0] = self.wal.digest
        rc = walwriter_duty.duty(self.slots, self.ctl, self.loc, 0, self.buf.view(np.uint64).reshape(BATCH, 8),
                     self.buf["seq"], self.buf["engine_ns"], words, self.st, self.dg, HW, self.engine,
                     self.h_durable, self.dtab, low_room, 50_000_000, 0, 200_000)
        if self.st[walwriter_duty.W_DONE]:
            self.wal.advance_mapped(int(self.st[walwriter_duty.W_DONE]), self.dg[0])
        return rc

    def prefill(self):
        for _ in range(100):      # idle polls: prepare the next segment, then prefill
            if self.wal.mapped_room()[2] >= self.wal.room_goal():
                return
            self.wal.poll()
        raise AssertionError(f"idle polls did not prefill: room {self.wal.mapped_room()[2]}")

    @property
    def durable(self):
        return int(self.engine[cells.DURABLE_SEQ])

    @property
    def released(self):
        return int(self.ctl[ring_layout.C_RELEASED])


def _logged(directory):
    r = WalReader(directory)
    got = np.concatenate([b.copy() for b in r.commands()])
    assert r.end.damage is None, r.end
    return got


def _clean(directory):
    rep = verify(directory)
    return not rep.corrupt and rep.findings == [], rep.findings


def test_logs_what_the_journal_held_and_publishes_durable(tmp_path):
    rig = _Rig(tmp_path)
    rig.prefill()
    sent = np.concatenate([rig.feed(100), rig.feed(37)])
    assert rig.duty() == walwriter_duty.RET_IDLE
    assert rig.durable == 137 and rig.released == 137           # durable, then released
    assert rig.wal.durable_seq == rig.wal.appended_seq == 137
    assert rig.engine[cells.COMMITS] >= 3                           # batches of at most 64
    assert rig.h_durable.sum() == 137                           # stamp -> durable, per command
    assert list(rig.dtab[1:138, 0]) == list(range(1, 138))      # each seq's durable time noted
    rig.wal.close()
    assert (_logged(tmp_path) == sent).all()
    assert _clean(tmp_path)[0], _clean(tmp_path)[1]


def test_stays_inside_the_room_it_was_offered(tmp_path):
    rig = _Rig(tmp_path)
    rig.prefill()
    rig.feed(50)
    assert rig.duty(room=20) == walwriter_duty.RET_ROOM
    assert rig.durable == 20 and rig.released == 20             # the rest waits in the journal
    assert rig.wal.appended_seq == 20
    assert rig.duty() == walwriter_duty.RET_IDLE
    assert rig.durable == rig.released == 50
    rig.wal.close()
    assert _clean(tmp_path)[0], _clean(tmp_path)[1]


def test_no_room_returns_before_reading(tmp_path):
    rig = _Rig(tmp_path)
    rig.feed(5)
    assert rig.duty(room=0) == walwriter_duty.RET_ROOM
    assert rig.loc[ring_layout.L_POS] == 0 and rig.durable == 0 and rig.released == 0


def test_asks_for_prefill_when_idle_and_low(tmp_path):
    rig = _Rig(tmp_path)
    rig.prefill()
    room = rig.wal.mapped_room()[2]
    rig.feed(10)
    assert rig.duty(low_room=room) == walwriter_duty.RET_PREFILL            # journal drained, room below the goal
    assert rig.durable == 10


def test_a_seq_gap_stops_before_it_and_releases_nothing_after(tmp_path):
    rig = _Rig(tmp_path)
    rig.prefill()
    rig.feed(10)
    rig.feed(5, seq_from=12)                                    # seq 11 is missing
    assert rig.duty() == walwriter_duty.RET_BAD_SEQ
    assert rig.st[walwriter_duty.W_BAD_SEQ] == 12
    assert rig.wal.appended_seq == 10                           # what came before it is logged
    assert rig.durable == 0 and rig.released == 0               # that batch was not published
    rig.wal.close()
    assert _clean(tmp_path)[0], _clean(tmp_path)[1]


@pytest.mark.parametrize("strategy, shared, want", [
    (HYBRID, True, (0, HYBRID.spin_ns + HYBRID.yield_ns)),
    (HYBRID, False, (HYBRID.spin_ns, HYBRID.spin_ns + HYBRID.yield_ns)),
    (BLOCK, False, (BLOCK.spin_ns, BLOCK.spin_ns)),
    (YIELD, False, (YIELD.spin_ns, walwriter_duty.NEVER)),
    (SPIN, False, (walwriter_duty.NEVER, walwriter_duty.NEVER)),
])
def test_idle_params_follow_the_wait_strategy(strategy, shared, want):
    assert walwriter_duty.idle_params(strategy, shared) == want

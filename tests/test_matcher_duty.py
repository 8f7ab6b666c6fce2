"""The matcher's numba duty cycle (`roles/matcher_duty.py`) on in-process rings: it
sequences and matches exactly what `Matcher.process` would, forwards every command to
the journal, and releases input slots and routes reports only as DURABLE_SEQ allows.
Also: `prefault` really maps the pages of a calloc'd array."""

from __future__ import annotations

import numpy as np

from shmex.matcher import Matcher
from shmex.engine import cells
from shmex.roles import matcher_duty, publisher, views
from shmex.roles.matcher import prefault
from shmex.roles.publisher import PENDING
from shmex.ring import _kernels as ring_kernels
from shmex.ring import layout as ring_layout
from shmex.schema import COMMAND, REPORT, commands

BOOK = dict(symbols=1, price_lo=1, price_hi=200, capacity=256)


def _ring(cap):
    return (np.zeros((cap, 8), np.uint64), np.zeros(ring_layout.CTL_BYTES // 8, np.int64),
            np.zeros(ring_layout.LOCAL_CELLS, np.int64))


def _orders(n, producer, seed):
    rng = np.random.default_rng(seed)
    c = commands(n)
    c["kind"], c["order_type"], c["tif"] = 1, 1, 1
    c["side"] = rng.integers(1, 3, n)
    c["producer"] = producer
    c["client_id"] = np.arange(1, n + 1)
    c["pseq"] = np.arange(1, n + 1)
    c["price"] = rng.integers(95, 106, n)
    c["qty"] = rng.integers(1, 20, n)
    c["sent_ns"] = 1
    return c


def _words(a):
    return a.view(np.uint64).reshape(len(a), -1)


def _published(ring, dtype):
    slots, ctl, _ = ring
    n = int(ctl[ring_layout.C_PUB])
    return slots[:n].copy().view(dtype).reshape(-1)


class _Rig:
    """Two producers' input rings, journal, out ring and two report rings, all in-process.
    Both input rings are client slots (account from their control cell, 0 until bound),
    except those named in `multi_account`."""

    def __init__(self, multi_account=()):
        self.m = Matcher(**BOOK)
        self.ins = [_ring(64), _ring(64)]                         # the matcher's (consumer) cells
        self.prod_locs = [np.zeros(ring_layout.LOCAL_CELLS, np.int64) for _ in self.ins]   # the producers'
        self.journal, self.out = _ring(256), _ring(1024)
        self.dests = [_ring(1024), _ring(1024)]
        self.rout = (self.out[0], self.out[1], np.zeros(ring_layout.LOCAL_CELLS, np.int64))  # routing: out's consumer
        self.ctl = np.zeros(cells.ctl_cells(8, 2), np.int64)
        self.buf = commands(256)
        self.pq = np.zeros((2, 64, 2), np.int64)
        self.pqi = np.zeros((2, 2), np.int64)
        self.ds = np.zeros(matcher_duty.S_CELLS, np.int64)
        self.state = np.zeros(publisher.ST_CELLS, np.int64)     # the routing's (release cell: DURABLE_SEQ)
        self.pend = np.zeros(PENDING, REPORT)
        self.scratch = np.zeros((2, PENDING), REPORT)
        self.counts = np.zeros(3, np.int64)
        self.dest_of = np.array([-1, 0, 1, -2], np.int64)
        self.idents = np.array([(matcher_duty.ID_MULTI, 0) if k in multi_account else
                                (matcher_duty.ID_CELL, cells.prod_base(8, k) + cells.C_ACCOUNT) for k in range(2)],
                               np.int64)

    def bind_account(self, k, account):
        """What a client of slot k does at connect."""
        self.ctl[cells.prod_base(8, k) + cells.C_ACCOUNT] = account

    def publish(self, k, cmds):
        slots, ctl, _ = self.ins[k]
        assert ring_kernels._publish_batch(slots, ctl, self.prod_locs[k], _words(cmds), False) == len(cmds)

    def duty(self):
        m = self.m
        md = matcher_duty
        routing = publisher.Routing(True, self.state, np.zeros(2, np.int64), views.Ring(*self.rout, 0), self.pend, _words(self.pend),
                             self.dest_of, self.scratch, self.scratch.view(np.uint64).reshape(2, PENDING, 8),
                             self.counts, views.rings(self.dests, np.zeros(2, np.int64)))
        rc = md.duty(m.book, m._out, _words(m._out), self.buf, _words(self.buf), views.rings(self.ins, np.zeros(2, np.int64)),
                     self.idents, views.Ring(*self.journal, 0), views.Ring(*self.out, 0), self.ctl,
                     np.zeros(8192, np.int64), self.pq, self.pqi, np.zeros(2, np.int64), self.ds, 64,
                     routing, 10**9, 0, 0)
        assert rc == matcher_duty.RET_IDLE
        return rc

    def released(self, k):
        return int(self.ins[k][1][ring_layout.C_RELEASED])


def test_duty_matches_like_process_and_gates_release_and_routing_on_durability():
    rig = _Rig()
    a, b = _orders(10, 1, 1), _orders(6, 2, 2)
    rig.publish(0, a)
    rig.publish(1, b)
    rig.duty()
    ref = Matcher(**BOOK)
    both = commands(16)
    both[:10], both[10:] = a, b
    expect = ref.process(both)                       # ring 0's share first, then ring 1's
    journal = _published(rig.journal, COMMAND)
    assert list(journal["seq"]) == list(range(1, 17))
    assert list(journal["pseq"]) == list(a["pseq"]) + list(b["pseq"])
    reps = _published(rig.out, REPORT)
    assert reps.tobytes() == expect.tobytes()
    assert rig.m.state_hash() == ref.state_hash()
    assert rig.ctl[cells.MATCHER_SEQ] == 16
    # nothing durable: no input slot released, no report routed
    assert (rig.released(0), rig.released(1)) == (0, 0)
    assert all(int(d[1][ring_layout.C_PUB]) == 0 for d in rig.dests)

    rig.ctl[cells.DURABLE_SEQ] = 10
    rig.duty()
    # the batch's last seq (16) bounds both rings' slots: still nothing released
    assert (rig.released(0), rig.released(1)) == (0, 0)
    routed = expect[expect["cmd_seq"] <= 10]
    for k, d in enumerate(rig.dests):
        assert _published(d, REPORT).tobytes() == routed[routed["producer"] == k + 1].tobytes()
    assert rig.ctl[cells.ROUTED] == len(routed)

    rig.ctl[cells.DURABLE_SEQ] = 16
    rig.duty()
    assert (rig.released(0), rig.released(1)) == (10, 6)
    for k, d in enumerate(rig.dests):
        assert _published(d, REPORT).tobytes() == expect[expect["producer"] == k + 1].tobytes()
    assert rig.ctl[cells.ROUTED] == len(expect)
    assert int(rig.out[1][ring_layout.C_RELEASED]) == len(expect)


def test_duty_releases_each_batch_when_it_is_durable():
    rig = _Rig()
    rig.publish(0, _orders(5, 1, 3))
    rig.duty()                                   # batch 1: seqs 1..5
    rig.publish(0, _orders(5, 1, 4)[:3])
    rig.publish(1, _orders(4, 2, 5))
    rig.duty()                                   # batch 2: seqs 6..12
    rig.ctl[cells.DURABLE_SEQ] = 5
    rig.duty()
    assert (rig.released(0), rig.released(1)) == (5, 0)
    rig.ctl[cells.DURABLE_SEQ] = 11
    rig.duty()
    assert (rig.released(0), rig.released(1)) == (5, 0)
    rig.ctl[cells.DURABLE_SEQ] = 12
    rig.duty()
    assert (rig.released(0), rig.released(1)) == (8, 4)
    assert rig.pqi[0, 0] == rig.pqi[0, 1] and rig.pqi[1, 0] == rig.pqi[1, 1]


def _resident_pages() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


def test_prefault_maps_every_page_of_a_zeroed_array():
    arr = np.zeros(64 << 20 >> 3, np.int64)      # 64 MiB from calloc: nothing mapped yet
    before = _resident_pages()
    prefault([arr])
    assert _resident_pages() - before >= (64 << 20) // 4096 - 16
    assert not arr.any()

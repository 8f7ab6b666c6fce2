"""The publisher's routing: reports go to their owner's report ring once durable; a slot
whose reader went away has its reports dropped and counted, every one of them, and is
delivered to again when a new reader takes its ring."""

from __future__ import annotations

import numpy as np

from shmex.engine import cells, registry
from shmex.engine.config import EngineConfig
from shmex.engine.ctl import Ctl
from shmex.ring import Ring
from shmex.roles.publisher import PublisherAgent
from shmex.schema import REPORT, reports
from shmex.shm.segment import Segment, ViewsAlive


def _reports(producer: int, seqs) -> np.ndarray:
    r = reports(len(seqs))
    r["kind"], r["producer"], r["cmd_seq"] = 1, producer, seqs
    return r


def test_a_gone_reader_is_dropped_counted_and_a_new_one_is_delivered_to(shm_run, tmp_path):
    cfg = EngineConfig(run_id=shm_run, data_dir=str(tmp_path), producers=0, clients=2)
    slots = len(registry.slot_table(cfg))
    n = cells.ctl_cells(slots, cfg.producer_slots)
    seg = Segment.create(shm_run, "ctl", n * 8, layout="ctl")
    a = seg.view(0, np.int64, n)
    a[cells.CFG_PROC_SLOTS], a[cells.CFG_CLIENTS] = slots, 2
    rings = [Ring.create(shm_run, "out", 256, REPORT)] + [
        Ring.create(shm_run, cells.rep_role(k), 8, REPORT) for k in range(2)]
    out = Ring.attach(rings[0].name, REPORT, side="producer")
    reader0 = Ring.attach(rings[1].name, REPORT, side="consumer")      # slot 1 has no reader
    ctl = Ctl(seg)
    pub = PublisherAgent(cfg, ctl)
    buf = reports(64)
    try:
        def route(*batches):
            for b in batches:
                out.publish(b)
            while pub.work():
                pass

        a[cells.DURABLE_SEQ] = 10
        route(_reports(1, range(1, 6)), _reports(2, range(6, 21)))      # 15 for slot 1: 8 fit
        assert reader0.consume(buf) == 5                                # not durable yet: 11..20
        assert int(a[cells.DROPPED]) == 0
        a[cells.DURABLE_SEQ] = 100
        route(_reports(2, range(21, 24)))
        assert int(a[cells.DROPPED]) == 18 - 8                          # the ring took 8, then its reader was gone
        route(_reports(2, range(24, 29)), _reports(1, [29]))
        assert int(a[cells.DROPPED]) == 15                              # each later report counted
        assert reader0.consume(buf) == 1 and int(a[cells.ROUTED]) == 29
        reader1 = Ring.attach(rings[2].name, REPORT, side="consumer")  # a new client takes slot 1
        try:
            assert reader1.consume(buf) == 8                            # what the ring held
            pub._revive_ns = 0
            route(_reports(2, [30, 31]))
            got = reader1.consume(buf)
            assert got == 2 and list(buf["cmd_seq"][:2]) == [30, 31]    # delivered again
            assert int(a[cells.DROPPED]) == 15
        finally:
            reader1.close()
    finally:
        pub.close()
        ctl.a = None
        del a
        reader0.close()
        out.close()
        for r in rings:
            r.close()
            r.unlink()
        try:
            seg.close()
        except ViewsAlive:     # a failed assertion's traceback still holds `a`: unlink anyway
            pass
        seg.unlink()

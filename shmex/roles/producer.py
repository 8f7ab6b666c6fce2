"""A load producer process: generates orders (numba), sends them, reads its reports.

- Open loop with a rate: order i is due at ``t0 + i * period`` and carries that
  intended time as ``sent_ns``; a stall anywhere (a full ring included) shows up as
  latency instead of silently slowing the schedule (no coordinated omission).
- Without a rate it sends as fast as the input ring takes (``sent_ns`` = generation time).
- It never blocks on a full input ring while reports wait: each cycle sends what fits,
  then reads its report ring, so the engine can always make progress.
- Counters and the latency histogram live in shared memory, written only by this
  producer, in numba (`loadgen.scan_reports`): no Python per order or per report.
- It stops sending on its order count or when the supervisor says STOPPING, marks
  SENDING_DONE, and leaves once the publisher is done and its report ring is empty.
"""

from __future__ import annotations

import os
import time

import numpy as np

from shmex.engine import cells
from shmex.roles import producer_duty, views
from shmex.engine.ctl import Aborted, Ctl
from shmex.ring import Ring
from shmex.schema import COMMAND, REPORT, commands, reports
from shmex.shm.segment import Segment

BATCH = 1024
RBATCH = 8192
DUTY_BUDGET_NS = 20_000_000  # back to Python (heartbeat, phase, supervisor) at least this often (a return costs ~10 us)


def run(cfg, ctl: Ctl, me, k: int) -> int:
    run_id = cfg.run_id
    P = cfg.producer_slots
    w = cfg.wait["producer"]
    inr = Ring.attach(Ring.name_for(run_id, cells.in_role(k)), COMMAND, side="producer", wait=w)
    rep = Ring.attach(Ring.name_for(run_id, cells.rep_role(k)), REPORT, side="consumer", wait=w)
    hseg = Segment.attach(Ring.name_for(run_id, "hist"), layout="hist")
    from shmex.engine.latency import hist_views, stage_row

    t2t, stages, dtab = hist_views(hseg, P)
    hist = t2t[k]
    h_queue = stages[stage_row(P, "queue", k)]
    h_report = stages[stage_row(P, "to_report", k)]
    del t2t, stages
    cnt = ctl.producer_block(k)
    orders = int(cfg.orders_per_producer[k])        # -1: until told to stop
    rate = float(cfg.rate or 0.0) / max(cfg.producers, 1)
    period = int(round(1e9 / rate)) if rate > 0 else 0
    producer_id = k + 1
    src = replay_source(cfg, k)
    if len(src):
        period = 1 if cfg.itch_speed else 0       # paced by the day's own times, or not at all
        orders = len(src) if orders < 0 else min(orders, len(src))
    st = np.zeros(producer_duty.STATE_CELLS, dtype=np.int64)
    st[producer_duty.S_NEXT_CID] = 1
    st[producer_duty.S_NEXT_PSEQ] = 1
    pool_cid = np.zeros(producer_duty.POOL, dtype=np.uint64)
    pool_sym = np.zeros(producer_duty.POOL, dtype=np.uint32)
    buf = commands(BATCH)
    rbuf = reports(RBATCH)
    warm()    # every kernel on scratch state (the real state starts untouched)
    producer_duty.seed_rng(int(cfg.seed) * 1000 + k)
    me.ready()
    cid_base = int(cfg.cid_base)
    nsym = int(cfg.symbols)
    generated = 0
    resume = inr.published_seq          # a restarted producer goes on where its predecessor stopped
    if resume:
        st[producer_duty.S_NEXT_PSEQ] = resume + 1
        generated = resume
        cnt[cells.C_SENT] = resume
    try:
        me.wait_go()
        t0 = time.monotonic_ns()
        if resume and cnt[cells.C_FIRST_SENT_NS]:
            t0 = int(cnt[cells.C_FIRST_SENT_NS])   # a successor keeps its predecessor's open-loop schedule
        cnt[cells.C_FIRST_SENT_NS] = t0
        ds = np.zeros(producer_duty.DUTY_CELLS, dtype=np.int64)
        ds[producer_duty.D_GENERATED] = generated
        ds[producer_duty.D_SENDING] = 1
        bufw = buf.view(np.uint64).reshape(len(buf), -1)
        rbufw = rbuf.view(np.uint64).reshape(len(rbuf), -1)
        in_view, rep_view = views.Ring(*inr.arrays(), 0), views.Ring(*rep.arrays(), 0)   # posted from here (RET_POST)
        load = producer_duty.Load(pool_cid, pool_sym, src, producer_id, nsym, cid_base, t0, period, orders)
        stats = producer_duty.Stats(cnt, hist, h_queue, h_report, dtab)
        try:
            while True:
                rc = producer_duty.duty(buf, bufw, rbuf, rbufw, in_view, rep_view, ds, st, load, stats,
                                        DUTY_BUDGET_NS)
                me.beat()
                if rc == producer_duty.RET_POST:         # a peer blocked on a semaphore: wake it
                    inr.publish(buf[:0], wait=False)
                    rep.consume(rbuf[:0])
                    continue
                # the stop: generated orders the ring has not taken yet (lo < hi at full
                # speed, nearly always) are dropped, never submitted: waiting for lo == hi
                # at a duty return could wait forever while the ring stays full
                if ds[producer_duty.D_SENDING] and (rc == producer_duty.RET_DONE or ctl.phase >= cells.PH_STOPPING):
                    ds[producer_duty.D_SENDING] = 0
                    ds[producer_duty.D_LO] = ds[producer_duty.D_HI]
                    ctl.store(ctl.prod_cell(k, cells.C_SENDING_DONE), 1)
                ctl.check()
                if not ds[producer_duty.D_SENDING] and ctl.load(cells.PUB_DONE) and rep.published_seq == rep.read_seq:
                    break
                # idle: sleep on the report ring until a report comes or the next order is due
                if rc == producer_duty.RET_SLEEP:
                    wait_ns = producer_duty.next_due_ns(src, ds[producer_duty.D_GENERATED], t0, period) \
                        - time.monotonic_ns()
                    if wait_ns > 0:          # wake a little early (timer slack is 1 us)
                        rep.wait_readable(1, timeout_s=min(wait_ns - 20_000, 20_000_000) / 1e9)
                elif rc == producer_duty.RET_FULL:
                    rep.wait_readable(1, timeout_s=0.0002)   # input ring full: the engine is busy
                elif rc == producer_duty.RET_IDLE:
                    rep.wait_readable(1, timeout_s=0.02)
        finally:
            del in_view, rep_view, load, stats    # views of the rings and the histogram segment
    except Aborted:
        pass
    finally:
        ctl.store(ctl.prod_cell(k, cells.C_SENDING_DONE), 1)
        del hist, cnt, h_queue, h_report, dtab
        inr.close()
        rep.close()
        hseg.close()
    return 0


def replay_source(cfg, k: int) -> np.ndarray:
    """The commands producer k replays (an ITCH day's, see `itchload`), or none: it generates."""
    if k != 0 or not cfg.itch:
        return commands(0)
    from shmex.recovery import itchrun

    path = itchrun.paths(cfg.data_dir)["commands"]
    if not os.path.getsize(path):
        return commands(0)
    # copy-on-write: the same array type as a buffer of commands, the file never written
    return np.asarray(np.memmap(path, dtype=COMMAND, mode="c"))


def warm() -> None:
    """Load every kernel of this role (from numba's cache) on scratch state of the live
    types (a standby calls it before it has a role; nothing shared is touched)."""
    from shmex.engine.latency import NBUCKETS

    buf, rbuf = commands(BATCH), reports(RBATCH)
    hist = np.zeros(NBUCKETS, dtype=np.int64)
    cnt = np.zeros(cells.PROD_CELLS, dtype=np.int64)
    dtab = np.zeros((4, 2), dtype=np.int64)
    st = np.zeros(producer_duty.STATE_CELLS, dtype=np.int64)
    st[producer_duty.S_NEXT_CID] = 1
    st[producer_duty.S_NEXT_PSEQ] = 1
    producer_duty.gen_batch(commands(1), 1, st, np.zeros(producer_duty.POOL, dtype=np.uint64), np.zeros(producer_duty.POOL, dtype=np.uint32),
                1, 1, 0, 0, 0, 0)
    producer_duty.scan_reports_staged(rbuf, 0, 0, cnt, hist, hist.copy(), dtab)
    producer_duty.stamp_sent(buf, 0, 0, 0)
    producer_duty.note_sent(buf, 0, 0, 0, hist)
    producer_duty.next_due_ns(buf, 0, 0, 0)
    _warm_duty(buf, rbuf, hist, dtab, cnt)


def _warm_duty(buf, rbuf, hist, dtab, cnt) -> None:
    """Load `duty` (from numba's cache) on scratch rings: nothing shared is touched."""
    from shmex.ring import layout as ring_layout

    def ring():
        return views.Ring(np.zeros((4, 8), dtype=np.uint64), np.zeros(ring_layout.CTL_BYTES // 8, dtype=np.int64),
                    np.zeros(ring_layout.LOCAL_CELLS, dtype=np.int64), 0)

    ds = np.zeros(producer_duty.DUTY_CELLS, dtype=np.int64)
    load = producer_duty.Load(np.zeros(producer_duty.POOL, np.uint64), np.zeros(producer_duty.POOL, np.uint32),
                              commands(0), 1, 1, 0, 0, 0, 0)
    stats = producer_duty.Stats(np.zeros_like(cnt), np.zeros_like(hist), np.zeros_like(hist), np.zeros_like(hist),
                                np.zeros_like(dtab[:4]))
    producer_duty.duty(buf, buf.view(np.uint64).reshape(len(buf), -1), rbuf, rbuf.view(np.uint64).reshape(len(rbuf), -1),
                       ring(), ring(), ds, np.zeros(producer_duty.STATE_CELLS, np.int64), load, stats, 0)

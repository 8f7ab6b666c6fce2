"""The WAL-writer process: journal ring -> WAL; publishes DURABLE_SEQ.

- Smart batching (LMAX journaller): it appends whatever the journal holds and commits
  (one pwrite + one fdatasync in mode group) as soon as the journal is empty or a group
  is full, so a lone command waits for one sync, not for a timer.
- DURABLE_SEQ only grows and is stored (release) only after the flush the mode demands.
- Journal slots are released only up to the durable seq: a WAL writer killed before a
  sync leaves those commands in the ring for its successor.
- At the end (the matcher done and the journal empty) it seals the run. On a durability
  fault (a failed fdatasync, ENOSPC, a log whose damage it must not cut) it records what
  failed (`engine.halt`), WAL_DONE = 3, prints the reason and exits `halt.HALT_STATUS`:
  the supervisor stops the engine and restarts no successor (fail-stop).
- A successor counts nothing durable that it did not sync itself (`WalWriter` syncs the
  dead writer's last run first) and never cuts a record at or below the DURABLE_SEQ its
  predecessor published.
- Mode none runs its duty cycle in numba (`walwriter_duty.duty`: journal -> mapped
  segment -> DURABLE_SEQ, yielding between polls) while prefilled room lasts; batches
  beyond it (pwrite, rotation) and modes group/always take the Python loop below.
  Either way a batch is committed by one step, `walwriter_duty.publish`, once the
  flush its mode demands has returned; the seal ends with it too.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from shmex.errors import CorruptRecord, Halt, UsageError
from shmex.engine import cells, halt, registry
from shmex.roles import walwriter_duty
from shmex.engine.ctl import Aborted, Ctl, ProcessSlot, shares_core
from shmex.ring import Ring
from shmex.ring.wait import WaitStrategy, resolve
from shmex.schema import COMMAND, commands
from shmex.crc import HW
from shmex.wal.writer import WalWriter

BATCH = 4096
DUTY_BUDGET_NS = 20_000_000  # back to Python (heartbeat, phase) at least this often (a return costs ~10 us)
BLOCK_ONLY = WaitStrategy("block:0", spin_ns=0, block=True)   # the kernel spun and yielded already


def _warm() -> None:
    """Load the encode kernel now (from numba's cache), not on the first real batch."""
    import numpy as np

    from shmex.wal import _kernels as wal_kernels
    from shmex.wal import layout as wal_layout
    from shmex.crc import HW

    one = commands(1)
    one["seq"] = 1
    wal_kernels._encode_commands(one.view(np.uint64).reshape(1, 8), np.zeros(2 * wal_layout.SLOT_WORDS, np.uint64),
                        0, 1, 1, np.uint64(0), HW)


def warm() -> None:
    """Load every kernel of this role (from numba's cache) on scratch arrays of the live
    types (a standby calls it before it has a role; nothing shared is touched)."""
    _warm()
    walwriter_duty.warm()


def run(cfg, ctl: Ctl, me: ProcessSlot, index: int = 0) -> int:
    extra = {"segment_bytes": int(cfg.segment_bytes)} if cfg.segment_bytes else {}
    # a successor in a running engine (DURABLE_SEQ was stored): its predecessor died in a
    # process crash, so only the log's tail needs scanning (bounded, not O(log))
    durable_before = ctl.load(cells.DURABLE_SEQ)
    successor = durable_before > 0
    try:
        wal = WalWriter(cfg.data_dir, mode=cfg.wal_mode, group_records=BATCH, config=cfg.book,
                        tail_only=successor, durable_floor=durable_before, sync_fault=_sync_fault(ctl), **extra)
    except (Halt, CorruptRecord) as e:
        return _halt(ctl, e, cfg.data_dir)
    if ctl.phase == cells.PH_STARTING:
        _drop_stale_snapshots(cfg.data_dir, wal.first_seq - 1)
    strategy = resolve(cfg.wait["walwriter"])
    kernel = wal.mode == "none"   # mode none: the duty cycle runs in numba (wal_duty)
    # with the kernel, its spin and yield phases are the strategy's; Python only blocks
    journal = Ring.attach(Ring.name_for(cfg.run_id, "journal"), COMMAND, side="consumer",
                          wait=BLOCK_ONLY if kernel and strategy.block else strategy)
    if journal.released_seq < journal.published_seq or ctl.load(cells.DURABLE_SEQ):
        # a restart (resume.py): journal records the log already holds are skipped by seq
        from shmex.recovery.resume import log, skip_journal

        skipped = skip_journal(journal, wal.first_seq - 1)
        log(f"walwriter: resumed at seq {wal.first_seq - 1:,}; {skipped:,} journal records "
            f"already logged skipped")
    base = journal.released_seq          # journal position of seq wal.first_seq
    retention = Retention(cfg, ctl)
    first = wal.first_seq
    ctl.store(cells.DURABLE_SEQ, wal.durable_seq)
    buf = commands(BATCH)
    seqs, eng = buf["seq"], buf["engine_ns"]
    from shmex.engine.latency import hist_views, stage_row
    from shmex.shm.segment import Segment

    P = cfg.producer_slots
    hseg = Segment.attach(Ring.name_for(cfg.run_id, "hist"), layout="hist")
    t2t, stages, dtab = hist_views(hseg, P)
    h_durable = stages[stage_row(P, "to_durable")]
    del t2t, stages
    warm()
    me.ready()
    durable = wal.durable_seq
    sealed = False
    j_slots, j_ctl, j_loc = journal.arrays()
    j_space_sem = journal.sem_addrs()[1]   # the matcher may wait for journal space
    if kernel:
        bufw = buf.view(np.uint64).reshape(BATCH, -1)
        st = np.zeros(walwriter_duty.W_CELLS, np.int64)
        dg = np.zeros(1, np.uint64)
        poll_ns, idle_ns = walwriter_duty.idle_params(strategy, shares_core())
        no_progress = False              # a prefill step that gained nothing: stop asking
    try:
        me.wait_go()
        while True:
            retention.tick(wal)           # a compare, unless the last batch rotated
            if kernel:
                words, pos_w, room = wal.mapped_room()
                if room:
                    st[walwriter_duty.W_POS], st[walwriter_duty.W_ROOM], st[walwriter_duty.W_NEXT] = pos_w, room, wal.next_seq
                    dg[0] = wal.digest
                    low = 0 if no_progress else wal.prefill_below()
                    rc = walwriter_duty.duty(j_slots, j_ctl, j_loc, j_space_sem, bufw, seqs, eng, words, st, dg, HW,
                                 ctl.a, h_durable, dtab, low, DUTY_BUDGET_NS, poll_ns, idle_ns)
                    me.beat()
                    if st[walwriter_duty.W_DONE]:
                        wal.advance_mapped(int(st[walwriter_duty.W_DONE]), dg[0])
                        durable = wal.durable_seq
                        no_progress = False
                    if rc == walwriter_duty.RET_BAD_SEQ:
                        raise UsageError(f"walwriter: a journal record carries seq {int(st[walwriter_duty.W_BAD_SEQ])}, "
                                         f"expected {wal.next_seq}: the journal does not continue the log")
                    if rc == walwriter_duty.RET_PREFILL:
                        before = wal.mapped_room()[2]
                        wal.poll()
                        no_progress = wal.mapped_room()[2] <= before
                        continue
                    if rc == walwriter_duty.RET_BUDGET:
                        if _turn(ctl, journal, wal, wait=False):
                            break
                        continue
                    if rc == walwriter_duty.RET_IDLE:
                        if _turn(ctl, journal, wal, wait=True):
                            break
                        continue
                    # RET_ROOM: the next batch goes through the Python loop below
                words = None      # the segment's mapping closes at rotation with its last view
            n = journal.consume(buf, release=False)
            if n:
                wal.append(buf[:n])
            if n < BATCH:
                wal.commit()            # the journal is drained: sync what waited
            d = wal.durable_seq
            if d != durable:      # the flush returned (append or commit synced what the mode demands)
                durable = d
                walwriter_duty.publish(seqs, eng, n, d, time.monotonic_ns(), h_durable, dtab, ctl.a,
                                       j_ctl, j_loc, j_space_sem, base + d - first + 1)
            me.beat()
            if n:
                continue
            if _turn(ctl, journal, wal, wait=True):
                break
    except Aborted:
        # drain what the journal holds (whole sequenced commands) so the sealed run is complete
        try:
            while (n := journal.consume(buf, release=False)):
                wal.append(buf[:n])
        except Halt:
            pass                   # wal.halt says why: handled below
    except Halt:
        pass                       # wal.halt says why: handled below
    finally:
        if wal.halt is None:
            try:
                d = wal.close(seal=True)
            except Halt:
                d = None           # wal.halt says why: handled below
            if d is not None:
                sealed = True
                # only what the log holds: records read after a bad seq stay for a successor
                upto = min(journal.read_seq, base + d - first + 1)
                walwriter_duty.publish(seqs, eng, 0, d, 0, h_durable, dtab, ctl.a, j_ctl, j_loc, j_space_sem, upto)
        del j_slots, j_ctl, j_loc
        journal.close()
        h_durable = dtab = None
        hseg.close()
    if wal.halt is not None:
        return _halt(ctl, wal.halt, cfg.data_dir)
    ctl.store(cells.WAL_DONE, 1 if sealed else 2)
    return 0


class Retention:
    """WAL retention (``cfg.keep_snapshots``; 0: off): once per segment (at the start and
    after each rotation) remove the segments wholly older than what the kept snapshots and
    a matcher's restart need (`retention.retire_bound`); counted in WAL_RETIRED_*."""

    def __init__(self, cfg, ctl: Ctl):
        from shmex.recovery.resume import pseq_window

        self.cfg, self.ctl = cfg, ctl
        self.window = pseq_window(cfg.ring_in * cfg.producer_slots)
        self.segment = -1

    def tick(self, wal: WalWriter) -> None:
        # a feed is regenerated from the whole journal: with one, nothing is retired
        if not self.cfg.keep_snapshots or self.cfg.whole_log or wal.segment == self.segment:
            return
        from shmex.recovery.retention import retire_bound

        self.segment = wal.segment
        shipped = self.cfg.replicated_cell()
        upto = retire_bound(self.cfg.data_dir, keep=self.cfg.keep_snapshots, durable_seq=wal.durable_seq,
                            window=self.window,
                            replicated_seq=None if shipped is None else self.ctl.load(shipped))  # ORDER: acquire
        if upto is not None:
            n, nbytes = wal.retire(upto)
            if n:
                self.ctl.a[cells.WAL_RETIRED_SEGMENTS] += n    # plain: this process is the only writer
                self.ctl.a[cells.WAL_RETIRED_BYTES] += nbytes


def _drop_stale_snapshots(data_dir: str, log_end: int) -> None:
    """Before this engine's matcher runs: a snapshot beyond the log's end holds commands
    the log does not (taken ahead of durability before a crash or a halt, or cut since);
    the log now goes on with other commands at those seqs, so it must go."""
    from shmex.recovery.resume import log
    from shmex.recovery.retention import drop_snapshots_after

    gone = drop_snapshots_after(data_dir, log_end)
    if gone:
        log(f"walwriter: removed {len(gone)} snapshot(s) beyond the log's end (seq {log_end:,}): "
            + ", ".join(os.path.basename(p) for p in gone))


def _halt(ctl: Ctl, err, data_dir: str) -> int:
    """Fail-stop: say why, record it for the supervisor (which restarts no successor: it
    would trust what the fault left in the page cache), exit HALT_STATUS."""
    print(f"walwriter: durability fault, stopping: {err}", file=sys.stderr, flush=True)
    halt.record(ctl, err, data_dir)
    ctl.store(cells.WAL_DONE, 3)
    return halt.HALT_STATUS


def _sync_fault(ctl: Ctl):
    """The drill's "sync error" fault: each bump of FAULT_SYNC fails the writer's next
    fdatasync with EIO. None (no hook at all) unless the drill turned faults on in the
    run's environment (`registry.FAULTS_ENV`)."""
    if os.environ.get(registry.FAULTS_ENV) != "1":
        return None
    seen = [ctl.load(cells.FAULT_SYNC)]

    def fault() -> bool:
        n = ctl.load(cells.FAULT_SYNC)
        if n == seen[0]:
            return False
        seen[0] = n
        return True

    return fault


def _turn(ctl: Ctl, journal: Ring, wal: WalWriter, *, wait: bool) -> bool:
    """Between batches: True when the run is over (the matcher is done and everything it
    journaled was read); else check on the supervisor and, if `wait`, spend the idle
    time preparing the log (`WalWriter.poll`) and block until the journal has more."""
    if ctl.load(cells.MATCHER_DONE) and journal.published_seq == journal.read_seq:
        return True
    ctl.check()
    if ctl.phase == cells.PH_ABORT:
        raise Aborted("abort")
    if wait:
        wal.poll()
        journal.wait_readable(1, timeout_s=0.02)
    return False

"""The WAL-writer process: journal ring -> WAL; publishes DURABLE_SEQ.

- Smart batching (LMAX journaller): it appends whatever the journal holds and commits
  (one pwrite + one fdatasync in mode group) as soon as the journal is empty or a group
  is full, so a lone command waits for one sync, not for a timer.
- DURABLE_SEQ only grows and is stored (release) only after the flush the mode demands.
- Journal slots are released only up to the durable seq: a WAL writer killed before a
  sync leaves those commands in the ring for its successor.
- At the end (the matcher done and the journal empty) it seals the run; on a durability
  fault it records WAL_DONE = 3, prints the reason and exits 3 (fail-stop).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from shmex.errors import Halt
from shmex.procs import layout as L
from shmex.procs.ctl import Aborted, Ctl, ProcessSlot
from shmex.ring import Ring
from shmex.schema import COMMAND, commands
from shmex.wal.writer import WalWriter

BATCH = 4096


def _warm() -> None:
    """Load the encode kernel now (from numba's cache), not on the first real batch."""
    import numpy as np

    from shmex.wal import _kernels as WK
    from shmex.wal import layout as WL
    from shmex.wal.crc import HW

    one = commands(1)
    one["seq"] = 1
    WK._encode_commands(one.view(np.uint64).reshape(1, 8), np.zeros(2 * WL.SLOT_WORDS, np.uint64),
                        0, 1, 1, np.uint64(0), HW)


def warm() -> None:
    """Load every kernel of this role (from numba's cache) on scratch arrays of the live
    types (a standby calls it before it has a role; nothing shared is touched)."""
    from shmex.procs.latency import NBUCKETS, mark_durable

    buf = commands(2)
    mark_durable(buf["seq"], buf["engine_ns"], 0, 0, 0, np.zeros(NBUCKETS, np.int64), np.zeros((4, 2), np.int64))
    _warm()


def run(cfg: dict, ctl: Ctl, me: ProcessSlot) -> int:
    extra = {"segment_bytes": int(cfg["segment_bytes"])} if cfg.get("segment_bytes") else {}
    wal = WalWriter(cfg["data_dir"], mode=cfg["durability"], group_records=BATCH,
                    config=cfg["book"], **extra)
    journal = Ring.attach(Ring.name_for(cfg["run_id"], "journal"), COMMAND, side="consumer",
                          wait=cfg["wait"]["walwriter"])
    if journal.released_seq < journal.published_seq or ctl.load(L.DURABLE_SEQ):
        # a restart (resume.py): what the dead writer left in the page cache is made
        # durable, and journal records the log already holds are skipped by seq
        from shmex.procs.resume import log, skip_journal, sync_old_segments

        sync_old_segments(cfg["data_dir"])
        skipped = skip_journal(journal, wal.first_seq - 1)
        log(f"walwriter: resumed at seq {wal.first_seq - 1:,}; {skipped:,} journal records "
            f"already logged skipped")
    base = journal.released_seq          # journal position of seq wal.first_seq
    first = wal.first_seq
    ctl.store(L.DURABLE_SEQ, wal.durable_seq)
    buf = commands(BATCH)
    seqs, eng = buf["seq"], buf["engine_ns"]
    from shmex.procs.latency import hist_views, mark_durable, stage_row
    from shmex.shm.segment import Segment

    P = cfg["producers"] + cfg["clients"]
    hseg = Segment.attach(Ring.name_for(cfg["run_id"], "hist"), layout="hist")
    t2t, stages, dtab = hist_views(hseg, P)
    h_durable = stages[stage_row(P, "to_durable")]
    del t2t, stages
    warm()
    me.ready()
    durable = wal.durable_seq
    sealed = False
    try:
        me.wait_go()
        while True:
            n = journal.consume(buf, release=False)
            if n:
                wal.append(buf[:n])
            if n < BATCH:
                wal.commit()            # the journal is drained: sync what waited
            d = wal.durable_seq
            if d != durable:
                durable = d
                if n:   # before the store below: a reader of seq s finds its durable time
                    mark_durable(seqs, eng, n, d, time.monotonic_ns(), h_durable, dtab)
                ctl.store(L.DURABLE_SEQ, d)  # ORDER: after the sync returned; pairs with publisher's load
                journal.release(base + d - first + 1)
                ctl.a[L.COMMITS] += 1
            me.beat()
            if n:
                continue
            if ctl.load(L.MATCHER_DONE) and journal.published_seq == journal.read_seq:
                break
            ctl.check()
            if ctl.phase == L.PH_ABORT:
                raise Aborted("abort")
            wal.poll()
            journal.wait_readable(1, timeout_s=0.02)
    except Aborted:
        # drain what the journal holds (whole sequenced commands) so the sealed run is complete
        while (n := journal.consume(buf, release=False)):
            wal.append(buf[:n])
    except Halt as e:
        print(f"walwriter: durability fault, stopping: {e}", file=sys.stderr, flush=True)
        ctl.store(L.WAL_DONE, 3)
        return 3
    finally:
        if wal.halted is None:
            d = wal.close(seal=True)
            sealed = True
            ctl.store(L.DURABLE_SEQ, d)
            if journal.read_seq > journal.released_seq:
                journal.release()
        journal.close()
        h_durable = dtab = None
        hseg.close()
    ctl.store(L.WAL_DONE, 1 if sealed else 2)
    return 0

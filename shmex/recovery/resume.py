"""Crash recovery inside a running engine: what a restarted process does before its loop.

The ring is the retransmission buffer (DESIGN.md): input and journal slots are released
only when durable, out-ring slots only after routing. So a successor finds, in the rings,
everything its predecessor had not finished, and these helpers make the resume exact:

- **matcher** (`resume_book`): waits until the WAL writer has made the journal durable
  (everything the dead matcher sequenced is then in the log, D = DURABLE_SEQ), finds
  where the out ring stops (the last report's command c, and how many of c's reports
  it holds), rebuilds the book at c - 1 from the newest valid snapshot + the WAL, then
  replays c..D from the WAL and keeps the reports the out ring lacks (bit-identical to
  the ones the dead matcher would have emitted: the matcher is deterministic), so the
  report stream continues with no gap and no duplicate. It also scans the WAL tail for
  the last ``pseq`` per producer (`last_pseqs`), and `skip_logged` drops from each input
  ring the commands the WAL already holds (they are a prefix of what was not released).
  Both trust only what the matcher wrote: in the WAL, ``producer`` is the ring a command
  was read from and ``pseq`` its place in that ring (`matcher_duty._stamp_identity`),
  and the skip releases ring places, never reading a field a client wrote.
- **WAL writer** (`skip_journal`): the new WalWriter cut the torn tail, synced what the
  dead writer left in the page cache (it reports nothing durable it has not synced) and
  continues at ``first_seq``; journal records before it (written by the dead writer, not
  yet released) are skipped by seq.
- **publisher** (`skip_delivered`): the out-ring window it re-reads (consumed, routed, not
  yet released) may hold reports already delivered; the last record of each report ring
  tells where delivery stopped, and those reports are skipped, not sent twice.

Bound of the pseq scan: a command still in an input ring (unreleased) that the WAL holds
has seq > D - (sum of input-ring capacities) - BATCH (the matcher releases every ring each
cycle, and no ring can have more than its capacity sequenced since its last release).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from shmex.schema import REPORT, commands

MATCHER_BATCH = 4096


@dataclass
class Resumed:
    matcher: object
    durable: int                 # D: the log's end when the matcher resumed
    reemit_from: int             # c: first command whose reports were (re)built
    backlog: np.ndarray          # reports the out ring lacks, in order
    last_pseq: np.ndarray        # int64[65536]: last pseq per producer id in the WAL tail
    seconds: float = 0.0
    snapshot_seq: int = 0
    phases_ms: dict | None = None  # where the time went: durable wait, recover, re-emit, pseq scan


def wait_journal_durable(journal, ctl, timeout_s: float = 120.0) -> int:
    """Until the WAL writer released every journal slot (all durable); -> DURABLE_SEQ."""
    deadline = time.monotonic() + timeout_s
    while journal.released_seq < journal.published_seq:
        ctl.check(every_ns=0)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the journal did not become durable within {timeout_s:.0f} s "
                               f"(released {journal.released_seq}, published {journal.published_seq})")
        time.sleep(0.0005)
    return ctl.durable_seq


def _record(ring, pos: int, dtype) -> np.void:
    slots, _, _ = ring.arrays()
    rec = slots[pos & (ring.capacity - 1)].copy().view(dtype)[0]
    del slots
    return rec


def out_tail(out, base: int) -> tuple[int, int]:
    """(c, j): the out ring's last report is about command c and its last j records are
    c's reports; (base + 1, 0) when the ring never got a report."""
    pub = out.published_seq
    if pub == 0:
        return base + 1, 0
    c = int(_record(out, pub - 1, REPORT)["cmd_seq"])
    j, p = 0, pub - 1
    while p >= max(0, pub - out.capacity) and int(_record(out, p, REPORT)["cmd_seq"]) == c:
        j += 1
        p -= 1
    return c, j


def last_pseqs(data_dir: str, lo: int, hi: int) -> np.ndarray:
    """Highest pseq per producer id among the logged commands lo..hi."""
    from shmex.wal import WalReader

    last = np.zeros(1 << 16, dtype=np.int64)
    if hi < lo:
        return last
    r = WalReader(data_dir)
    for cmds in r.commands(lo, hi):
        np.maximum.at(last, cmds["producer"].astype(np.int64), cmds["pseq"].astype(np.int64))
    return last


def pseq_window(in_caps: int) -> int:
    """How far below the durable seq a restarted matcher reads the WAL for the last pseq
    of each producer (see the bound in the module doc); retention keeps at least this."""
    return 2 * (in_caps + MATCHER_BATCH)


def resume_book(cfg, ctl, journal, out, in_caps: int) -> Resumed:
    from shmex.matcher import Matcher
    from shmex.matcher.matcher import book_shape
    from shmex.recovery import recover as recovery
    from shmex.wal import WalReader

    t0 = time.perf_counter()
    D = wait_journal_durable(journal, ctl)
    t_durable = time.perf_counter()
    ph = {"durable_wait": (t_durable - t0) * 1e3, "snapshot_load": 0.0, "wal_replay": 0.0, "replayed": 0,
          "reemit": 0.0}
    base = ctl.run_base_seq
    data = cfg.data_dir
    c, j = out_tail(out, base)
    backlog = np.zeros(0, dtype=REPORT)
    snap = 0
    if D == 0:
        m = Matcher(**cfg.book)
    else:
        until = c - 1 if c <= D else None
        r = recovery.recover(data, until=until)
        ph["snapshot_load"] = (r.seconds - r.replay_seconds) * 1e3
        ph["wal_replay"], ph["replayed"] = r.replay_seconds * 1e3, r.records
        want = D if until is None else until
        if r.last_seq != want or (r.damage and until is None):
            raise RuntimeError(f"recovery of {data} reached seq {r.last_seq}, wanted {want} "
                               f"(the log ends at {D})" + (f": {r.damage}" if r.damage else ""))
        m = r.matcher
        snap = r.snapshot.seq if r.snapshot else 0
        if book_shape(m.config) != book_shape(cfg.book):
            raise RuntimeError(f"the data directory's book is {book_shape(m.config)}, this launch "
                               f"asks for {book_shape(cfg.book)}: use another --data-dir or --fresh")
        if until is not None:   # rebuild the reports of c..D the out ring lacks
            t_re = time.perf_counter()
            parts = []
            for cmds in WalReader(data).commands(c, D):
                parts.append(m.process_into(cmds, stamp=False).copy())
            if m.last_seq != D:
                raise RuntimeError(f"replaying {data} from seq {c} reached {m.last_seq}, not {D}")
            reps = np.concatenate(parts) if parts else backlog
            if j and not (reps[:j]["cmd_seq"] == c).all():
                raise RuntimeError(f"rebuilt reports of command {c} disagree with the out ring")
            backlog = reps[j:].copy()
            ph["reemit"] = (time.perf_counter() - t_re) * 1e3
    t_scan = time.perf_counter()
    lo = max(base + 1, D - pseq_window(in_caps))
    lastp = last_pseqs(data, lo, D) if D >= lo else np.zeros(1 << 16, dtype=np.int64)
    t1 = time.perf_counter()
    ph["pseq_scan"] = (t1 - t_scan) * 1e3
    if D > base:
        log(f"matcher: resume to seq {D:,}: journal durable wait {ph['durable_wait']:.0f} ms, snapshot "
            f"{snap:,} load {ph['snapshot_load']:.0f} ms, WAL replay {ph['replayed']:,} commands "
            f"{ph['wal_replay']:.0f} ms, re-emit {ph['reemit']:.0f} ms, pseq scan {ph['pseq_scan']:.0f} ms "
            f"({(t1 - t0) * 1e3:.0f} ms in all)")
    return Resumed(matcher=m, durable=D, reemit_from=c, backlog=backlog, last_pseq=lastp,
                   seconds=t1 - t0, snapshot_seq=snap, phases_ms=ph)


def skip_logged(ring, last: int, buf: np.ndarray) -> int:
    """Release an input ring's records up to place `last` (its last pseq in the WAL, which
    the matcher stamped as the ring place); -> records released. The records' own bytes
    are not read: a client wrote them."""
    skipped = last - ring.released_seq
    if skipped <= 0:
        return 0
    if last > ring.published_seq:
        raise RuntimeError(f"Invariant: {ring.name}: the WAL holds its place {last}, the ring "
                           f"was published only up to {ring.published_seq}")
    while ring.read_seq < last:      # read ahead to `last` (release needs it read), then release
        ring.consume(buf[:min(len(buf), last - ring.read_seq)], release=False)
    ring.release(last)
    ring.rewind()
    return skipped


def _release_prefix(ring, buf: np.ndarray, field: str, last: int) -> int:
    """Release the ring's unreleased records whose `field` (increasing) is <= last; the
    rest stay for the successor to read. -> records released."""
    skipped = 0
    while True:
        n = ring.consume(buf, release=False)
        if n == 0:
            break
        k = int(np.searchsorted(buf[field][:n].astype(np.int64), last, side="right"))
        ring.release(ring.released_seq + k)
        ring.rewind()
        skipped += k
        if k < n:
            break
    return skipped


def skip_journal(journal, wal_last: int) -> int:
    """WAL writer restart: release journal records already in the log (seq <= wal_last)."""
    return _release_prefix(journal, commands(1024), "seq", wal_last)


def skip_delivered(pend: np.ndarray, hi: int, dests, sentinel: int) -> int:
    """Publisher restart: mark reports of pend[:hi] already in their report ring (up to the
    ring's last record) with the `sentinel` producer id (routed nowhere); -> how many."""
    if hi == 0:
        return 0
    words = pend[:hi].view(np.uint64).reshape(hi, 8)
    prod = pend["producer"][:hi]
    skipped = 0
    for d, ring in enumerate(dests):
        pub = ring.published_seq
        if pub == 0:
            continue
        slots, _, _ = ring.arrays()
        last = slots[(pub - 1) & (ring.capacity - 1)].copy()
        del slots
        idx = np.nonzero(prod == d + 1)[0]
        if len(idx) == 0:
            continue
        eq = np.nonzero((words[idx] == last).all(axis=1))[0]
        if len(eq):
            k = int(eq[0]) + 1
            pend["producer"][idx[:k]] = sentinel
            skipped += k
    return skipped


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

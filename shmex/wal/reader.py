"""Read a log directory back: every record CRC-checked, in seq order, from any seq.

``WalReader(dir).commands(from_seq, until)`` yields COMMAND batches; when it stops,
``reader.end`` says where and why: the last seq read, the first damage (a CorruptRecord
naming file, offset, seq and what is wrong) or None, and the control records met.
Nothing at or after the first bad record is ever yielded.

``cut_tail(dir)`` makes a crashed log writable again: it zeroes a torn tail and removes
segments after it. Only a tail after which no record is in good order is torn
(`intact_after`); it refuses (CorruptRecord) damage followed by intact records, damage at
or below the seq a dead writer reported durable, and damage inside a run the manifest says
was sealed beyond it: that is damage inside acknowledged records, not a torn write, and
only an explicit ``shmex repair`` (``force``) cuts it. A group that was being written when
the machine crashed can reach the disk out of order (intact pages behind a torn one):
that tail too is refused, and repair cuts it; nothing in it was acknowledged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from shmex.errors import CannotOpen, CorruptRecord
from shmex.schema import COMMAND
from shmex.wal import _kernels as wal_kernels
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.crc import HW
from shmex.files import fsync_dir, pwrite_all
from shmex.wal.segment import MappedSegment, list_segments, read_header

BATCH = 65536
_SEQ_MAX = (1 << 63) - 1


@dataclass
class Control:
    """A control record met by the scan."""
    kind: int          # layout.REC_RUN_START / REC_SNAPSHOT / REC_RUN_SEALED / REC_RUN_CONFIG
    seq: int
    path: str
    offset: int
    run_id: str = ""   # hex, run records
    first_seq: int = 0
    last_seq: int = 0
    records: int = 0
    digest: int = 0    # sealed: stored digest; start: 0
    computed_digest: int | None = None  # sealed: the chain recomputed by this scan, if it saw the whole run
    state_hash: str = ""  # snapshot records
    config: dict | None = None  # config records: the run's matcher config


@dataclass
class ScanEnd:
    last_seq: int                    # last intact command seq the scan reached (the log's end
                                     # unless damage or ``until`` stopped it)
    records: int = 0                 # commands yielded
    damage: CorruptRecord | None = None
    segment: int = -1                # index of the segment the scan ended in
    path: str = ""
    offset: int = 0                  # byte offset where the next record would go / the bad one is
    controls: list[Control] = field(default_factory=list)
    segments: int = 0                # segment files visited


class WalReader:
    """Scan a log directory. Raises CannotOpen if the directory is missing or unreadable."""

    def __init__(self, directory):
        self.directory = str(directory)
        if not os.path.isdir(self.directory):
            raise CannotOpen(f"{self.directory}: no such WAL directory")
        self.segments = list_segments(self.directory)
        self.end: ScanEnd | None = None

    def first_seq(self) -> int | None:
        """The first command seq the log holds (from the first segment header), or None if empty."""
        if not self.segments:
            return None
        return int(read_header(self.segments[0][1])["first_seq"])

    def _start_index(self, from_seq: int) -> int:
        """Index into self.segments of the last segment whose first_seq <= from_seq.

        Reads headers only: mapping a segment populates all of it."""
        start = 0
        for i, (_, path) in enumerate(self.segments):
            try:
                first = int(read_header(path)["first_seq"])
            except CannotOpen:
                if os.path.exists(path):
                    break      # unreadable: the scan from `start` meets it and reports it
                start = i + 1  # removed by retention since the listing: the scan starts after it
                continue
            except CorruptRecord:
                break  # the scan from `start` meets this segment and reports it
            if first > from_seq:
                break
            start = i
        return start

    def commands(self, from_seq: int | None = None, until: int | None = None, batch: int = BATCH):
        """Yield COMMAND arrays with seq from ``from_seq`` (default: the log's first) up to
        ``until`` (inclusive). Every record on the way is verified, skipped ones too.

        A yielded array is a view of a reused buffer: valid until the next iteration.
        Damage ends the scan (it raises nothing): see ``self.end``.
        """
        last = _SEQ_MAX if until is None else int(until)
        out = np.zeros((batch, 8), dtype=np.uint64)
        view = out.view(COMMAND).reshape(batch)
        end = self.end = ScanEnd(last_seq=(from_seq or 1) - 1)
        if not self.segments:
            return
        expect = None
        digest = np.uint64(0)
        digest_run = False  # the digest is whole only when the scan saw the run's start
        start = 0 if from_seq is None else self._start_index(from_seq)
        prev_index = None
        prev_status = None
        for index, path in self.segments[start:]:
            end.path, end.segment, end.offset = path, index, 0
            if prev_index is not None and index != prev_index + 1:
                end.damage = CorruptRecord(path, 0, expect, f"segment {prev_index + 1} is missing (found {index} after {prev_index})")
                return
            try:
                seg = MappedSegment(path)
            except CorruptRecord as e:
                end.damage = CorruptRecord(e.path, e.offset, expect, e.what)
                return
            end.segments += 1
            try:
                if int(seg.segment) != index:
                    end.damage = CorruptRecord(path, 56, expect, f"header says segment {seg.segment}, file name says {index}")
                    return
                if expect is None:
                    if from_seq is None:
                        from_seq = seg.first_seq
                    elif seg.first_seq > from_seq:
                        end.damage = CorruptRecord(path, 64, from_seq, f"the log starts at seq {seg.first_seq}: seqs {from_seq}..{seg.first_seq - 1} are not in it")
                        return
                    expect = seg.first_seq
                    end.last_seq = expect - 1
                elif seg.first_seq != expect:
                    end.damage = CorruptRecord(path, 64, expect, f"segment starts at seq {seg.first_seq}, the log continues at {expect}")
                    return
                if prev_status == wal_kernels.ST_END and not _starts_run(seg):
                    end.damage = CorruptRecord(path, wal_layout.HEADER_BYTES, expect,
                                               "the previous segment ended early but this one does not start a new run")
                    return
                pos = wal_layout.HEADER_WORDS
                while True:
                    st, n, pos, expect, digest, ctrl = wal_kernels._scan_slots(
                        seg.words, pos, seg.end_word, expect, from_seq, last, out, digest, HW)
                    end.offset = pos * 8
                    end.last_seq = expect - 1
                    if n:
                        end.records += n
                        yield view[:n]
                    if st == wal_kernels.ST_FULL:
                        continue
                    if st == wal_kernels.ST_CONTROL:
                        c = _control(seg, ctrl, digest if digest_run else None)
                        end.controls.append(c)
                        if c.kind == wal_layout.REC_RUN_START:
                            digest, digest_run = np.uint64(0), True
                        continue
                    if st == wal_kernels.ST_LIMIT:
                        return
                    if st in wal_kernels.STATUS_WHAT:
                        end.damage = CorruptRecord(path, pos * 8, expect, _what(st, seg.words, pos, expect))
                        return
                    if st == wal_kernels.ST_END:
                        nz = _first_nonzero(seg.words, pos, seg.end_word)
                        if nz >= 0:
                            end.damage = CorruptRecord(path, nz * 8, expect,
                                                       f"non-zero bytes after the end of the data at offset {pos * 8}: a lost or zeroed write")
                            return
                    if seg.size_problem is not None:
                        at = pos * 8 if st == wal_kernels.ST_SEG_END else min(seg.file_bytes, seg.size_bytes)
                        end.damage = CorruptRecord(path, at, expect, seg.size_problem)
                        return
                    prev_status = st
                    break
            finally:
                seg.close()
            prev_index = index


def _starts_run(seg: MappedSegment) -> bool:
    w0 = int(seg.words[wal_layout.HEADER_WORDS])
    return ((w0 >> 16) & 0xFFFF) == wal_layout.REC_RUN_START


def _first_nonzero(words, pos: int, end: int) -> int:
    tail = words[pos:end]
    if not tail.any():
        return -1
    return pos + int(np.argmax(tail != 0))


def _what(st: int, words, pos: int, expect: int) -> str:
    w0, sq = int(words[pos]), int(words[pos + 1])
    base = wal_kernels.STATUS_WHAT[st]
    if st == wal_kernels.ST_BAD_LEN:
        return f"{base}: found {w0 & 0xFFFF}"
    if st == wal_kernels.ST_BAD_KIND:
        return f"{base}: {(w0 >> 16) & 0xFFFF}"
    if st == wal_kernels.ST_BAD_SEQ:
        return f"{base}: record carries seq {np.int64(np.uint64(sq))}, expected {expect} (command) or {expect - 1} (control)"
    if st == wal_kernels.ST_BAD_CRC:
        return f"{base}: stored {w0 >> 32:#010x}"
    return base


def _control(seg: MappedSegment, ctrl_pos: int, computed: np.uint64 | None) -> Control:
    raw = np.asarray(seg.words[ctrl_pos:ctrl_pos + wal_layout.SLOT_WORDS]).tobytes()
    kind = (int.from_bytes(raw[:8], "little") >> 16) & 0xFFFF
    seq = int.from_bytes(raw[8:16], "little", signed=True)
    c = Control(kind=kind, seq=seq, path=seg.path, offset=ctrl_pos * 8)
    payload = raw[16:]
    if kind == wal_layout.REC_SNAPSHOT:
        p = np.frombuffer(payload, dtype=wal_layout.CTRL_SNAPSHOT)[0]
        c.last_seq = int(p["seq"])
        c.state_hash = bytes(p["state_hash"]).decode("ascii", "replace")
    elif kind == wal_layout.REC_RUN_CONFIG:
        p = np.frombuffer(payload, dtype=wal_layout.CTRL_CONFIG)[0]
        c.run_id = bytes(p["run_id"]).hex()
        c.config = {k: int(p[k]) for k in wal_layout.CONFIG_KEYS}
    else:
        p = np.frombuffer(payload, dtype=wal_layout.CTRL_RUN)[0]
        c.run_id = bytes(p["run_id"]).hex()
        c.first_seq, c.last_seq, c.records = int(p["first_seq"]), int(p["last_seq"]), int(p["records"])
        c.digest = int(p["digest"])
        if kind == wal_layout.REC_RUN_SEALED and computed is not None:
            c.computed_digest = int(computed) & 0xFFFFFFFF
    return c


@dataclass
class Intact:
    """Records in good order after the first damage: the log is corrupt there, not torn."""
    path: str
    offset: int        # of the first of them
    seq: int           # of the first of them
    count: int
    last_seq: int      # the highest seq among them

    def __str__(self) -> str:
        return (f"intact records follow it ({self.count:,} in all, up to seq {self.last_seq}; the first, "
                f"seq {self.seq}, at {self.path} offset {self.offset})")


def intact_after(end: ScanEnd, segments) -> Intact | None:
    """The records in good order after ``end.damage``: in the rest of its segment and in every
    later one, whatever their headers say (a record counts if its length, kind, CRC and seq
    check out and its seq is not below the damage's). None: nothing intact follows, so the
    damage is a torn tail. ``segments``: the (index, path) list of the log (`list_segments`)."""
    dmg = end.damage
    if dmg is None:
        return None
    min_seq = -(1 << 62) if dmg.seq is None else dmg.seq - 1   # a control record carries seq - 1
    found = None
    for index, path in segments:
        if index < end.segment or (index == end.segment and path != dmg.path):
            continue
        words = _raw_words(path)
        start = wal_layout.HEADER_WORDS
        if path == dmg.path and dmg.offset >= wal_layout.HEADER_BYTES:
            start += (dmg.offset - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES * wal_layout.SLOT_WORDS
        first, n, top = wal_kernels._find_intact(words, start, len(words), min_seq, HW)
        if n and found is None:
            found = Intact(path, int(first) * 8, int(np.int64(words[first + 1])), 0, -1)
        if n:
            found.count += int(n)
            found.last_seq = max(found.last_seq, int(top))
        del words
    return found


def _raw_words(path) -> np.ndarray:
    """A segment file's bytes as u64 words, whatever its header says (none if it is gone)."""
    try:
        n = os.path.getsize(path) // 8
    except FileNotFoundError:
        n = 0
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    return np.memmap(path, dtype=np.uint64, mode="r", shape=(n,))


@dataclass
class Cut:
    """What cut_tail did (or, ``dry_run``, would do): the log now ends after ``last_seq``."""
    last_seq: int
    next_segment: int              # index for the next segment a writer creates
    damage: CorruptRecord | None   # where the cut starts (the damage, or the first untrusted record)
    zeroed_bytes: int = 0
    removed: list[str] = field(default_factory=list)
    end: ScanEnd | None = None
    seqs: tuple[int, int] | None = None   # first..last command seq the cut bytes held, where known
    intact: Intact | None = None   # records in good order that the cut dropped (force only)


def cut_tail(directory, *, force: bool = False, tail_segments: int | None = None,
             durable_floor: int = 0, trust_upto: int | None = None, dry_run: bool = False) -> Cut:
    """Scan the log; zero a torn tail and remove later segments so a writer can go on.

    Only a torn tail is cut without ``force``: damage after which no record is in good
    order (`intact_after`), at a seq above ``durable_floor`` (what the dead writer reported
    durable: its successor passes it), in a run the manifest does not say was sealed
    beyond it. Anything else is damage inside acknowledged records: CorruptRecord naming
    file, offset and seq (``shmex repair`` cuts it, with ``force``).

    ``trust_upto`` D: the records after seq D are cut whatever they look like (the last
    run halted on a failed sync after D: they were never acknowledged, and the page cache
    that shows them may not be what the disk holds).

    ``tail_segments`` N: scan only the last N segments (all of them by default). Only
    for a successor after a *process* crash, whose page cache saw every write the dead
    writer made, so that only its last record can be torn: the cost is then bounded
    instead of growing with the log.
    After a machine crash damage can lie anywhere in unsynced data: scan everything.
    ``dry_run``: find and report the cut, change nothing.
    """
    r = WalReader(directory)
    start = None
    if tail_segments is not None and len(r.segments) > tail_segments:
        try:
            start = int(read_header(r.segments[-tail_segments][1])["first_seq"])
        except (CorruptRecord, CannotOpen):
            start = None   # a bad header there: the whole scan finds and names it
    end = _scan_end(r, start, None)
    next_segment = r.segments[-1][0] + 1 if r.segments else 0
    cut = Cut(last_seq=end.last_seq, next_segment=next_segment, damage=end.damage, end=end)
    if trust_upto is not None and end.last_seq >= trust_upto and (end.last_seq > trust_upto or end.damage):
        untrusted = max(end.last_seq, trust_upto + 1)
        if end.last_seq > trust_upto:
            end = _scan_end(r, start, trust_upto)     # stops in front of command trust_upto + 1
        cut.last_seq, cut.end, cut.seqs = end.last_seq, end, (trust_upto + 1, untrusted)
        cut.damage = CorruptRecord(end.path, end.offset, trust_upto + 1,
                                   f"seqs {trust_upto + 1}..{untrusted} were written after the last good sync "
                                   f"of a run that halted on a failed sync (never acknowledged): not trusted")
    elif end.damage is None:
        return cut
    else:
        cut.intact = intact_after(end, r.segments)
        if not force:
            _refuse_unless_torn(directory, end, cut.intact, durable_floor)
        if end.damage.seq is not None:
            cut.seqs = (end.damage.seq, max(end.damage.seq, cut.intact.last_seq if cut.intact else end.damage.seq))
    dmg_path, dmg_off = cut.damage.path, cut.damage.offset
    later = [p for i, p in r.segments if i > end.segment]
    if dmg_off < wal_layout.HEADER_BYTES:   # the segment as a whole is wrong: it goes entirely
        later.insert(0, dmg_path)
    elif not dry_run:
        cut.zeroed_bytes = _zero_from(dmg_path, dmg_off, _segment_size(dmg_path))
    else:
        cut.zeroed_bytes = _nonzero_span(dmg_path, dmg_off)
    cut.removed = later
    if not dry_run:
        for p in later:
            os.unlink(p)
        if later:
            fsync_dir(directory)
    return cut


def _scan_end(r: WalReader, start: int | None, until: int | None) -> ScanEnd:
    for _ in r.commands(from_seq=start, until=until, batch=BATCH):
        pass
    return r.end


def _refuse_unless_torn(directory, end: ScanEnd, intact: Intact | None, durable_floor: int) -> None:
    """Raise CorruptRecord unless ``end.damage`` is a torn tail (see `cut_tail`)."""
    dmg = end.damage

    def refuse(why: str):
        raise CorruptRecord(dmg.path, dmg.offset, dmg.seq, f"{dmg.what}; {why}, so this is damage inside "
                            f"the log, not a torn tail: refusing to cut (`shmex repair {directory}` cuts it)")

    doc = manifest.read(directory)
    sealed = [run for run in (doc["runs"] if doc else []) if run["sealed"] and run["last_seq"] > end.last_seq]
    if sealed:
        refuse(f"run {sealed[0]['run_id']} was sealed at seq {sealed[0]['last_seq']}, so the records after "
               f"seq {end.last_seq} were durable")
    if intact is not None:
        refuse(str(intact))
    if dmg.seq is not None and dmg.seq <= durable_floor:
        refuse(f"seq {dmg.seq} was durable (the writer before reported durable seq {durable_floor})")


def _segment_size(path) -> int:
    seg = MappedSegment(path)
    try:
        return seg.size_bytes
    finally:
        seg.close()


def _nonzero_span(path, offset: int) -> int:
    """Bytes from ``offset`` to the last non-zero byte of a segment (what a cut would zero)."""
    words = _raw_words(path)
    nz = np.flatnonzero(words[offset // 8:])
    return int(nz[-1] + 1) * 8 if nz.size else 0


def _zero_from(path, offset: int, size_bytes: int) -> int:
    """Zero [offset, last non-zero byte] of a segment, restore its full size, fdatasync.

    Returns the bytes zeroed. Offsets are slot- or word-aligned, so the word view suffices.
    """
    file_bytes = os.path.getsize(path)
    stop = offset
    if file_bytes > offset:
        words = np.memmap(path, dtype=np.uint64, mode="r", shape=(file_bytes // 8,))
        nz = np.flatnonzero(words[offset // 8:])
        stop = offset + (int(nz[-1]) + 1) * 8 if nz.size else offset
        del words, nz
        stop = min(max(stop, offset), file_bytes)
    if file_bytes != size_bytes:  # a partial word at a cut-short end is not in the word view
        stop = max(stop, min(file_bytes, size_bytes))
    fd = os.open(path, os.O_WRONLY)
    try:
        zero = bytes(1 << 20)
        for pos in range(offset, stop, len(zero)):
            pwrite_all(fd, zero[:min(len(zero), stop - pos)], pos)
        if file_bytes != size_bytes:  # cut short (or extended): back to the preallocated size
            os.ftruncate(fd, size_bytes)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return max(0, stop - offset)

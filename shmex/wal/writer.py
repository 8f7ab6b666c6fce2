"""WalWriter: append sequenced commands, group-commit them, expose ``durable_seq``.

A library object with a duty-cycle API (no threads): the WAL-writer process drains its
ring, calls ``append(batch)``, then ``poll()``; ``poll`` commits when the group is due and
otherwise spends idle time preparing the next segment. ``durable_seq`` only grows.

Write path, chosen by measurement on this machine (see PERFORMANCE notes in the bench):
- ``group`` / ``always``: the kernel encodes records (header + CRC32C) into a small
  staging buffer; a commit is ONE ``pwrite`` of the staged bytes + ONE ``fdatasync``.
  Dirtying pages through a shared mapping and then syncing (fdatasync or msync) was
  1.5-4x slower at equal batch size: the kernel writes back and re-protects whole
  large folios of a mapped file. pwrite at batch 4096: p50 0.35 ms, 10.8M records/s.
- ``none``: page cache only (a process crash loses nothing, a machine crash may lose the
  tail); segments are sized sparse, not zero-filled. What costs here is not the store but
  creating the page cache behind it. Measured on a fresh sparse 64 MiB segment (2-core
  EPYC, kernel 6.18, ext4, read_ahead_kb 8192), 80-byte records, encode included:
  stores through the shared mapping 15-19M records/s (write faults on holes; each
  read-around allocates and zeroes up to 8 MiB), the same after MADV_POPULATE_WRITE of
  the whole segment 18-20M/s, staging + one pwrite per 4096-8192 records 25-28M/s (the
  copy is the allocation, in large folios), stores into pages already in the page cache
  ~56M/s. So: an append of >= ``_SMALL`` records is encoded into a staging chunk and
  pwritten (no fdatasync); a smaller one is stored straight into the mapping when idle
  polls have prefilled the page cache ahead of the cursor (pwrite of zeros over the
  zeros that are there) - no syscall per small append - and pwritten otherwise. Idle
  polls also size the next segment (ftruncate + fsync) before it is needed.
Readers always see the segments as read-only memory maps: pwrite and mapping stores
land in the same page cache.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager

import numpy as np

from shmex.files import FILE_MODE, fsync_dir, make_private_dir, pwrite_all
from shmex.errors import CannotOpen, CorruptRecord, Halt, SchemaMismatch, UsageError
from shmex.schema import COMMAND
from shmex.wal import _kernels as wal_kernels
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.crc import HW
from shmex.wal.reader import cut_tail
from shmex.wal.segment import (_ZERO_CHUNK, create_spare, fill_spare, finish_spare, list_segments,
                               read_header, size_spare)

MODES = ("none", "group", "always")
_SMALL = 1024                 # mode none: appends this large go through staging + pwrite
_NONE_CHUNK = 8192            # mode none: staging slots per pwrite (640 KiB: large folios)
_PREFILL_STEP = 256 << 10     # mode none: bytes of zeros one idle poll writes ahead
_PREFILL_AHEAD = 1 << 20      # mode none: how far ahead of the cursor idle polls prefill
_ZEROS = memoryview(_ZERO_CHUNK)
LOCK_NAME = ".writer.lock"
TAIL_SEGMENTS = 2            # tail_only: the segment being written and the one before it


def _first_seq_of(path) -> int | None:
    """A segment's first seq from its checked header; None if the header does not check
    out (retention stops in front of it: verify and recovery name it)."""
    try:
        return int(read_header(path)["first_seq"])
    except (CorruptRecord, CannotOpen):
        return None


def lock_directory(directory, held: str = "a running engine's WAL writer holds") -> int:
    """Take the WAL writer's lock of a log directory (flock on LOCK_NAME); -> its fd, whose
    close releases it. CannotOpen, saying ``held``, while another process holds it."""
    path = os.path.join(str(directory), LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as e:
        raise CannotOpen(f"{path}: cannot open the WAL writer's lock: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CannotOpen(f"{directory}: {held} {LOCK_NAME}") from None
    return fd


def _progress(runs: list[dict]) -> tuple[int, bool]:
    """How far a list of journal runs has come: its runs, and whether the last is sealed."""
    return len(runs), bool(runs and runs[-1].get("sealed"))


class WalWriter:
    """Appends to a log directory (created if missing). One writer per directory (flock).

    Opening an existing directory first cuts a torn tail (``reader.cut_tail``), then starts
    a new run in a new segment at seq ``last_seq + 1`` with a RUN_START record.
    ``tail_only``: the successor of a writer that died in a process crash (the page cache
    is coherent, only the last record can be torn) scans the last TAIL_SEGMENTS segments,
    not the whole log. ``durable_floor``: the durable seq the dead writer reported; damage
    at or below it is refused, never cut (it was acknowledged).
    ``sync_fault``: a callable asked before each fdatasync; True makes that sync fail with
    EIO (the drill's "sync error" fault; None in every other use).

    Faults: an OSError anywhere (a failed fdatasync, ENOSPC in a write, a prefill, a
    rotation) halts the writer for good (`Halt`, naming operation, file, offset, errno):
    after a failed fdatasync the kernel may have dropped the dirty pages and a later sync
    may report success, so nothing written since the last good sync is trusted. The halt
    is noted in the manifest; the next writer cuts those records (they were never
    acknowledged) instead of counting what the page cache shows.

    ``origin``: this writer sequences the commands it writes (an engine). A follower's
    writer (False) writes another engine's journal: that engine's runs reach it through
    `note_journal_runs`, and its own run is not one of them. An origin writer over a
    directory whose manifest has ``journal_runs`` (an engine that took over from a
    follower) adds its run there too, so the journal's feed goes on across the takeover.

    Knobs: ``mode`` (see module doc); ``group_records`` / ``group_us``: a group commits when
    this many records wait or the oldest has waited this long (smaller = lower commit latency,
    more fdatasyncs); ``segment_bytes``: segment file size (rotation cost vs file count).
    """

    def __init__(self, directory, *, mode: str = "group", group_records: int = 4096,
                 group_us: int = 500, segment_bytes: int = wal_layout.SEGMENT_BYTES,
                 config: dict | None = None, first_seq: int | None = None,
                 force_cut: bool = False, tail_only: bool = False, durable_floor: int = 0,
                 sync_fault=None, origin: bool = True):
        if mode not in MODES:
            raise UsageError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
        if group_records < 1 or group_us < 0:
            raise UsageError(f"group_records={group_records}, group_us={group_us}: need >= 1 and >= 0")
        if segment_bytes < wal_layout.MIN_SEGMENT_BYTES:
            raise UsageError(f"segment_bytes={segment_bytes}: need >= {wal_layout.MIN_SEGMENT_BYTES}")
        self.directory = os.path.abspath(str(directory))
        self.mode = mode
        self.group_records = int(group_records)
        self.group_ns = int(group_us) * 1000
        self.segment_bytes = int(segment_bytes)
        self._slots_per_segment = (self.segment_bytes - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES
        self._halted: Halt | None = None
        self._closed = False
        self._manifest = None
        self._sync_fault = sync_fault
        self.origin = origin
        self.durable_seq = None           # unknown until the open has synced what it keeps
        try:
            make_private_dir(self.directory)
        except OSError as e:
            raise CannotOpen(f"{self.directory}: cannot create WAL directory: {e.strerror}") from e
        self._lock_fd = lock_directory(self.directory, "another WAL writer holds")
        try:
            self._open_run(config, first_seq, force_cut, TAIL_SEGMENTS if tail_only else None, durable_floor)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---- opening ---------------------------------------------------------------------------

    def _open_run(self, config, first_seq, force_cut, tail_segments, durable_floor) -> None:
        doc = manifest.read(self.directory)
        with self._io("cut", self.directory):
            cut = cut_tail(self.directory, force=force_cut, tail_segments=tail_segments,
                           durable_floor=durable_floor, trust_upto=manifest.halted_at(doc))
        has_log = cut.end is not None and cut.end.segments > 0
        if has_log and doc is None:
            raise CorruptRecord(manifest.path_of(self.directory), 0, None, "segments exist but the manifest is missing")
        doc = doc or manifest.new()
        if has_log:
            nxt = cut.last_seq + 1
            if first_seq is not None and first_seq != nxt:
                raise UsageError(f"first_seq={first_seq}: the log in {self.directory} continues at seq {nxt}")
        else:
            nxt = 1 if first_seq is None else int(first_seq)
        self.run_id = os.urandom(16)
        self.first_seq = nxt
        self.next_seq = nxt              # the seq the next appended command must carry
        self._sync_last_run(doc)
        self.durable_seq = nxt - 1       # only grows, only after a sync of this process; see commit()
        self.records = 0
        self._digest = np.uint64(0)
        self._staging_slots = _NONE_CHUNK if self.mode == "none" else max(self.group_records, 1)
        self._staging = np.zeros(self._staging_slots * wal_layout.SLOT_WORDS, dtype=np.uint64)
        self._ready = 0                   # mode none: the page cache is populated up to here
        self._last_small = True           # mode none: the last append was a small one
        self._staged = 0                  # slots in staging
        self._staged_since_ns = 0
        self._spare_fd = None
        self._spare_done = 0
        self._fd = None
        self._words = None
        self._segment = cut.next_segment - 1
        self._new_segment()
        # a whole matcher config goes into the log too (a partial one, as tests give, only
        # into the manifest): recovery and verify check the manifest's against it
        logged = isinstance(config, dict) and all(isinstance(config.get(k), int) for k in wal_layout.CONFIG_KEYS)
        self._write_control(wal_layout.REC_RUN_START, self._run_payload(0, 0), sync=not logged)
        if logged:
            p = np.zeros(1, dtype=wal_layout.CTRL_CONFIG)
            p["run_id"] = np.void(self.run_id)
            for k in wal_layout.CONFIG_KEYS:
                p[k] = int(config[k])
            self._write_control(wal_layout.REC_RUN_CONFIG, p, sync=True)
        # started_ns (UTC) beside mono_ns (CLOCK_MONOTONIC, the engine's stamps) read
        # together: the feed turns a logged stamp into a time of day with their difference
        mono, utc = time.monotonic_ns(), time.time_ns()
        run = {"run_id": self.run_id.hex(), "started_ns": utc, "mono_ns": mono, "config": config,
               "first_seq": nxt, "first_segment": self._segment, "sealed": False,
               "mode": self.mode, "segment_bytes": self.segment_bytes}
        if cut.damage is not None or cut.removed:
            run["recovered"] = {"last_seq": cut.last_seq, "damage": str(cut.damage),
                                "zeroed_bytes": cut.zeroed_bytes, "removed": cut.removed}
        doc["runs"].append(run)
        if self.origin and "journal_runs" in doc:
            doc["journal_runs"].append({k: run[k] for k in manifest.FEED_KEYS if k in run})
        with self._io("manifest", manifest.path_of(self.directory)):
            manifest.write(self.directory, doc)
        self._manifest = doc

    def _sync_last_run(self, doc) -> None:
        """fsync the segments of the log's last run unless it was sealed (its close synced
        them): a run that crashed left records in the page cache only, and this writer
        counts them durable only once it has synced them itself (earlier runs were synced
        by the writer that opened the log after them)."""
        last = doc["runs"][-1] if doc and doc["runs"] else None
        if last is not None and last["sealed"]:
            return
        first = last["first_segment"] if last is not None else 0
        for index, path in list_segments(self.directory):
            if index >= first:
                with self._io("fsync", path):
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)

    def _new_segment(self) -> None:
        """Close the current segment and open the next (finishing the spare if it is not ready)."""
        self._close_segment()
        self._segment += 1
        spare = os.path.join(self.directory, wal_layout.SPARE_NAME)
        final = os.path.join(self.directory, wal_layout.segment_name(self._segment))
        with self._io("rotation", spare, self._spare_done):
            if self._spare_fd is None:
                self._spare_fd, self._spare_done = create_spare(spare), 0
            finish_spare(self._spare_fd, spare, final, run_id=self.run_id, segment=self._segment,
                         first_seq=self.next_seq, size_bytes=self.segment_bytes, done=self._spare_done,
                         zero_fill=self.mode != "none")
            self._fd, self._spare_fd, self._spare_done = self._spare_fd, None, 0
            if self.mode == "none":
                self._words = np.memmap(final, dtype=np.uint64, mode="r+", shape=(self.segment_bytes // 8,))
        self._pos = wal_layout.HEADER_BYTES        # byte offset of the next slot
        self._slots_left = self._slots_per_segment
        self._path = final
        if self.mode == "none":
            self._ready = wal_layout.HEADER_BYTES  # the header's page: written, so in the page cache

    def _close_segment(self) -> None:
        if self._fd is None:
            return
        self._words = None  # the mapping closes with its last reference
        os.close(self._fd)
        self._fd = None

    # ---- appending -------------------------------------------------------------------------

    def append(self, cmds: np.ndarray) -> int:
        """Append sequenced COMMAND records (seq must continue ``next_seq``); return how many.

        ``none``: they are in the page cache and durable_seq covers them on return.
        ``group``: staged; committed by poll()/commit() or when group_records wait.
        ``always``: each is written and fdatasync'ed before the next.
        """
        self._check_live()
        if not isinstance(cmds, np.ndarray) or cmds.dtype != COMMAND:
            raise SchemaMismatch("WalWriter.append", COMMAND, getattr(cmds, "dtype", type(cmds)))
        n = cmds.shape[0]
        if n == 0:
            return 0
        src = np.ascontiguousarray(cmds).view(np.uint64).reshape(n, 8)
        done = 0
        while done < n:
            if self._slots_left == 0:
                self._rotate()
            if self.mode == "none":
                k, bad = self._append_none(src[done:], n < _SMALL)
                self.durable_seq = self.next_seq - 1  # in the page cache: what mode none promises
            else:
                room = min(self._slots_left - self._staged, self.group_records - self._staged)
                if self.mode == "always":
                    room = 1
                if room <= 0:
                    self.commit()
                    continue
                if self._staged == 0:
                    self._staged_since_ns = time.monotonic_ns()
                k, self._digest, bad = wal_kernels._encode_commands(src[done:], self._staging,
                                                          self._staged * wal_layout.SLOT_WORDS, room,
                                                          self.next_seq, self._digest, HW)
                self._staged += k
                self.next_seq += k
                self.records += k
                if self.mode == "always" or self._staged >= self.group_records:
                    self.commit()
            done += k
            if bad >= 0:
                got = int(cmds[done]["seq"])
                raise UsageError(f"WalWriter.append: command {done} carries seq {got}, expected {self.next_seq}"
                                 f" ({done} earlier commands of this call were appended)")
        return n

    def _append_none(self, src: np.ndarray, small: bool) -> tuple[int, int]:
        """Mode none: encode what fits of ``src`` into the page cache; -> (written, bad)."""
        self._last_small = small
        mapped = (self._ready - self._pos) // wal_layout.SLOT_BYTES  # slots over prefilled pages
        if small and mapped > 0:
            k, self._digest, bad = wal_kernels._encode_commands(src, self._words, self._pos // 8,
                                                      min(self._slots_left, mapped),
                                                      self.next_seq, self._digest, HW)
        else:
            k, self._digest, bad = wal_kernels._encode_commands(src, self._staging, 0,
                                                      min(self._slots_left, self._staging_slots),
                                                      self.next_seq, self._digest, HW)
            with self._io("write", self._path, self._pos):
                pwrite_all(self._fd, self._staging[: k * wal_layout.SLOT_WORDS], self._pos)
            self._ready = max(self._ready, self._pos + k * wal_layout.SLOT_BYTES)
        self._advance(k)
        return k, bad

    def mapped_room(self) -> tuple[np.ndarray | None, int, int]:
        """Mode none: (the segment's words, word index of the next slot, slots that can be
        stored from there over pages already in the page cache) for a duty kernel that
        encodes into the mapping itself (`procs.wal_duty`); (None, 0, 0) otherwise."""
        if self.mode != "none" or self._words is None or self._closed or self._halted is not None:
            return None, 0, 0
        room = min(self._slots_left, max(0, self._ready - self._pos) // wal_layout.SLOT_BYTES)
        return self._words, self._pos // 8, room

    def room_goal(self) -> int:
        """Mode none: the prefilled slots idle polls aim to keep ahead of the cursor (fewer
        where the segment ends sooner)."""
        return min(self._slots_left, _PREFILL_AHEAD // wal_layout.SLOT_BYTES)

    def prefill_below(self) -> int:
        """Mode none: with fewer prefilled slots than this, an idle poll has a whole
        prefill step to do (a duty kernel hands its idle time back for it)."""
        return self.room_goal() - _PREFILL_STEP // wal_layout.SLOT_BYTES

    def advance_mapped(self, k: int, digest) -> None:
        """Mode none: a duty kernel encoded ``k`` commands into the mapping at the cursor
        (what `mapped_room` offered), chaining ``digest``; they are in the page cache."""
        self._check_live()
        words, pos, room = self.mapped_room()
        if not 0 <= k <= room:
            raise UsageError(f"advance_mapped: {k} records, but only {room} slots were offered at word {pos}")
        self._digest = np.uint64(digest)
        self._last_small = True
        self._advance(k)
        self.durable_seq = self.next_seq - 1

    @property
    def digest(self) -> np.uint64:
        """The run digest so far (the crcs of the command records, chained)."""
        return self._digest

    def _prefill(self) -> None:
        """Mode none, idle: write zeros (over the zeros of the sparse file) ahead of the cursor,
        one step per call, so small appends store into pages already in the page cache."""
        start = max(self._ready, self._pos)
        if start - self._pos >= _PREFILL_AHEAD or start >= self.segment_bytes:
            return
        n = min(_PREFILL_STEP, self.segment_bytes - start)
        # the stores the mapping then takes land only on blocks these writes allocated: a
        # disk too full for them would kill the process (SIGBUS) at a store, so it halts here
        with self._io("prefill", self._path, start):
            pwrite_all(self._fd, _ZEROS[:n], start)
        self._ready = start + n

    def _advance(self, k: int) -> None:
        """Mode none: k slots are in the page cache (stored into the mapping or pwritten)."""
        self._pos += k * wal_layout.SLOT_BYTES
        self._slots_left -= k
        self.next_seq += k
        self.records += k

    def commit(self) -> int:
        """Write what is staged and fdatasync it (group/always); return durable_seq."""
        self._check_live()
        if self.mode == "none" or self._staged == 0:
            return self.durable_seq
        nbytes = self._staged * wal_layout.SLOT_BYTES
        with self._io("write", self._path, self._pos):
            pwrite_all(self._fd, self._staging[: self._staged * wal_layout.SLOT_WORDS], self._pos)
        self._sync(self._path, self._pos)
        self._pos += nbytes
        self._slots_left -= self._staged
        self._staged = 0
        # durable now: the fdatasync above returned for every staged record
        self.durable_seq = self.next_seq - 1
        return self.durable_seq

    def poll(self, now_ns: int | None = None) -> int:
        """Duty cycle: commit if the group is due; else prepare the next segment. -> durable_seq."""
        self._check_live()
        if self._staged:
            now = time.monotonic_ns() if now_ns is None else now_ns
            if self._staged >= self.group_records or now - self._staged_since_ns >= self.group_ns:
                return self.commit()
            return self.durable_seq
        if self.mode == "none" and self._last_small and self._spare_done >= self.segment_bytes:
            self._prefill()  # only small appends store through the mapping (see module doc)
        else:
            self._prepare_spare()
        return self.durable_seq

    def _prepare_spare(self) -> None:
        """Prepare the next segment one step per idle call, so rotation rarely stalls:
        group/always zero-fill it 1 MiB a step, paced by `_spare_goal`; none sizes it
        sparse (ftruncate + fsync)."""
        spare = os.path.join(self.directory, wal_layout.SPARE_NAME)
        with self._io("spare", spare, self._spare_done):
            if self._spare_fd is None:
                self._spare_fd, self._spare_done = create_spare(spare), 0
            elif self._spare_done < self.segment_bytes:
                if self.mode == "none":
                    self._spare_done = size_spare(self._spare_fd, self.segment_bytes)
                elif self._spare_done < self._spare_goal():
                    self._spare_done = fill_spare(self._spare_fd, self._spare_done, self.segment_bytes)

    def _spare_goal(self) -> int:
        """How far the spare's zero-fill should be: as far through the spare as the log is
        through its segment, plus a quarter of a segment. The zeros go to the disk at the
        log's own pace, never as a burst that the live segment's syncs wait behind, and
        are done before the rotation needs them."""
        return min(self.segment_bytes, self._pos + self.segment_bytes // 4)

    def _rotate(self) -> None:
        self.commit()  # group/always: the old segment is synced before the new one gets records
        self._new_segment()

    # ---- control records -------------------------------------------------------------------

    def _run_payload(self, last_seq: int, digest: int) -> np.ndarray:
        p = np.zeros(1, dtype=wal_layout.CTRL_RUN)
        p["run_id"] = np.void(self.run_id)
        p["first_seq"] = self.first_seq
        p["last_seq"] = last_seq
        p["records"] = self.records
        p["time_ns"] = time.time_ns()
        p["digest"] = digest
        return p

    def _write_control(self, kind: int, payload: np.ndarray, *, sync: bool) -> None:
        """One control record (seq = last command seq), written and optionally synced now."""
        self.commit()
        if self._slots_left == 0:
            self._new_segment()
        slot = np.zeros(wal_layout.SLOT_WORDS, dtype=np.uint64)
        wal_kernels._encode_slot(slot, 0, kind, self.next_seq - 1, payload.view(np.uint64).reshape(1, 8), 0, HW)
        with self._io("write", self._path, self._pos):
            pwrite_all(self._fd, slot, self._pos)
        if sync:
            self._sync(self._path, self._pos)
        self._pos += wal_layout.SLOT_BYTES
        self._slots_left -= 1
        self._ready = max(self._ready, self._pos)

    def note_snapshot(self, seq: int, state_hash: str) -> None:
        """Log that a snapshot of the state after ``seq`` was taken (a SNAPSHOT_TAKEN record)."""
        self._check_live()
        if seq > self.next_seq - 1:
            raise UsageError(f"note_snapshot: seq {seq} is beyond the last appended seq {self.next_seq - 1}")
        p = np.zeros(1, dtype=wal_layout.CTRL_SNAPSHOT)
        p["seq"], p["time_ns"], p["state_hash"] = seq, time.time_ns(), state_hash.encode("ascii")[:48]
        self._write_control(wal_layout.REC_SNAPSHOT, p, sync=self.mode != "none")

    def note_journal_runs(self, runs: list[dict]) -> None:
        """A follower's writer: the runs of the engine that sequenced the journal, as its
        replicator published them (`manifest.feed_runs`), into the manifest's
        ``journal_runs``. Called before any command of a new run is appended, so that
        whatever reads the durable log finds the run of each command it reads. Runs only
        grow: a list the held one already extends (an earlier doc, the stream read again)
        changes nothing; one whose runs disagree with the held ones is refused."""
        self._check_live()
        if self.origin:
            raise UsageError(f"{self.directory}: note_journal_runs is for a follower's writer (origin=False)")
        where = manifest.path_of(self.directory)
        manifest.check_journal_runs(where, runs)
        held = self._manifest.get("journal_runs") or []
        for i, (a, b) in enumerate(zip(held, runs)):
            if a["run_id"] != b["run_id"] or a["first_seq"] != b["first_seq"]:
                raise CorruptRecord(where, 0, b["first_seq"], f"journal run {i}: the primary's is {b['run_id']} "
                                    f"from seq {b['first_seq']}, this log holds {a['run_id']} from {a['first_seq']}")
        if _progress(runs) <= _progress(held):
            return                        # what is held already (an earlier doc: the stream read again)
        self._manifest["journal_runs"] = runs
        with self._io("manifest", manifest.path_of(self.directory)):
            manifest.write(self.directory, self._manifest)

    # ---- retention -------------------------------------------------------------------------

    def retire(self, upto_seq: int) -> tuple[int, int]:
        """Remove the segment files whose records all lie at or below ``upto_seq`` (the
        caller's bound: older than any snapshot recovery may start from), oldest first and
        never the one being written; -> (segments, bytes) removed.

        The manifest's ``retention`` says first where the log now starts (first segment and
        seq, and the totals removed), then the files go: a crash in between leaves files
        the manifest already gave up, never a log that looks cut at its start.
        """
        self._check_live()
        segs = [(i, p) for i, p in list_segments(self.directory) if i <= self._segment]
        gone = []
        with self._io("retire", self.directory):
            for (i, path), (_, nxt) in zip(segs, segs[1:]):
                after = _first_seq_of(nxt)
                if i == self._segment or after is None or after - 1 > upto_seq:
                    break
                gone.append((path, os.path.getsize(path)))
            if not gone:
                return 0, 0
            keep = segs[len(gone)]
            ret = self._manifest.setdefault("retention", {"removed_segments": 0, "removed_bytes": 0})
            ret.update(first_segment=keep[0], first_seq=_first_seq_of(keep[1]),
                       removed_segments=ret["removed_segments"] + len(gone),
                       removed_bytes=ret["removed_bytes"] + sum(b for _, b in gone), retired_ns=time.time_ns())
            manifest.write(self.directory, self._manifest)
            for path, _ in gone:
                os.unlink(path)
            fsync_dir(self.directory)
        return len(gone), sum(b for _, b in gone)

    # ---- closing ---------------------------------------------------------------------------

    def close(self, seal: bool = True) -> int:
        """Commit, sync (every mode: a clean shutdown is durable), seal the run; -> durable_seq."""
        if self._closed:
            return self.durable_seq
        try:
            if self._halted is None:
                self.commit()
                if seal:
                    digest = int(self._digest) & 0xFFFFFFFF
                    self._write_control(wal_layout.REC_RUN_SEALED, self._run_payload(self.next_seq - 1, digest), sync=True)
                else:
                    self._sync(self._path, self._pos)
                self.durable_seq = self.next_seq - 1
                if seal:
                    run = self._manifest["runs"][-1]
                    run.update(sealed=True, last_seq=self.next_seq - 1, records=self.records,
                               digest=f"{digest:08x}", sealed_ns=time.time_ns())
                    if self.origin and "journal_runs" in self._manifest:
                        self._manifest["journal_runs"][-1].update(sealed=True, last_seq=self.next_seq - 1)
                    with self._io("manifest", manifest.path_of(self.directory)):
                        manifest.write(self.directory, self._manifest)
        finally:
            self._closed = True
            self._close_segment()
            if self._spare_fd is not None:
                os.close(self._spare_fd)
                self._spare_fd = None
                os.unlink(os.path.join(self.directory, wal_layout.SPARE_NAME))
            os.close(self._lock_fd)
        return self.durable_seq

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(seal=exc_type is None)

    # ---- faults ----------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self._halted is not None:
            raise self._halted
        if self._closed:
            raise UsageError("WalWriter is closed")

    def _sync(self, path, offset: int) -> None:
        """fdatasync the current segment, or halt (the drill's fault hook may fail it)."""
        with self._io("fdatasync", path, offset):
            if self._sync_fault is not None and self._sync_fault():
                raise OSError(errno.EIO, "injected by shmex drill: sync error")
            os.fdatasync(self._fd)

    @contextmanager
    def _io(self, op: str, path, offset: int = 0):
        """Run the block; an OSError in it halts the writer (see `_fail`)."""
        try:
            yield
        except OSError as e:
            self._fail(op, path, offset, e)

    def _fail(self, op: str, path, offset: int, e: OSError) -> None:
        """A durability fault: fail-stop, for good. After a failed fdatasync the file's state
        is unknown (dirty pages may be dropped and a later sync report success), so no sync
        is tried again and nothing written since the last good one is trusted: the manifest
        says so for the next writer, if the disk still takes that write."""
        halt = Halt(op, path, offset, e.errno or errno.EIO, e.strerror or str(e), durable_seq=self.durable_seq)
        self._halted = halt
        if self._manifest is not None:
            self._manifest["runs"][-1]["halted"] = {"durable_seq": self.durable_seq, "reason": str(halt),
                                                    "at_ns": time.time_ns()}
            try:
                manifest.write(self.directory, self._manifest)
            except OSError as m:
                halt.args = (f"{halt}; the halt could not be noted in {wal_layout.MANIFEST}: {m.strerror}",)
        raise halt from e

    @property
    def segment(self) -> int:
        """The index of the segment being written."""
        return self._segment

    @property
    def appended_seq(self) -> int:
        return self.next_seq - 1

    @property
    def halted(self) -> str | None:
        """Why the writer halted (`Halt`'s message), or None."""
        return None if self._halted is None else str(self._halted)

    @property
    def halt(self) -> Halt | None:
        return self._halted

"""Follow a live log: the commands from a seq on, up to a bound the caller knows is durable.

``WalTail(dir, from_seq).read(until, out)`` copies the commands from where it stands up to
``until`` (inclusive) into ``out`` and keeps its place (segment, word position, next seq),
so that a poll costs what it reads, not a rescan. Every record is CRC-checked; damage at or
below ``until`` is a CorruptRecord (the caller asked only for records the writer made
durable: that is damage inside the log). Control records are stepped over; a segment
that ends (rotation, a new run) continues in the next one.
"""

from __future__ import annotations

import numpy as np

from shmex.crc import HW
from shmex.errors import CorruptRecord
from shmex.wal import _kernels as wal_kernels
from shmex.wal import layout as wal_layout
from shmex.wal.segment import MappedSegment, list_segments, read_header


class WalTail:
    def __init__(self, directory, from_seq: int):
        self.directory = str(directory)
        self.next_seq = int(from_seq)      # the next command seq to read
        self._seg: MappedSegment | None = None
        self._index = -1
        self._pos = 0
        self._skip = self.next_seq         # commands below it are verified, not copied

    def _open_first(self) -> bool:
        segs = list_segments(self.directory)
        start = None
        for index, path in segs:
            if int(read_header(path)["first_seq"]) <= self.next_seq:
                start = (index, path)
        if start is None:
            if segs:
                raise CorruptRecord(segs[0][1], 64, self.next_seq,
                                    f"the log starts after seq {self.next_seq}: it is not in it")
            return False
        self._open(*start)
        return True

    def _open(self, index: int, path: str) -> None:
        self._seg = MappedSegment(path)
        self._index = index
        self._pos = wal_layout.HEADER_WORDS
        self._expect = self._seg.first_seq

    def _next_segment(self) -> bool:
        for index, path in list_segments(self.directory):
            if index == self._index + 1:
                self._seg.close()
                self._open(index, path)
                if self._expect != self.next_seq:
                    raise CorruptRecord(path, 64, self.next_seq,
                                        f"segment starts at seq {self._expect}, the log continues at {self.next_seq}")
                return True
        return False

    def read(self, until: int, out: np.ndarray) -> int:
        """Copy commands next_seq..until (at most len(out)) into ``out`` (COMMAND); -> how many."""
        if until < self.next_seq:
            return 0
        if self._seg is None and not self._open_first():
            return 0
        words = out.view(np.uint64).reshape(len(out), 8)
        n = 0
        while n < len(out) and self.next_seq <= until:
            seg = self._seg
            st, k, pos, expect, _, _ = wal_kernels._scan_slots(
                seg.words, self._pos, seg.end_word, self._expect, self._skip, until, words[n:], np.uint64(0), HW)
            self._pos, self._expect = pos, expect
            n += k
            if expect > self.next_seq:
                self.next_seq = max(self.next_seq, expect)
            if st in (wal_kernels.ST_FULL, wal_kernels.ST_LIMIT, wal_kernels.ST_CONTROL):
                continue
            if st in (wal_kernels.ST_END, wal_kernels.ST_SEG_END):
                if st == wal_kernels.ST_END and self.next_seq > until:
                    break      # the end of what is written so far
                if self.next_seq > until or not self._next_segment():
                    if self.next_seq <= until:
                        raise CorruptRecord(seg.path, pos * 8, self.next_seq,
                                            f"the log ends at seq {self.next_seq - 1}, below the durable seq {until}")
                    break
                continue
            if self._expect > until:
                break      # the slot after `until`, still being written: read it next time
            raise CorruptRecord(seg.path, pos * 8, self._expect, wal_kernels.STATUS_WHAT.get(st, f"status {st}"))
        return n

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None

"""Segment files: preallocate, write and check the header, map, list a directory.

Preallocation writes real zeros (then fsync), not ``posix_fallocate``: fallocate leaves
unwritten extents, and the first fdatasync over each of them must also commit the extent
conversion through the ext4 journal, which makes appends over fallocated extents
slower than over written zeros (figures in PERFORMANCE.md).
"""

from __future__ import annotations

import mmap
import os
import time

import numpy as np

from shmex.errors import CannotOpen, CorruptRecord
from shmex.wal import layout as wal_layout
from shmex.crc import crc32c
from shmex.files import FILE_MODE, fsync_dir, pwrite_all, start_writeback

_ZERO_CHUNK = bytes(1 << 20)


def pack_header(*, run_id: bytes, segment: int, first_seq: int, size_bytes: int) -> bytes:
    h = np.zeros(1, dtype=wal_layout.SEGMENT_HEADER)
    h["magic"] = wal_layout.MAGIC
    h["version"] = wal_layout.VERSION
    h["header_bytes"] = wal_layout.HEADER_BYTES
    h["slot_bytes"] = wal_layout.SLOT_BYTES
    h["payload_bytes"] = wal_layout.PAYLOAD_BYTES
    h["dtype_digest"] = np.void(wal_layout.COMMAND_DIGEST)
    h["run_id"] = np.void(run_id)
    h["segment"] = segment
    h["first_seq"] = first_seq
    h["size_bytes"] = size_bytes
    h["created_ns"] = time.time_ns()
    h["pid"] = os.getpid()
    raw = bytearray(h.tobytes())
    h["header_crc"] = crc32c(bytes(raw[:wal_layout.HEADER_CRC_BYTES]))
    return h.tobytes()


def check_header(path, raw: bytes) -> np.void:
    """Parse and check a segment header; raise CorruptRecord naming the field.

    The file size is not checked here: a file cut short still holds intact records in
    front of the cut, and the reader reports the cut where it meets it.
    """
    def bad(offset, what):
        raise CorruptRecord(path, offset, None, what)

    if len(raw) < wal_layout.HEADER_BYTES:
        bad(0, f"file is {len(raw)} bytes, shorter than the {wal_layout.HEADER_BYTES}-byte segment header")
    h = np.frombuffer(raw[:wal_layout.HEADER_BYTES], dtype=wal_layout.SEGMENT_HEADER)[0]
    if bytes(h["magic"]) != wal_layout.MAGIC:
        bad(0, f"bad magic {bytes(h['magic'])!r}, expected {wal_layout.MAGIC!r}: not a shmex WAL segment")
    if int(h["version"]) != wal_layout.VERSION:
        bad(8, f"segment format version {int(h['version'])}, this build reads {wal_layout.VERSION}")
    crc = crc32c(raw[:wal_layout.HEADER_CRC_BYTES])
    if crc != int(h["header_crc"]):
        bad(120, f"segment header CRC32C mismatch: stored {int(h['header_crc']):#010x}, computed {crc:#010x}")
    for field, off, want in (("header_bytes", 12, wal_layout.HEADER_BYTES), ("slot_bytes", 16, wal_layout.SLOT_BYTES),
                             ("payload_bytes", 20, wal_layout.PAYLOAD_BYTES)):
        if int(h[field]) != want:
            bad(off, f"header {field} is {int(h[field])}, expected {want}")
    if bytes(h["dtype_digest"]) != wal_layout.COMMAND_DIGEST:
        bad(24, "COMMAND dtype digest differs from this build's schema (written by another layout)")
    if int(h["size_bytes"]) < wal_layout.MIN_SEGMENT_BYTES:
        bad(72, f"header size_bytes {int(h['size_bytes'])} is below the minimum {wal_layout.MIN_SEGMENT_BYTES}")
    return h


def create_spare(path) -> int:
    """Create (or restart) an empty spare segment file; return its open fd.

    The caller zero-fills it with ``fill_spare`` in steps (spreading the cost over idle
    duty cycles), then calls ``finish_spare``.
    """
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, FILE_MODE)


def fill_spare(fd: int, done: int, size_bytes: int, step: int = 1 << 20) -> int:
    """Write up to ``step`` more zero bytes at ``done`` and start their writeback; return
    the new ``done``. Written back step by step, the zeros are on the disk by the
    rotation, whose fsync then writes the header alone instead of the whole segment in
    the log's path (and no fdatasync of the live segment queues behind a burst of them)."""
    n = min(step, size_bytes - done)
    start = done
    while n > 0:
        k = min(n, len(_ZERO_CHUNK))
        pwrite_all(fd, _ZERO_CHUNK[:k], done)
        done += k
        n -= k
    if done > start:
        start_writeback(fd, start, done - start)
    return done


def size_spare(fd: int, size_bytes: int) -> int:
    """Size a spare sparse (mode none) and make the size durable; return ``size_bytes``.

    Done ahead, in an idle step, so the rotation's fsync only has the header to write.
    """
    os.ftruncate(fd, size_bytes)
    os.fsync(fd)
    return size_bytes


def finish_spare(fd: int, spare_path, final_path, *, run_id: bytes, segment: int,
                 first_seq: int, size_bytes: int, done: int, zero_fill: bool = True) -> None:
    """Zero-fill what is left, write the header, fsync, rename into place, fsync the dir.

    A file named ``wal-N.seg`` therefore always has its full size and a valid header.
    ``zero_fill=False`` sizes the file sparse instead (mode none: nothing is synced per
    record, so written extents buy nothing, and the zeros would double the bytes written).
    """
    if zero_fill:
        while done < size_bytes:
            done = fill_spare(fd, done, size_bytes, size_bytes - done)
    elif done < size_bytes:
        os.ftruncate(fd, size_bytes)
    hdr = pack_header(run_id=run_id, segment=segment, first_seq=first_seq, size_bytes=size_bytes)
    pwrite_all(fd, hdr, 0)
    os.fsync(fd)
    os.rename(spare_path, final_path)
    fsync_dir(os.path.dirname(os.path.abspath(final_path)))


def list_segments(directory) -> list[tuple[int, str]]:
    """(index, path) of every segment file, in index order."""
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise CannotOpen(f"{directory}: cannot list WAL directory: {e.strerror}") from e
    out = []
    for name in names:
        idx = wal_layout.parse_segment_name(name)
        if idx is not None:
            out.append((idx, os.path.join(directory, name)))
    out.sort()
    return out


def read_header(path) -> np.void:
    """A segment's checked header, read without mapping the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(wal_layout.HEADER_BYTES)
    except OSError as e:
        raise CannotOpen(f"{path}: cannot read segment: {e.strerror}") from e
    return check_header(path, head)


class MappedSegment:
    """A segment opened read-only: checked header and a u64 word view of the whole file."""

    def __init__(self, path):
        self.path = path
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise CannotOpen(f"{path}: cannot read segment: {e.strerror}") from e
        self.header = read_header(path)
        self.file_bytes = size
        self.size_bytes = int(self.header["size_bytes"])  # what the writer preallocated
        self.segment = int(self.header["segment"])
        self.first_seq = int(self.header["first_seq"])
        self.run_id = bytes(self.header["run_id"])
        usable = min(size, self.size_bytes)
        # a read-only map: the same page cache the writer's pwrite/mapping stores land in;
        # no MAP_POPULATE: it would map what a scan never reads
        n_words = usable // 8
        if n_words:
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), n_words * 8, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self.words = np.frombuffer(mm, dtype=np.uint64, count=n_words)
        else:
            self.words = np.zeros(0, dtype=np.uint64)
        self.end_word = wal_layout.HEADER_WORDS + ((usable - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES) * wal_layout.SLOT_WORDS

    @property
    def size_problem(self) -> str | None:
        """Why the file size disagrees with the header, or None."""
        if self.file_bytes < self.size_bytes:
            return f"segment file is cut short: {self.file_bytes} bytes, header says {self.size_bytes}"
        if self.file_bytes > self.size_bytes:
            return f"segment file is {self.file_bytes} bytes, header says {self.size_bytes} (extended)"
        return None

    def close(self) -> None:
        # drop the reference; the mapping closes with the last view of it (closing it
        # explicitly would raise while a caller still holds a slice)
        self.words = None

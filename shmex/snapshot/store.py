"""Snapshot files: write (temp, fsync, rename, dir fsync), load and check, keep the newest K.

A snapshot file ``snap-<seq, 20 digits>.snap``::

    0        8        12       16       24          32          40            48
    +--------+--------+--------+--------+-----------+-----------+-------------+
    | magic  | version| hdr len| seq    | created_ns| raw_bytes | payload_bytes|
    +--------+--------+--------+--------+-----------+-----------+-------------+
    48                 64                  112          116     120        124   128
    +------------------+-------------------+------------+-------+----------+-----+
    | checksum (16 B)  | state_hash (48 B) | state_fmt  | level | hdr crc  | pad |
    +------------------+-------------------+------------+-------+----------+-----+
    128: payload = zstd(arrays of Matcher.export_state(), see _pack) of payload_bytes bytes

``checksum`` is blake2b-128 of the compressed payload; ``state_hash`` is the matcher's
``state_hash()`` at ``seq`` and is recomputed on load. The payload is read with
``np.frombuffer`` from an index of plain dtypes: a snapshot holds arrays, never code.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import zstandard

from shmex.errors import CannotOpen, CorruptRecord, UsageError
from shmex.crc import crc32c
from shmex.files import FILE_MODE, fsync_dir, make_private_dir

MAGIC = b"SHMEXSNP"
VERSION = 2
HEADER_BYTES = 128
KEEP = 3
PAUSE_CHUNK = 64 << 10  # bytes compressed per call (between two pauses of a cooperative writer: tens of us)
LEVEL = 1  # zstd level: 1 compresses the sparse book arrays well and fast (recovery reads it)

HEADER = np.dtype({
    "names": ["magic", "version", "header_bytes", "seq", "created_ns", "raw_bytes",
              "payload_bytes", "checksum", "state_hash", "state_format", "level", "header_crc"],
    "formats": ["S8", "<u4", "<u4", "<i8", "<i8", "<u8", "<u8", "V16", "S48", "<u4", "<u4", "<u4"],
    "offsets": [0, 8, 12, 16, 24, 32, 40, 48, 64, 112, 116, 120],
    "itemsize": HEADER_BYTES,
})


@dataclass
class SnapshotInfo:
    path: str
    seq: int
    state_hash: str
    created_ns: int
    raw_bytes: int
    payload_bytes: int


def name_of(seq: int) -> str:
    return f"snap-{seq:020d}.snap"


def seq_of(name: str) -> int | None:
    if name.startswith("snap-") and name.endswith(".snap") and name[5:-5].isdigit():
        return int(name[5:-5])
    return None


def list_snapshots(snap_dir) -> list[tuple[int, str]]:
    """(seq, path) of every snapshot file by name, oldest first; [] if the dir is missing."""
    try:
        names = os.listdir(snap_dir)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CannotOpen(f"{snap_dir}: cannot list snapshots: {e.strerror}") from e
    out = [(s, os.path.join(snap_dir, n)) for n in names if (s := seq_of(n)) is not None]
    out.sort()
    return out


def write_state(snap_dir, state: dict[str, np.ndarray], seq: int, state_hash: str, *,
                keep: int | None = KEEP, state_format: int = 1, pause=None) -> SnapshotInfo:
    """Write one snapshot of an exported state; then delete all but the newest ``keep``
    (None: keep every one).

    Takes an already exported state so that the slow part (compress, write, fsync) can
    run away from the matcher (a forked child or another process). ``pause`` (e.g.
    ``os.sched_yield``) is called after every PAUSE_CHUNK bytes compressed: a writer that
    shares a core with the engine's yielding processes then holds it for tens of
    microseconds at a time, not for a scheduler tick (4 ms).
    """
    make_private_dir(snap_dir)
    raw_bytes, payload = _compress_packed(state, pause)
    h = np.zeros(1, dtype=HEADER)
    h["magic"], h["version"], h["header_bytes"] = MAGIC, VERSION, HEADER_BYTES
    h["seq"], h["created_ns"] = seq, time.time_ns()
    h["raw_bytes"], h["payload_bytes"] = raw_bytes, len(payload)
    h["checksum"] = np.void(hashlib.blake2b(payload, digest_size=16).digest())
    h["state_hash"] = state_hash.encode("ascii")
    h["state_format"], h["level"] = state_format, LEVEL
    h["header_crc"] = crc32c(h.tobytes()[:120])
    final = os.path.join(snap_dir, name_of(seq))
    tmp = os.path.join(snap_dir, f".{name_of(seq)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, h.tobytes())
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)  # atomic: a reader sees the whole file or none
    fsync_dir(snap_dir)
    prune(snap_dir, keep)
    return SnapshotInfo(final, seq, state_hash, int(h["created_ns"][0]), raw_bytes, len(payload))


def write_snapshot(snap_dir, matcher, *, keep: int | None = KEEP) -> SnapshotInfo:
    """Snapshot a live matcher now (export, then write_state)."""
    return write_state(snap_dir, matcher.export_state(), matcher.last_seq, matcher.state_hash(), keep=keep)


def prune(snap_dir, keep: int | None) -> list[str]:
    """Delete all but the newest ``keep`` snapshots (None: none of them), and temp files of
    dead writers."""
    removed = []
    snaps = list_snapshots(snap_dir) if keep is not None else []
    for _, path in snaps[: max(0, len(snaps) - (keep or 0))]:
        os.unlink(path)
        removed.append(path)
    for name in os.listdir(snap_dir):
        if name.startswith(".snap-") and name.endswith(".tmp"):
            pid = name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                os.unlink(os.path.join(snap_dir, name))
                removed.append(os.path.join(snap_dir, name))
    if removed:
        fsync_dir(snap_dir)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_header(path) -> tuple[SnapshotInfo, bytes]:
    """Read and check a snapshot's header and payload checksum; return (info, payload)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CannotOpen(f"{path}: cannot read snapshot: {e.strerror}") from e

    def bad(offset, what, seq=None):
        raise CorruptRecord(path, offset, seq, what)

    if len(data) < HEADER_BYTES:
        bad(0, f"file is {len(data)} bytes, shorter than the {HEADER_BYTES}-byte snapshot header")
    h = np.frombuffer(data[:HEADER_BYTES], dtype=HEADER)[0]
    if bytes(h["magic"]) != MAGIC:
        bad(0, f"bad magic {bytes(h['magic'])!r}, expected {MAGIC!r}: not a shmex snapshot")
    if int(h["version"]) != VERSION:
        bad(8, f"snapshot format version {int(h['version'])}, this build reads {VERSION}")
    crc = crc32c(data[:120])
    if crc != int(h["header_crc"]):
        bad(120, f"snapshot header CRC32C mismatch: stored {int(h['header_crc']):#010x}, computed {crc:#010x}")
    seq = int(h["seq"])
    if int(h["header_bytes"]) != HEADER_BYTES:
        bad(12, f"header length {int(h['header_bytes'])}, expected {HEADER_BYTES}", seq)
    n = int(h["payload_bytes"])
    if len(data) != HEADER_BYTES + n:
        bad(40, f"file is {len(data)} bytes, header says {HEADER_BYTES + n} (truncated or extended)", seq)
    payload = data[HEADER_BYTES:]
    if hashlib.blake2b(payload, digest_size=16).digest() != bytes(h["checksum"]):
        bad(HEADER_BYTES, "payload checksum (blake2b) mismatch", seq)
    name_seq = seq_of(os.path.basename(path))
    if name_seq is not None and name_seq != seq:
        bad(16, f"header seq {seq} disagrees with the file name (seq {name_seq})", seq)
    info = SnapshotInfo(str(path), seq, bytes(h["state_hash"]).decode("ascii", "replace"),
                        int(h["created_ns"]), int(h["raw_bytes"]), n)
    return info, payload


def load_state(path) -> tuple[SnapshotInfo, dict[str, np.ndarray]]:
    """The checked header and the exported state arrays of a snapshot file: writable views
    of one private buffer the payload was decompressed into (Matcher.from_state can adopt
    them without a copy)."""
    info, payload = read_header(path)
    raw = np.empty(info.raw_bytes, dtype=np.uint8)
    try:
        got = _decompress_into(payload, raw)
    except zstandard.ZstdError as e:
        raise CorruptRecord(path, HEADER_BYTES, info.seq, f"zstd payload does not decompress: {e}") from e
    if got != info.raw_bytes:
        raise CorruptRecord(path, 32, info.seq, f"payload decompresses to {got if got <= info.raw_bytes else 'more than ' + str(info.raw_bytes)} "
                            f"bytes, header says {info.raw_bytes}")
    try:
        state = _unpack(raw)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRecord(path, HEADER_BYTES, info.seq, f"payload is not a valid array archive: {e}") from e
    return info, state


def _decompress_into(payload: bytes, out: np.ndarray) -> int:
    """Decompress into `out` (uint8); -> bytes produced, len(out) + 1 if there are more.
    Streams into a preallocated buffer (not ZstdDecompressor.decompress, which returns a
    new bytes object to copy out of) and leaves the arrays writable."""
    mv = memoryview(out)
    got = 0
    with zstandard.ZstdDecompressor().stream_reader(payload) as r:
        while got < len(out):
            n = r.readinto(mv[got:])
            if n == 0:
                return got
            got += n
        if r.read(1):
            return got + 1
    return got


# The payload before compression: an index, then each array's bytes at a 64-byte boundary.
#   u32 index length | index (JSON list of [name, dtype descr, shape, offset]) | pad | arrays
# (not np.savez: its zip container costs one copy per array on every load)

def _layout(state: dict[str, np.ndarray]):
    """The packed form's parts: (arrays, offsets, prefix, total bytes). Packed = prefix
    (4-byte index length, the JSON index, zeros to 64 bytes) then each array at its
    offset from the prefix's end, each padded with zeros to 64 bytes."""
    arrays = [(k, np.ascontiguousarray(v)) for k, v in state.items()]
    index, off = [], 0
    for k, a in arrays:
        if a.dtype.hasobject:
            raise UsageError(f"snapshot state: array {k!r} holds Python objects")
        index.append([k, np.lib.format.dtype_to_descr(a.dtype), list(a.shape), off])
        off += -(-a.nbytes // 64) * 64
    head = json.dumps(index).encode()
    start = -(-(4 + len(head)) // 64) * 64
    prefix = bytearray(start)
    prefix[0:4] = len(head).to_bytes(4, "little")
    prefix[4:4 + len(head)] = head
    return arrays, [start + i[3] for i in index], bytes(prefix), start + off


def _pack(state: dict[str, np.ndarray]) -> bytes:
    """The packed form (see `_layout`), built in memory."""
    arrays, offsets, prefix, total = _layout(state)
    out = bytearray(total)
    out[0:len(prefix)] = prefix
    for (k, a), o in zip(arrays, offsets):
        out[o:o + a.nbytes] = _bytes_of(a)
    return bytes(out)


def _bytes_of(a: np.ndarray) -> memoryview:
    """A C-contiguous array's bytes, without a copy (any dtype, structured ones too)."""
    return memoryview(a.reshape(-1)).cast("B")


def _compress_packed(state: dict[str, np.ndarray], pause=None) -> tuple[int, bytes]:
    """(packed length, zstd of the packed form) without building the packed form: the
    arrays go to the compressor straight from the book (building it first would cost
    copies of the whole packed form and their page faults).
    ``pause``: called between chunks of PAUSE_CHUNK bytes (see `write_state`)."""
    arrays, offsets, prefix, total = _layout(state)
    c = zstandard.ZstdCompressor(level=LEVEL).compressobj(size=total)
    parts = [c.compress(prefix)]
    pos = len(prefix)
    for (k, a), o in zip(arrays, offsets):
        if o > pos:
            parts.append(c.compress(bytes(o - pos)))
        b = _bytes_of(a)
        for i in range(0, len(b), PAUSE_CHUNK):
            parts.append(c.compress(b[i:i + PAUSE_CHUNK]))
            if pause is not None:
                pause()
        pos = o + a.nbytes
    if total > pos:
        parts.append(c.compress(bytes(total - pos)))
    parts.append(c.flush())
    return total, b"".join(parts)


def _unpack(raw) -> dict[str, np.ndarray]:
    """Arrays viewing `raw` (bytes: read-only; a uint8 array: writable)."""
    n = int.from_bytes(bytes(raw[0:4]), "little")
    if not 0 < n <= len(raw) - 4:
        raise ValueError(f"index length {n} does not fit a {len(raw)}-byte payload")
    index = json.loads(bytes(raw[4:4 + n]).decode())
    start = -(-(4 + n) // 64) * 64
    state = {}
    for name, dts, shape, off in index:
        dt = np.lib.format.descr_to_dtype(dts)
        if dt.hasobject:
            raise ValueError(f"array {name!r} has an object dtype")
        count = int(np.prod(shape, dtype=np.int64))
        if off < 0 or count < 0 or start + off + count * dt.itemsize > len(raw):
            raise ValueError(f"array {name!r} ({dts}{tuple(shape)} at {off}) runs past the payload")
        state[name] = np.frombuffer(raw, dtype=dt, count=count, offset=start + off).reshape(shape)
    return state


def load_snapshot(path, matcher_cls=None):
    """A Matcher rebuilt from a snapshot whose checksum and state hash both check out."""
    if matcher_cls is None:
        from shmex.matcher import Matcher as matcher_cls
    info, state = load_state(path)
    try:
        m = matcher_cls.from_state(state, copy=False)   # the arrays view a buffer of our own
    except (UsageError, ValueError, IndexError, TypeError, MemoryError) as e:
        raise CorruptRecord(path, HEADER_BYTES, info.seq, f"state does not rebuild a matcher: {e}") from e
    if m.last_seq != info.seq:
        raise CorruptRecord(path, 16, info.seq, f"state is at seq {m.last_seq}, header says {info.seq}")
    got = m.state_hash()
    if got != info.state_hash:
        raise CorruptRecord(path, 64, info.seq, f"state_hash {got} differs from the header's {info.state_hash}")
    return m, info


def newest_valid(snap_dir, *, max_seq: int | None = None, matcher_cls=None):
    """(matcher, info, refused) from the newest snapshot that loads, at seq <= max_seq.

    ``refused`` lists the CorruptRecord of each newer file that was refused; (None, None,
    refused) when none loads.
    """
    refused: list[CorruptRecord] = []
    for seq, path in reversed(list_snapshots(snap_dir)):
        if max_seq is not None and seq > max_seq:
            continue
        try:
            m, info = load_snapshot(path, matcher_cls)
        except CorruptRecord as e:
            refused.append(e)
            continue
        return m, info, refused
    return None, None, refused

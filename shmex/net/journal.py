"""The gateway's journal: what it applied, in order, so that a restarted gateway is the
same gateway, and each user's outbound stream, so that a session resumes exactly.

A directory per engine run::

    journal          the events, in the order the gateway applied them
    <user>.soup      user's SoupBinTCP 'S' packets back to back: message n starts where
                     the first n-1 end (a resend from n is one read of the file's tail)

Journal records: a 32-byte header (type u8, 3 pad, a u32, n u32 payload bytes, crc u32
CRC32C of the header's first 16 bytes with crc zeroed and the payload, ts i64 the OUCH
timestamp used, now i64 the monotonic ns stamped as ``sent_ns``), then the payload padded
to 8 bytes:

- ``I`` inbound: user a's SoupBinTCP frames, exactly the bytes `ouch.decode` consumed
- ``R`` reports: a REPORT records taken from the report ring; payload: the ring seq of
  the first (i64), then the records
- ``D`` disconnect: user a's session went away (its orders were cancelled if it asked)
- ``C`` commit: payload: the report ring seq consumed up to (i64), then (user, stream
  file length) pairs (i64) for the streams written since the previous commit

The gateway writes a group's stream bytes first, then the group's records ending in its
commit, then publishes the group's commands and releases the report ring up to the commit.
`recover` keeps the journal up to its last intact commit and cuts each stream to the
length its last commit names: what came after was never sent, never published, and its
reports are still in the ring. Both live in the page cache: they survive the gateway's or
the engine's crash, not the machine's (a new run starts new sessions).
"""

from __future__ import annotations

import os
import secrets
import string

import numpy as np

from shmex.crc import crc32c
from shmex.errors import ShmexError
from shmex.files import FILE_MODE, fsync_dir, make_private_dir
from shmex.schema import REPORT

HEADER = np.dtype([("type", "u1"), ("pad", "u1", 3), ("a", "<u4"), ("n", "<u4"), ("crc", "<u4"),
                   ("ts", "<i8"), ("now", "<i8")])
assert HEADER.itemsize == 32
T_IN, T_REP, T_DISC, T_COMMIT = (ord(c) for c in "IRDC")
SESSION_FILE = "session"
SESSION_LEN = 10


class JournalError(ShmexError):
    """The gateway journal cannot be read or written."""


def _pad(n: int) -> int:
    return (n + 7) & ~7


def record(typ: int, a: int, payload: bytes | memoryview, ts: int, now: int) -> bytes:
    h = np.zeros(1, HEADER)
    h["type"], h["a"], h["n"], h["ts"], h["now"] = typ, a, len(payload), ts, now
    raw = h.tobytes()
    crc = crc32c(np.frombuffer(raw[:16] + bytes(payload), np.uint8))
    h["crc"] = crc
    return h.tobytes() + bytes(payload) + b"\0" * (_pad(len(payload)) - len(payload))


def read(path: str):
    """-> ([(type, a, payload bytes, ts, now)], end offset of the last intact commit)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    out, pos, good, group = [], 0, 0, []
    while pos + HEADER.itemsize <= len(data):
        h = np.frombuffer(data, HEADER, 1, pos)[0]
        n = int(h["n"])
        end = pos + HEADER.itemsize + _pad(n)
        if end > len(data):
            break
        payload = data[pos + HEADER.itemsize: pos + HEADER.itemsize + n]
        raw = bytearray(data[pos:pos + 16])
        raw[12:16] = b"\0\0\0\0"
        if crc32c(np.frombuffer(bytes(raw) + payload, np.uint8)) != int(h["crc"]):
            break
        group.append((int(h["type"]), int(h["a"]), payload, int(h["ts"]), int(h["now"])))
        pos = end
        if h["type"] == T_COMMIT:
            out += group
            group = []
            good = pos
    return out, good


def commit_payload(rep_upto: int, lengths: dict[int, int]) -> bytes:
    arr = np.array([rep_upto] + [v for kv in sorted(lengths.items()) for v in kv], dtype="<i8")
    return arr.tobytes()


def parse_commit(payload: bytes) -> tuple[int, dict[int, int]]:
    arr = np.frombuffer(payload, "<i8")
    return int(arr[0]), {int(arr[i]): int(arr[i + 1]) for i in range(1, len(arr), 2)}


def reports_payload(first_seq: int, reps: np.ndarray) -> bytes:
    return np.array([first_seq], "<i8").tobytes() + reps.tobytes()


def parse_reports(payload: bytes) -> tuple[int, np.ndarray]:
    first = int(np.frombuffer(payload[:8], "<i8")[0])
    return first, np.frombuffer(payload[8:], REPORT).copy()


class Journal:
    """The open journal and stream files of one gateway (one writer: the gateway process)."""

    def __init__(self, directory: str, users: int):
        self.dir = directory
        make_private_dir(directory)
        self.session = self._session_id()
        self.path = os.path.join(directory, "journal")
        self.records, good = read(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        os.ftruncate(self.fd, good)
        os.lseek(self.fd, good, os.SEEK_SET)
        self.rep_upto = 0
        self.lengths = [0] * users
        for typ, _, payload, _, _ in self.records:
            if typ == T_COMMIT:
                self.rep_upto, lens = parse_commit(payload)
                for u, n in lens.items():
                    self.lengths[u] = n
        self.committed = list(self.lengths)     # stream bytes a commit covers: what may be sent
        self.streams = []
        for u in range(users):
            fd = os.open(self.stream_path(u), os.O_RDWR | os.O_CREAT, FILE_MODE)
            os.ftruncate(fd, self.lengths[u])    # cut what no commit covers
            os.lseek(fd, self.lengths[u], os.SEEK_SET)
            self.streams.append(fd)
        fsync_dir(directory)
        self._pending: list[bytes] = []
        self._touched: dict[int, int] = {}

    def _session_id(self) -> str:
        """The SoupBinTCP session name of this journal: made once, kept in its file."""
        path = os.path.join(self.dir, SESSION_FILE)
        try:
            with open(path) as f:
                s = f.read().strip()
            if len(s) == SESSION_LEN:
                return s
        except FileNotFoundError:
            pass
        alphabet = string.ascii_uppercase + string.digits
        s = "".join(secrets.choice(alphabet) for _ in range(SESSION_LEN))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, s.encode())
        finally:
            os.close(fd)
        return s

    def stream_path(self, u: int) -> str:
        return os.path.join(self.dir, f"{u}.soup")

    # -- one group -------------------------------------------------------------------------
    def add(self, typ: int, a: int, payload, ts: int, now: int) -> None:
        self._pending.append(record(typ, a, payload, ts, now))

    def append_stream(self, u: int, data) -> None:
        """User u's new packets (written now; committed with the group)."""
        mv = memoryview(data)
        while len(mv):
            k = os.write(self.streams[u], mv)
            if k <= 0:
                raise JournalError(f"{self.stream_path(u)}: short write")
            mv = mv[k:]
        self.lengths[u] += len(data)
        self._touched[u] = self.lengths[u]

    def commit(self, rep_upto: int, ts: int) -> None:
        """Write the group's records and its commit (one write)."""
        if not self._pending and not self._touched and rep_upto == self.rep_upto:
            return
        self.rep_upto = rep_upto
        self._pending.append(record(T_COMMIT, 0, commit_payload(rep_upto, self._touched), ts, 0))
        data = memoryview(b"".join(self._pending))
        while len(data):
            k = os.write(self.fd, data)
            if k <= 0:
                raise JournalError(f"{self.path}: short write")
            data = data[k:]
        for u, n in self._touched.items():
            self.committed[u] = n
        self._pending.clear()
        self._touched.clear()

    def close(self) -> None:
        for fd in self.streams + [self.fd]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.streams = []

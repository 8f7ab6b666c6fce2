"""The feed's files in DATA_DIR/feed. ``itch.bin``: every ITCH message of a session, each
preceded by its length (u16) as Nasdaq frames its sample files; message k (1-based) is
MoldUDP64 sequence number k.

`FeedFile` appends what the generator produced and keeps an index of message offsets, so
that the re-request server answers from any sequence number with one pread. Opened on an
existing file (a restarted feed), it keeps the prefix the regenerated messages agree
with: `add` compares each new block with what the file holds at its place, moves on over
what matches, and at the first message that differs cuts the file there and writes the
rest. The feed is derived data: it is written, not synced (``shmex feed DIR`` rebuilds it).
``feed.json`` says where the feed is sent (group, port, interface), where re-requests go,
its MoldUDP64 session and the instruments it was made with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from numba import njit

from shmex.errors import CannotOpen
from shmex.files import FILE_MODE

FEED_DIR = "feed"
FEED_FILE = "itch.bin"
FEED_INFO = "feed.json"


@dataclass(frozen=True)
class Symbol:
    name: str
    tick: int         # price units (1/10000) per tick
    lot: int          # shares per lot


def paths(directory) -> tuple[str, str]:
    """(feed file, feed info) of a data directory."""
    d = os.path.join(str(directory), FEED_DIR)
    return os.path.join(d, FEED_FILE), os.path.join(d, FEED_INFO)


def read_info(directory) -> dict:
    _, info = paths(directory)
    try:
        with open(info) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CannotOpen(f"{info}: no feed info (was the run launched with --feed?)") from None
    except (OSError, ValueError) as e:
        raise CannotOpen(f"{info}: {e}") from None


def write_info(directory, doc: dict) -> None:
    from shmex.files import make_private_dir

    _, info = paths(directory)
    make_private_dir(os.path.dirname(info))
    tmp = info + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.rename(tmp, info)


def info_symbols(doc: dict) -> list[Symbol]:
    return [Symbol(str(n), int(t), int(lot)) for n, t, lot in doc["symbols"]]


@njit(cache=True, nogil=True)
def _scan(buf, lo, hi, base, out, k):
    """Offsets (plus base) of the whole messages in buf[lo:hi] into out[k:]; -> (k, end)."""
    p = lo
    while p + 2 <= hi:
        n = (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
        if p + 2 + n > hi or k >= len(out):
            break
        out[k] = base + p
        k += 1
        p += 2 + n
    return k, p


def offsets(block: np.ndarray) -> np.ndarray:
    """The offset of each message of a framed block."""
    out = np.empty(len(block) // 3 + 1, np.int64)
    k, _ = _scan(block, 0, len(block), 0, out, 0)
    return out[:k]


class FeedFile:
    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        size = os.fstat(self.fd).st_size
        self.index = np.zeros(1 << 16, np.int64)
        self.count = 0            # messages in the file
        self.kept = 0             # of them, the ones a regenerated block confirmed
        self.size = 0             # bytes of whole messages
        self.cut_at: int | None = None     # the first seq that differed from the old file
        if size:
            data = np.fromfile(path, np.uint8)
            self._room(len(data) // 3 + 1)        # a message is 3 bytes at least
            self.count, self.size = _scan(data, 0, len(data), 0, self.index, 0)
            if self.size < size:                   # a torn last message: cut
                os.ftruncate(self.fd, self.size)

    def _room(self, n: int) -> None:
        if n > len(self.index):
            grown = np.zeros(max(n, 2 * len(self.index)), np.int64)
            grown[:self.count] = self.index[:self.count]
            self.index = grown

    def _end(self, i: int) -> int:
        """Byte offset just past message i (0-based)."""
        return int(self.index[i + 1]) if i + 1 < self.count else self.size

    def add(self, block: np.ndarray, offs: np.ndarray) -> None:
        """Messages kept+1 .. kept+len(offs): the framed `block`, offs its message offsets."""
        n = len(offs)
        if n and self.kept < self.count:
            m = min(n, self.count - self.kept)
            start = int(self.index[self.kept])
            have = np.frombuffer(os.pread(self.fd, self._end(self.kept + m - 1) - start, start), np.uint8)
            mine = block[:int(offs[m]) if m < n else len(block)]
            if np.array_equal(have, mine):
                j = m
            else:
                # framing is self-delimiting: regions of unequal length differ in a byte
                # within the shorter one; the message holding it is the first that differs
                short = min(len(have), len(mine))
                byte = int(np.flatnonzero(have[:short] != mine[:short])[0])
                j = int(np.searchsorted(offs[:m], byte, side="right")) - 1
            self.kept += j
            if j < m:
                self.truncate()
            if j == n:
                return
            block, offs = block[int(offs[j]):], offs[j:] - offs[j]
        elif n == 0:
            return
        if self.kept < self.count:
            self.truncate()
        self._append(block, offs)

    def truncate(self) -> None:
        """Drop the messages after `kept` (they differ from the regenerated feed)."""
        if self.kept >= self.count:
            return
        if self.cut_at is None:
            self.cut_at = self.kept + 1
        self.size = int(self.index[self.kept])
        self.count = self.kept
        os.ftruncate(self.fd, self.size)

    def _append(self, block: np.ndarray, offs: np.ndarray) -> None:
        self._room(self.count + len(offs))
        self.index[self.count:self.count + len(offs)] = offs + self.size
        view = memoryview(block)
        pos = self.size
        while view:
            w = os.pwrite(self.fd, view, pos)
            view, pos = view[w:], pos + w
        self.size += len(block)
        self.count += len(offs)
        self.kept = self.count

    def read(self, seq: int, max_bytes: int, max_count: int = 1 << 30) -> tuple[bytes, int]:
        """Messages from seq (1-based) on, at most max_count, as many as fit in max_bytes
        (one at least): -> (framed block, count)."""
        if not 1 <= seq <= self.count:
            return b"", 0
        lo = int(self.index[seq - 1])
        # index[seq:] holds where messages seq-1, seq, ... end (but the last, which ends at size)
        t = int(np.searchsorted(self.index[seq:self.count], lo + max_bytes, side="right"))
        if t == self.count - seq and self.size - lo <= max_bytes:
            t += 1
        k = max(min(t, max_count), 1)
        return os.pread(self.fd, self._end(seq - 2 + k) - lo, lo), k

    def close(self) -> None:
        os.close(self.fd)

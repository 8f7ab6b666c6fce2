"""MoldUDP64: sequenced message blocks over UDP, and the re-request that fills a gap.

A packet is a 20-byte header -- session (10 ASCII bytes), the sequence number of its first
message (u64), its message count (u16) -- and then that many messages, each preceded by its
length (u16), big-endian. Message sequence numbers start at 1 and count every message of
the session. A count of 0 is a heartbeat (the sequence number is the next message's); 0xFFFF
ends the session. A re-request is a header alone, sent unicast to the re-request server:
the session, the first sequence number wanted and how many; the answer is an ordinary
packet starting there, with as many of them as fit.
"""

from __future__ import annotations

import struct

import numpy as np
from numba import njit

HEADER = struct.Struct(">10sQH")
HEADER_BYTES = HEADER.size          # 20
MAX_PAYLOAD = 1400                  # message bytes per packet (length prefixes included)
HEARTBEAT = 0
END_OF_SESSION = 0xFFFF
SESSION_LEN = 10


def session_name(text: str) -> bytes:
    """A session as its 10 header bytes: ASCII, space-padded on the right."""
    b = text.encode("ascii")[:SESSION_LEN]
    return b.ljust(SESSION_LEN, b" ")


def header(session: bytes, seq: int, count: int) -> bytes:
    return HEADER.pack(session, seq, count)


def parse_header(packet) -> tuple[bytes, int, int]:
    """-> (session, first sequence number, count); ValueError on a short packet."""
    if len(packet) < HEADER_BYTES:
        raise ValueError(f"MoldUDP64 packet of {len(packet)} bytes: the header alone is {HEADER_BYTES}")
    return HEADER.unpack_from(packet)


@njit(cache=True, nogil=True)
def _cuts(offs, lo, hi, end, max_payload, out):
    """Packet boundaries for messages lo..hi-1 (message i spans offs[i]..offs[i+1], the
    last one ..end): greedily as many as fit in max_payload bytes. -> packets; out[k] is
    the first message of packet k, out[packets] = hi."""
    k = 0
    i = lo
    while i < hi:
        out[k] = i
        k += 1
        start = offs[i]
        i += 1
        while i < hi:
            e = offs[i + 1] if i + 1 < hi else end
            if e - start > max_payload:
                break
            i += 1
    out[k] = hi
    return k


def cuts(offs: np.ndarray, lo: int, hi: int, end: int, max_payload: int = MAX_PAYLOAD) -> np.ndarray:
    """First message index of each packet for messages lo..hi-1, and hi at the end."""
    out = np.empty(hi - lo + 1, np.int64)
    k = _cuts(offs, lo, hi, end, max_payload, out)
    return out[:k + 1]


def warm() -> None:
    cuts(np.zeros(2, np.int64), 0, 1, 1)

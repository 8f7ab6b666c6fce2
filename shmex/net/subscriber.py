"""A MoldUDP64 subscriber: joins the feed's multicast group, delivers every message once and
in order, and re-requests what it missed.

``for first, block, count in Subscriber(...).blocks(): ...`` yields message blocks (each
message preceded by its u16 length, as in the feed file) with the sequence number of their
first message; consecutive blocks are contiguous. `messages()` yields the messages one by
one, `decoded()` each with its sequence number as a dict of its fields (to keep books, apply
the blocks with `net.itch.apply`, as ``shmex watch`` does). Iteration ends at the end of session once every message before it was delivered.

Gaps: a data packet, heartbeat or end of session whose sequence number is past the next
expected one opens a gap; the subscriber keeps the packets it got meanwhile and asks the
re-request server for the missing range, CHUNK messages per request and WINDOW messages
ahead of what it has at most (the window slides as answers come), and again from the
first missing one after GAP_RETRY_S without progress. One that joins
late starts at sequence number 1 all the same: its first packet opens a gap from 1.
`stats` counts packets, duplicates, gaps and re-requests and keeps each gap's time from
detection to filled (ns).
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

from shmex.net import mold

RCVBUF = 4 << 20
GAP_RETRY_S = 0.05          # re-requests unanswered this long are sent again
CHUNK = 32                  # messages per re-request: 32 of the largest ITCH message fit one answer
WINDOW = 16 * CHUNK         # messages asked for and not yet received, at most


@dataclass
class Stats:
    packets: int = 0
    messages: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    gaps: int = 0
    rerequests: int = 0
    answers: int = 0
    gap_fill_ns: list = field(default_factory=list)
    other_sessions: int = 0


def _skip(payload, k: int) -> int:
    """Byte offset of message k (0-based) of a payload."""
    p = 0
    for _ in range(k):
        p += 2 + int.from_bytes(payload[p:p + 2], "big")
    return p


class Subscriber:
    def __init__(self, group: str, port: int, rerequest: tuple[str, int] | None = None, *,
                 iface: str = "127.0.0.1", session: str | bytes | None = None, idle_timeout: float | None = None):
        """idle_timeout: stop with TimeoutError after this long without any packet (None: wait)."""
        self.group, self.port, self.rerequest = group, port, rerequest
        if isinstance(session, str):
            session = mold.session_name(session)
        self.session = session
        self.idle_timeout = idle_timeout
        self.stats = Stats()
        self.expected = 1
        self.end_seq: int | None = None
        self._pending: dict[int, tuple[int, bytes]] = {}     # first seq -> (count, payload)
        self._asked_at = 0.0
        self._asked_upto = 0          # re-requests went out for sequence numbers below this
        self._progress_at = 0.0
        self._gap: tuple[int, int] | None = None             # (detected ns, seq it must reach)
        mc = self.mc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        mc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mc.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        mc.bind((group, port))
        mc.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(iface))
        mc.setblocking(False)
        rq = self.rq = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rq.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        rq.bind((iface, 0))
        rq.setblocking(False)
        self._buf = bytearray(65536)

    @classmethod
    def of_run(cls, data_dir, **kw) -> "Subscriber":
        """A subscriber to the feed a run in data_dir publishes (DATA_DIR/feed/feed.json)."""
        from shmex.net.feedfile import read_info

        info = read_info(data_dir)
        return cls(info["group"], int(info["port"]), tuple(info["rerequest"]), iface=info["iface"],
                   session=info["session"], **kw)

    def close(self) -> None:
        self.mc.close()
        self.rq.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def done(self) -> bool:
        return self.end_seq is not None and self.expected >= self.end_seq

    # -- receiving ---------------------------------------------------------------------------
    def blocks(self):
        """Yield (first seq, framed block, count), in order, until the end of session."""
        last_rx = time.monotonic()
        while not self.done:
            r, _, _ = select.select([self.mc, self.rq], [], [], GAP_RETRY_S)
            got = False
            for sock in r:
                while True:
                    try:
                        n = sock.recv_into(self._buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    got = True
                    if sock is self.rq:
                        self.stats.answers += 1
                    yield from self._packet(bytes(self._buf[:n]))
            now = time.monotonic()
            if got:
                last_rx = now
            elif self.idle_timeout is not None and now - last_rx > self.idle_timeout:
                raise TimeoutError(f"no MoldUDP64 packet on {self.group}:{self.port} for {self.idle_timeout} s "
                                   f"(next expected sequence number {self.expected:,})")
            self._ask(now)

    def messages(self):
        """Yield every message (bytes, without its length), in order."""
        for _, block, count in self.blocks():
            p = 0
            for _ in range(count):
                n = int.from_bytes(block[p:p + 2], "big")
                yield block[p + 2:p + 2 + n]
                p += 2 + n

    def decoded(self):
        """Yield (sequence number, the message as a dict of its fields: `net.itch.decode`)."""
        from shmex.net import itch

        for first, block, count in self.blocks():
            for k, msg in enumerate(itch.messages(block)):
                yield first + k, itch.decode(msg)

    def _packet(self, pkt: bytes):
        if len(pkt) < mold.HEADER_BYTES:
            return
        session, seq, count = mold.parse_header(pkt)
        if self.session is None:
            self.session = session
        elif session != self.session:
            self.stats.other_sessions += 1
            return
        self.stats.packets += 1
        if count == mold.HEARTBEAT:
            self.stats.heartbeats += 1
            self._saw(seq)
            return
        if count == mold.END_OF_SESSION:
            self.end_seq = seq
            self._saw(seq)
            self._filled()
            return
        payload = pkt[mold.HEADER_BYTES:]
        if seq + count <= self.expected:
            self.stats.duplicates += 1
            return
        if seq > self.expected:
            if seq in self._pending:
                self.stats.duplicates += 1
            else:
                self._pending[seq] = (count, payload)
            self._saw(seq)
            return
        yield from self._deliver(seq, count, payload)
        while self._pending:
            s = min(self._pending)
            if s > self.expected:
                break
            c, p = self._pending.pop(s)
            if s + c > self.expected:
                yield from self._deliver(s, c, p)
        self._filled()
        self._progress_at = time.monotonic()

    def _deliver(self, seq: int, count: int, payload: bytes):
        k = self.expected - seq
        if k:
            payload, count = payload[_skip(payload, k):], count - k
        self.expected += count
        self.stats.messages += count
        yield self.expected - count, payload, count

    def _saw(self, seq: int) -> None:
        """A packet says sequence numbers below seq exist: a gap if we have not got them."""
        if seq > self.expected and self._gap is None:
            self._gap = (time.monotonic_ns(), seq)
            self.stats.gaps += 1
            self._asked_upto = 0

    def _filled(self) -> None:
        if self._gap is not None and self.expected >= self._gap[1]:
            self.stats.gap_fill_ns.append(time.monotonic_ns() - self._gap[0])
            self._gap = None
            if self._pending and min(self._pending) > self.expected:
                self._saw(min(self._pending))

    def _ask(self, now: float) -> None:
        if self._gap is None or self.rerequest is None or self.session is None:
            return
        hi = min(self._pending) if self._pending else (self.end_seq or self._gap[1])
        if now - max(self._asked_at, self._progress_at) >= GAP_RETRY_S:
            self._asked_upto = 0                     # nothing came: ask again from the first missing
        start = max(self.expected, self._asked_upto)
        stop = min(hi, self.expected + WINDOW)
        while start < stop:
            n = min(CHUNK, stop - start)
            self.rq.sendto(mold.header(self.session, start, n), self.rerequest)
            self.stats.rerequests += 1
            start += n
            self._asked_at, self._asked_upto = now, start

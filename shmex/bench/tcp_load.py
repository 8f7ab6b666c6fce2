"""Load over TCP: members that log in over SoupBinTCP and send OUCH Enter Orders.

One process drives many sessions from one selector loop; frames are built and the
answers scanned in numba (no Python per message). Each session sends buy/sell pairs at
one price, so every second order trades with the one before it and the book stays small.

- Full speed (``rate`` None): each session keeps at most ``window`` orders unanswered.
- Open loop (``rate`` orders/s over all sessions): order i of a session is due at
  ``t0 + i * period``; its latency runs from that intended time to the arrival of its
  first answer (Accepted or Rejected), so a stall anywhere is counted (no coordinated
  omission). At full speed the intended time is the send time.

Latency is what a member sees: client send -> gateway -> matcher -> durable -> OUCH
answer read by the client.
"""

from __future__ import annotations

import selectors
import socket
import time

import numpy as np
from numba import njit

from shmex.engine.latency import NBUCKETS, bucket_of
from shmex.net import soup

FRAME = 50                     # an Enter Order in an Unsequenced Data packet: 2 + 1 + 47
CHUNK = 1024                   # frames per send


@njit(cache=True, nogil=True)
def fill_enters(buf, urn0, k, sym_key, price):
    """k Enter Order frames into buf, UserRefNums urn0.., alternating buy and sell."""
    for j in range(k):
        p = j * FRAME
        urn = urn0 + j
        buf[p] = 0
        buf[p + 1] = 48
        buf[p + 2] = 85                          # 'U'
        q = p + 3
        buf[q] = 79                              # 'O'
        for i in range(4):
            buf[q + 1 + i] = (urn >> (8 * (3 - i))) & 0xFF
        buf[q + 5] = 66 if urn % 2 == 1 else 83  # 'B' / 'S'
        for i in range(4):
            buf[q + 6 + i] = (1 >> (8 * (3 - i))) & 0xFF
        for i in range(8):
            buf[q + 10 + i] = (sym_key >> np.uint64(8 * (7 - i))) & np.uint64(0xFF)
        for i in range(8):
            buf[q + 18 + i] = (price >> (8 * (7 - i))) & 0xFF
        buf[q + 26] = 48                         # '0' day
        buf[q + 27] = 89                         # 'Y'
        buf[q + 28] = 65                         # 'A' agency
        buf[q + 29] = 78
        buf[q + 30] = 78
        for i in range(14):
            buf[q + 31 + i] = 32
        buf[q + 45] = 0
        buf[q + 46] = 0


@njit(cache=True, nogil=True)
def scan(buf, n, due, now_ns, hist, counts):
    """Answers in buf[:n]: each order's first one (Accepted 'A' / Rejected 'J') records
    now - due[urn - 1]; counts: [answered, executed, rejected, other]. -> bytes consumed."""
    p = 0
    while p + 3 <= n:
        ln = (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
        if p + 2 + ln > n:
            break
        if buf[p + 2] == 83 and ln > 1:          # 'S' sequenced data
            t = buf[p + 3]
            if t == 65 or t == 74:               # 'A' accepted, 'J' rejected
                q = p + 3
                urn = (np.int64(buf[q + 9]) << 24) | (np.int64(buf[q + 10]) << 16) | \
                      (np.int64(buf[q + 11]) << 8) | np.int64(buf[q + 12])
                if 1 <= urn <= len(due) and due[urn - 1] > 0:
                    hist[bucket_of(now_ns - due[urn - 1])] += 1
                    due[urn - 1] = 0
                    counts[0] += 1
                if t == 74:
                    counts[2] += 1
            elif t == 69:                        # 'E'
                counts[1] += 1
            else:
                counts[3] += 1
        p += 2 + ln
    return p


class LoadSession:
    def __init__(self, addr, user: str, password: str, orders: int, sym_key: int, price: int):
        self.sock = socket.create_connection(addr, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(soup.login_request(user, password))
        head = b""
        while len(head) < 33:
            k = self.sock.recv(33 - len(head))
            if not k:
                raise ConnectionError(f"{user}: the gateway closed the connection at login")
            head += k
        if head[2:3] != b"A":
            raise ConnectionRefusedError(f"{user}: login refused ({head[:4]!r})")
        self.sock.setblocking(False)
        self.orders = orders
        self.sent = 0
        self.due = np.zeros(orders, np.int64)
        self.buf = np.zeros(CHUNK * FRAME, np.uint8)
        self.out = b""                           # built frames not yet taken by the socket
        self.rbuf = np.zeros(1 << 20, np.uint8)
        self.fill = 0
        self.sym_key, self.price = sym_key, price
        self.counts = np.zeros(4, np.int64)      # answered, executed, rejected, other
        self.last_tx = time.monotonic()


def run(addr, users: list[tuple[str, str]], orders_per_session: int, *, rate: float | None = None,
        window: int = 20_000, sym_key: int, price: int, timeout_s: float = 600.0) -> dict:
    """Drive the sessions until every order is answered; -> figures and the histogram."""
    sessions = [LoadSession(addr, u, p, orders_per_session, sym_key, price) for u, p in users]
    sel = selectors.DefaultSelector()
    for s in sessions:
        sel.register(s.sock, selectors.EVENT_READ, s)
    hist = np.zeros(NBUCKETS, np.int64)
    total = orders_per_session * len(sessions)
    period = int(1e9 * len(sessions) / rate) if rate else 0
    t0 = time.monotonic_ns()
    deadline = time.monotonic() + timeout_s
    answered = 0
    while answered < total:
        now = time.monotonic_ns()
        for s in sessions:
            if s.out:
                try:
                    k = s.sock.send(s.out)
                    s.out = s.out[k:]
                except BlockingIOError:
                    continue
                if s.out:
                    continue
            if s.sent >= s.orders:
                continue
            if period:
                want = min(s.orders, (now - t0) // period + 1) - s.sent
            else:
                want = min(s.orders - s.sent, window - (s.sent - int(s.counts[0])))
            k = int(min(want, CHUNK))
            if k <= 0:
                continue
            fill_enters(s.buf, s.sent + 1, k, sym_key, price)
            if period:
                s.due[s.sent:s.sent + k] = t0 + np.arange(s.sent, s.sent + k, dtype=np.int64) * period
            else:
                s.due[s.sent:s.sent + k] = now
            s.sent += k
            data = s.buf[:k * FRAME].tobytes()
            try:
                m = s.sock.send(data)
            except BlockingIOError:
                m = 0
            s.out = data[m:]
            s.last_tx = time.monotonic()
        events = sel.select(0)        # epoll waits in whole milliseconds: poll, nap below
        if not events and period:
            time.sleep(20e-6)
        for key, _ in events:
            s = key.data
            try:
                k = s.sock.recv_into(memoryview(s.rbuf)[s.fill:])
            except BlockingIOError:
                continue
            if k == 0:
                raise ConnectionError("the gateway closed a load session")
            s.fill += k
            before = int(s.counts[0])
            used = scan(s.rbuf, s.fill, s.due, time.monotonic_ns(), hist, s.counts)
            answered += int(s.counts[0]) - before
            rest = s.fill - used
            s.rbuf[:rest] = s.rbuf[used:s.fill]
            s.fill = rest
        if time.monotonic() > deadline:
            raise TimeoutError(f"{answered} of {total} orders answered within {timeout_s:.0f} s")
        if time.monotonic() - max(s.last_tx for s in sessions) > 0.8:
            for s in sessions:                   # heartbeats while waiting for answers
                s.sock.send(soup.CLIENT_HEARTBEAT)
                s.last_tx = time.monotonic()
    wall = (time.monotonic_ns() - t0) / 1e9
    for s in sessions:
        try:
            s.sock.setblocking(True)
            s.sock.sendall(soup.LOGOUT)
        except OSError:
            pass
        s.sock.close()
    counts = sum(s.counts for s in sessions)
    return dict(orders=total, sessions=len(sessions), wall_s=wall, orders_per_s=total / wall,
                executed=int(counts[1]), rejected=int(counts[2]), hist=hist)


def symbol_key(name: str) -> int:
    return int.from_bytes(name.encode().ljust(8), "big")


def warm() -> None:
    buf = np.zeros(FRAME, np.uint8)
    fill_enters(buf, 1, 1, np.uint64(symbol_key("WARM")), 100)
    scan(buf, 0, np.zeros(1, np.int64), 0, np.zeros(NBUCKETS, np.int64), np.zeros(4, np.int64))

"""A member that outlives the gateway: the TCP load of ``shmex drill``.

A thread logs in over SoupBinTCP, sends Enter Orders at a fixed rate (buy/sell pairs at
one price: every second one trades), reads the answers, and when the connection goes
(a gateway killed under it) logs in again asking for the message after the last one it
read, then resends every order it has no answer for, with the same UserRefNum. It keeps
what a drill checks: the UserRefNums acknowledged (Accepted), those answered twice,
those never answered, and whether the resumed streams ever skipped or repeated a number.
"""

from __future__ import annotations

import socket
import threading
import time

from shmex.net import soup
from shmex.net.ouch_text import enter_order
from shmex.roles.gateway import read_address


def enter(urn: int, symbol: bytes, price: int) -> bytes:
    """Order urn: one lot, buys and sells in turn at one price."""
    return enter_order(urn, b"B" if urn % 2 else b"S", 1, symbol, price)


class Member(threading.Thread):
    def __init__(self, data_dir: str, run_id: str, user: str, password: str, rate: float, *,
                 symbol: bytes = b"SHMX", price: int = 100 * 10_000):
        super().__init__(daemon=True)
        self.data_dir, self.run_id, self.user, self.password = data_dir, run_id, user, password
        self.period = 1.0 / rate
        self.symbol, self.price = symbol, price
        self.sent = 0                    # UserRefNums 1..sent were sent at least once
        self.answered: dict[int, str] = {}   # urn -> first answer's type ('A' or 'J')
        self.twice: list[int] = []
        self.seq = 0                     # the last sequenced message read
        self.reconnects = 0
        self.errors: list[str] = []
        self._sending = True
        self._halt = False
        self.sock: socket.socket | None = None

    # -- control --------------------------------------------------------------------------
    def finish(self, timeout_s: float = 60.0) -> None:
        """Stop sending; wait until every order sent has its answer (or the timeout)."""
        self._sending = False
        deadline = time.monotonic() + timeout_s
        while len(self.answered) < self.sent and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.02)
        self._halt = True
        self.join(timeout=10)

    @property
    def acked(self) -> list[int]:
        return sorted(u for u, t in self.answered.items() if t == "A")

    @property
    def unanswered(self) -> list[int]:
        return [u for u in range(1, self.sent + 1) if u not in self.answered]

    # -- the thread -------------------------------------------------------------------------
    def _connect(self) -> bool:
        addr = read_address(self.data_dir, self.run_id)
        if addr is None:
            return False
        try:
            s = socket.create_connection(addr, timeout=2)
            s.sendall(soup.login_request(self.user, self.password, "", self.seq + 1))
            head = b""
            while len(head) < 3 or len(head) < 2 + int.from_bytes(head[:2], "big"):
                k = s.recv(64)
                if not k:
                    raise ConnectionError("closed at login")
                head += k
        except OSError:
            return False
        n = 2 + int.from_bytes(head[:2], "big")
        if head[2:3] != b"A":
            s.close()
            return False
        nxt = int(head[13:33].decode().strip())
        if nxt != self.seq + 1:
            self.errors.append(f"asked for message {self.seq + 1}, the gateway offered {nxt}")
        s.settimeout(0.005)
        self.sock = s
        self._buf = bytearray(head[n:])
        missing = self.unanswered              # their answers may be lost with the connection
        for i in range(0, len(missing), 256):
            s.sendall(b"".join(soup.unsequenced(enter(u, self.symbol, self.price)) for u in missing[i:i + 256]))
        return True

    def run(self) -> None:
        t0 = None                              # the schedule starts at the first login
        last_tx = time.monotonic()
        while not self._halt:
            if self.sock is None:
                if not self._connect():
                    time.sleep(0.05)
                    continue
                if t0 is None:
                    t0 = time.monotonic()
                else:
                    self.reconnects += 1
            now = time.monotonic()
            try:
                if self._sending:
                    due = int((now - t0) / self.period)
                    if due > self.sent:
                        batch = range(self.sent + 1, min(due, self.sent + 512) + 1)
                        self.sock.sendall(b"".join(soup.unsequenced(enter(u, self.symbol, self.price))
                                                   for u in batch))
                        self.sent = batch[-1]
                        last_tx = now
                if now - last_tx > 0.5:
                    self.sock.sendall(soup.CLIENT_HEARTBEAT)
                    last_tx = now
                try:
                    chunk = self.sock.recv(1 << 16)
                    if not chunk:
                        raise ConnectionError("closed")
                    self._buf += chunk
                    self._read()
                except socket.timeout:
                    pass
            except OSError:
                self.sock.close()
                self.sock = None
        if self.sock is not None:
            try:
                self.sock.sendall(soup.LOGOUT)
            except OSError:
                pass
            self.sock.close()

    def _read(self) -> None:
        b = self._buf
        while len(b) >= 3:
            n = int.from_bytes(b[:2], "big")
            if len(b) < 2 + n:
                break
            if b[2:3] == b"S":
                self.seq += 1
                t = chr(b[3])
                if t in "AJ":
                    urn = int.from_bytes(b[12:16], "big")
                    if urn in self.answered:
                        self.twice.append(urn)
                    else:
                        self.answered[urn] = t
            del b[:2 + n]


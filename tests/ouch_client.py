"""A test member: Nasdaq's own SoupBinTCP client (`nasdaq-protocols`) carrying OUCH 5.0
messages laid out from the spec with `struct` (nothing of shmex's codec is used here)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import struct
import time

from nasdaq_protocols import soup


# inbound (client -> exchange), OUCH 5.0
def enter(urn, side, qty, symbol, price, tif=b"0", display=b"Y", capacity=b"A", iso=b"N", cross=b"N",
          clordid=None, appendage=b""):
    clord = (clordid or f"C{urn}").encode().ljust(14)
    return (b"O" + struct.pack(">I", urn) + side + struct.pack(">I", qty) + symbol.ljust(8)
            + struct.pack(">Q", price) + tif + display + capacity + iso + cross + clord
            + struct.pack(">H", len(appendage)) + appendage)


def replace(orig, urn, qty, price, tif=b"0", display=b"Y", iso=b"N", clordid=None, appendage=b""):
    clord = (clordid or f"R{urn}").encode().ljust(14)
    return (b"U" + struct.pack(">II", orig, urn) + struct.pack(">I", qty) + struct.pack(">Q", price)
            + tif + display + iso + clord + struct.pack(">H", len(appendage)) + appendage)


def cancel(urn, qty=0):
    return b"X" + struct.pack(">II", urn, qty)


def modify(urn, side, qty):
    return b"M" + struct.pack(">I", urn) + side + struct.pack(">I", qty)


POST_ONLY = bytes([2, 12]) + b"P"      # appendage option: length 2, tag 12 (post only), 'P'


def parse(msg: bytes) -> dict:
    """One OUCH 5.0 outbound message -> its fields."""
    t = chr(msg[0])
    ts = struct.unpack(">Q", msg[1:9])[0]
    if t in "AU":
        o = 4 if t == "U" else 0
        d = dict(type=t, ts=ts)
        if t == "U":
            d["orig"] = struct.unpack(">I", msg[9:13])[0]
        d.update(urn=struct.unpack(">I", msg[9 + o:13 + o])[0], side=msg[13 + o:14 + o],
                 qty=struct.unpack(">I", msg[14 + o:18 + o])[0], symbol=msg[18 + o:26 + o].rstrip(),
                 price=struct.unpack(">Q", msg[26 + o:34 + o])[0], tif=msg[34 + o:35 + o],
                 display=msg[35 + o:36 + o], orn=struct.unpack(">Q", msg[36 + o:44 + o])[0],
                 capacity=msg[44 + o:45 + o], state=msg[47 + o:48 + o], clordid=msg[48 + o:62 + o].rstrip(),
                 size=len(msg))
        return d
    if t == "C":
        return dict(type=t, ts=ts, urn=struct.unpack(">I", msg[9:13])[0], qty=struct.unpack(">I", msg[13:17])[0],
                    reason=msg[17:18], size=len(msg))
    if t == "E":
        return dict(type=t, ts=ts, urn=struct.unpack(">I", msg[9:13])[0], qty=struct.unpack(">I", msg[13:17])[0],
                    price=struct.unpack(">Q", msg[17:25])[0], liquidity=msg[25:26],
                    match=struct.unpack(">Q", msg[26:34])[0], size=len(msg))
    if t == "J":
        return dict(type=t, ts=ts, urn=struct.unpack(">I", msg[9:13])[0], reason=struct.unpack(">H", msg[13:15])[0],
                    clordid=msg[15:29].rstrip(), size=len(msg))
    if t == "M":
        return dict(type=t, ts=ts, urn=struct.unpack(">I", msg[9:13])[0], side=msg[13:14],
                    qty=struct.unpack(">I", msg[14:18])[0], size=len(msg))
    return dict(type=t, ts=ts, raw=msg)


def launch(run_id, tmp, *extra) -> subprocess.Popen:
    """An engine whose only producer is the gateway, on a free port; stderr to tmp/launch.err."""
    err = open(tmp / "launch.err", "w")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", run_id, "--producers", "0",
                             "--clients", "0", "--gateway", "127.0.0.1:0", "--quiet",
                             "--data-dir", str(tmp / "data"), "--json", str(tmp / "run.json"), *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True)


def gateway_address(data_dir, run_id, proc=None, timeout_s=600.0) -> tuple[str, int]:
    from shmex.roles.gateway import wait_address

    return wait_address(str(data_dir), run_id, proc, timeout_s)


class Member:
    """One logged-in SoupBinTCP session (async)."""

    def __init__(self, session):
        self.s = session
        self.seq = session.sequence        # the last sequenced message number received

    @classmethod
    async def login(cls, addr, user, password, *, sequence=0, session=""):
        s = await soup.connect_async(addr, user, password, session, sequence=sequence,
                                     client_heartbeat_interval=1, server_heartbeat_interval=5)
        return cls(s)

    def send(self, *msgs):
        for m in msgs:
            self.s.send_unseq_data(m)

    async def _next(self, deadline):
        """The next message before `deadline` (monotonic s), or None. Polls: a wait_for
        around the library's receive would end its queue when it times out."""
        from nasdaq_protocols.common import StateError

        while True:
            if self.s.is_closed():
                return None            # what it had not handed out yet comes again on a resend
            try:
                m = self.s.receive_msg_nowait()
            except StateError:         # closing: the library drains its queue itself
                return None
            if m is not None:
                return m
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.002)

    async def recv(self, n, timeout_s=30.0) -> list[dict]:
        """The next n sequenced messages, parsed."""
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            m = await self._next(deadline)
            if m is None:
                raise TimeoutError(f"got {len(out)} of {n} messages: {out}")
            if isinstance(m, soup.SequencedData):
                self.seq += 1
                out.append(parse(m.data))
        return out

    async def quiet(self, for_s=0.5) -> list[dict]:
        """Whatever sequenced messages arrive within for_s (expected: none)."""
        out = []
        deadline = time.monotonic() + for_s
        while True:
            m = await self._next(deadline)
            if m is None:
                return out
            if isinstance(m, soup.SequencedData):
                self.seq += 1
                out.append(parse(m.data))

    async def logout(self):
        self.s.logout()
        for _ in range(100):
            if self.s.is_closed():
                return
            await asyncio.sleep(0.02)

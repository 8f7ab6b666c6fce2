"""What a Python user would otherwise write: SoupBinTCP servers handling one message per
callback, answering each Enter Order with an Accepted. No book, no log: the session
protocol alone, for `shmex bench gateway` to compare the gateway's whole path with.

- ``plain``: an `asyncio.Protocol`; ``data_received`` splits packets and calls a handler
  per message, which unpacks the order with `struct` and writes its answer.
- ``nasdaq``: nasdaq-protocols' `SoupServerSession` (Nasdaq's own library), its
  ``on_unsequenced`` per message.

Run as ``python -m shmex.bench.soup_baselines plain|nasdaq``: prints the port, serves
until killed.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

_ENTER = struct.Struct(">cIcI8sQccccc14sH")


def accepted(msg: bytes) -> bytes:
    """An OUCH 5.0 Accepted (64 bytes) for an Enter Order."""
    (_, urn, side, qty, sym, price, tif, disp, capa, iso, cross, clord, _app) = _ENTER.unpack_from(msg)
    ts = time.time_ns() % 86_400_000_000_000
    return (b"A" + struct.pack(">QI", ts, urn) + side + struct.pack(">I", qty) + sym + struct.pack(">Q", price)
            + tif + disp + struct.pack(">Q", urn) + capa + iso + cross + b"L" + clord + b"\0\0")


def _frame(typ: bytes, body: bytes) -> bytes:
    return struct.pack(">H", len(body) + 1) + typ + body


class PlainSoup(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""
        self.seq = 1

    def data_received(self, data):
        self.buf += data
        while len(self.buf) >= 3:
            n = struct.unpack_from(">H", self.buf)[0]
            if len(self.buf) < 2 + n:
                break
            typ, body = self.buf[2:3], self.buf[3:2 + n]
            self.buf = self.buf[2 + n:]
            self.on_packet(typ, body)

    def on_packet(self, typ, body):
        if typ == b"L":
            self.t.write(_frame(b"A", b"BASELINE  " + b"1".rjust(20)))
        elif typ == b"U" and body[:1] == b"O":
            self.t.write(_frame(b"S", accepted(body)))
            self.seq += 1
        elif typ == b"O":
            self.t.close()


def _nasdaq_factory():
    from nasdaq_protocols import soup

    class Server(soup.SoupServerSession):
        async def on_login(self, msg):
            return soup.LoginAccepted("BASELINE", 1)

        async def on_unsequenced(self, msg):
            if msg.data[:1] == b"O":
                self.send_seq_msg(accepted(msg.data))

    return lambda: Server(client_heartbeat_interval=30, server_heartbeat_interval=30)


async def serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    factory = PlainSoup if kind == "plain" else _nasdaq_factory()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))

"""``shmex ouch HOST:PORT``: a member's command-line session with a gateway.

Logs in over SoupBinTCP, sends OUCH 5.0 orders given as arguments, from ``--file`` or
from standard input (``-``), prints every sequenced message with its number, and logs out
once ``--wait`` seconds pass without one. ``--seq N`` asks for the stream from message N
(a resend of what a previous session saw). ``--hash-password PW`` prints a users-file hash.
"""

from __future__ import annotations

import socket
import sys
import time


def add_arguments(p) -> None:
    p.add_argument("address", nargs="?", metavar="HOST:PORT", help="the gateway (shmex launch --gateway)")
    p.add_argument("orders", nargs="*", metavar="ORDER",
                   help="e.g. 'buy 100 SHMX @ 10.25', 'sell 5 SHMX @ 10.30 ioc', 'cancel URN', "
                        "'replace URN NEWURN QTY @ PRICE', 'modify URN short QTY'")
    p.add_argument("--user", default="alice", help="username (default alice, a shipped demo user)")
    p.add_argument("--password", default="alice1")
    p.add_argument("--session", default="", help="requested session (default: the current one)")
    p.add_argument("--seq", type=int, default=0, help="first message to receive (default 0: the next new one)")
    p.add_argument("--file", metavar="PATH", help="orders, one per line ('-': standard input)")
    p.add_argument("--wait", type=float, default=1.0, metavar="S",
                   help="log out after S seconds without a message (default 1)")
    p.add_argument("--hash-password", metavar="PW", help="print a password hash for a users file and exit")


def _frames(buf: bytearray):
    """Complete SoupBinTCP packets taken from the front of buf: (type, payload)."""
    while len(buf) >= 3:
        n = int.from_bytes(buf[:2], "big")
        if len(buf) < 2 + n:
            return
        typ, body = buf[2:3], bytes(buf[3:2 + n])
        del buf[:2 + n]
        yield typ, body


def main(args) -> int:
    from shmex.errors import UsageError
    from shmex.net import ouch_text, soup

    if args.hash_password is not None:
        from shmex.net.users import hash_password

        try:
            print(hash_password(args.hash_password))
        except UsageError as e:
            print(f"ouch: {e}", file=sys.stderr)
            return 2
        return 0
    if not args.address:
        print("ouch: the gateway's HOST:PORT is needed", file=sys.stderr)
        return 2
    host, _, port = args.address.rpartition(":")
    lines = list(args.orders)
    if args.file:
        src = sys.stdin if args.file == "-" else open(args.file)
        lines += src.read().splitlines()
    base = (time.time_ns() // 1_000_000) % 86_400_000 * 40      # rises through the day
    counter = iter(range(base, 2 ** 32))
    try:
        msgs = [m for m in (ouch_text.encode(line, lambda: next(counter)) for line in lines) if m]
    except UsageError as e:
        print(f"ouch: {e}", file=sys.stderr)
        return 2
    try:
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=10)
    except (OSError, ValueError) as e:
        print(f"ouch: cannot connect to {args.address}: {e}", file=sys.stderr)
        return 2
    sock.sendall(soup.login_request(args.user, args.password, args.session, args.seq))
    buf = bytearray()
    seq = None
    rc = 0
    last_rx = last_tx = time.monotonic()
    sock.settimeout(0.1)
    try:
        while True:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    print("ouch: the gateway closed the session", file=sys.stderr)
                    rc = 1 if seq is None else 0
                    break
                buf += chunk
            except socket.timeout:
                pass
            now = time.monotonic()
            for typ, body in _frames(buf):
                if typ in (b"A", b"S"):
                    last_rx = now             # heartbeats do not hold the session open
                if typ == b"A":
                    seq = int(body[10:30].decode().strip())
                    print(f"login accepted: session {body[:10].decode().strip()}, next message {seq}")
                    for m in msgs:
                        sock.sendall(soup.unsequenced(m))
                    last_tx = now
                elif typ == b"J":
                    why = {b"A": "not authorized", b"S": "session not available"}.get(body[:1], body[:1].decode())
                    print(f"ouch: login rejected: {why}", file=sys.stderr)
                    return 1
                elif typ == b"S":
                    print(f"{seq:>8}  {ouch_text.describe(body)}")
                    seq += 1
                elif typ == b"+":
                    print(f"debug: {body.decode('ascii', 'replace')}", file=sys.stderr)
                elif typ == b"Z":
                    print("end of session")
                    return 0
            if seq is not None and now - last_rx >= args.wait:
                sock.sendall(soup.LOGOUT)
                break
            if now - last_tx >= 1.0:
                sock.sendall(soup.CLIENT_HEARTBEAT)
                last_tx = now
    except OSError as e:
        print(f"ouch: {e}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    return rc

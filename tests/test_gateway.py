"""The OUCH 5.0 / SoupBinTCP gateway against Nasdaq's own SoupBinTCP client.

One engine (no load producers, the gateway on a free port, the shipped symbols and demo
users) serves the module; each test trades at prices of its own so that tests do not
meet in the book. Users: alice, bob, carol (cancel on disconnect), dave (keeps his orders).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import subprocess
import sys

import pytest

from engine_proc import stop
from ouch_client import Member, POST_ONLY, cancel, enter, gateway_address, launch, modify, replace
from shmex.net import ouch
from shmex.shm.names import new_run_id

SHMX, WXYZ = b"SHMX", b"WXYZ"      # SHMX: tick 0.01, band 0.01-200.00, lot 1; WXYZ: tick 0.05, lot 100
D = 10_000                         # one dollar in OUCH price units
_urns = itertools.count(1)         # UserRefNums rise per user: one counter for all, whatever the test order


def urns(k: int) -> list[int]:
    return [next(_urns) for _ in range(k)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    run_id = new_run_id()
    p = launch(run_id, tmp, "--gateway-idle", "3")
    try:
        addr = gateway_address(tmp / "data", run_id, p, timeout_s=900)
        yield dict(addr=addr, run_id=run_id, tmp=tmp, proc=p)
    finally:
        stop(p)
    log = (tmp / "launch.err").read_text()
    assert p.returncode == 0, log
    doc = json.loads((tmp / "run.json").read_text())
    assert all(doc["checks"].values()), (doc["checks"], log[-3000:])


def run(coro):
    return asyncio.run(coro)


def _log(engine) -> str:
    return (engine["tmp"] / "launch.err").read_text()


def test_enter_and_execute_both_sides(engine):
    async def go():
        a = await Member.login(engine["addr"], "alice", "alice1")
        b = await Member.login(engine["addr"], "bob", "bob1")
        x, y, z = urns(3)
        a.send(enter(x, b"B", 300, SHMX, 101 * D, clordid="alice-10"))
        [acc] = await a.recv(1)
        assert acc["type"] == "A" and acc["urn"] == x and acc["qty"] == 300 and acc["price"] == 101 * D
        assert acc["symbol"] == b"SHMX" and acc["side"] == b"B" and acc["state"] == b"L"
        assert acc["clordid"] == b"alice-10" and acc["tif"] == b"0" and acc["orn"] > 0
        b.send(enter(y, b"S", 120, SHMX, 100 * D))     # crosses at the resting price
        bacc, bex = await b.recv(2)
        assert bacc["type"] == "A" and bex["type"] == "E"
        assert bex["qty"] == 120 and bex["price"] == 101 * D and bex["liquidity"] == b"R"
        [aex] = await a.recv(1)
        assert aex["type"] == "E" and aex["urn"] == x and aex["qty"] == 120 and aex["liquidity"] == b"A"
        assert aex["match"] == bex["match"]            # one trade, one match number
        b.send(enter(z, b"S", 180, SHMX, 101 * D))     # fills the rest: another match number
        _, bex2 = await b.recv(2)
        [aex2] = await a.recv(1)
        assert aex2["match"] == bex2["match"] != aex["match"] and aex2["qty"] == 180
        await a.logout()
        await b.logout()
    run(go())


@pytest.mark.parametrize("msg, code", [
    (enter(1, b"B", 10, b"NOPE", 100 * D), ouch.REJ_INVALID_SYMBOL),
    (enter(1, b"B", 10, SHMX, 100 * D + 50), ouch.REJ_INVALID_PRICE),       # off the 0.01 tick
    (enter(1, b"B", 10, SHMX, 0), ouch.REJ_INVALID_PRICE),
    (enter(1, b"B", 10, SHMX, 250 * D), ouch.REJ_PRICE_BAND),             # band ends at 200.00
    (enter(1, b"B", 0, SHMX, 100 * D), ouch.REJ_INVALID_QUANTITY),
    (enter(1, b"B", 150, WXYZ, 100 * D), ouch.REJ_INVALID_QUANTITY),      # lot 100
    (enter(1, b"X", 10, SHMX, 100 * D), ouch.REJ_INVALID_SIDE),
    (enter(1, b"B", 10, SHMX, 100 * D, tif=b"6"), ouch.REJ_INVALID_TIF),  # GTT
    (enter(1, b"B", 10, SHMX, 100 * D, display=b"N"), ouch.REJ_INVALID_DISPLAY),
    (enter(1, b"B", 10, SHMX, 100 * D, iso=b"Y"), ouch.REJ_ISO_NOT_ALLOWED),
    (enter(1, b"B", 10, SHMX, 100 * D, cross=b"O"), ouch.REJ_INVALID_CROSS),
    (enter(1, b"B", 10, SHMX, 100 * D, appendage=bytes([5, 3]) + b"\0\0\0\1"), ouch.REJ_UNSUPPORTED_OPTION),
    (cancel(999_999), ouch.REJ_UNKNOWN_ORDER),
])
def test_rejects_name_the_reason_and_leave_the_book_alone(engine, msg, code):
    async def go():
        c = await Member.login(engine["addr"], "carol", "carol1")
        [urn] = urns(1)
        if msg[:1] == b"O":
            msg2 = msg[:1] + struct.pack(">I", urn) + msg[5:]
        else:
            msg2, urn = msg, 999_999
        c.send(msg2)
        [j] = await c.recv(1)
        assert j["type"] == "J" and j["urn"] == urn and j["reason"] == code, j
        await c.logout()
    run(go())


def test_a_user_ref_num_that_does_not_increase_is_ignored(engine):
    async def go():
        a = await Member.login(engine["addr"], "alice", "alice1")
        x, y = urns(2)
        a.send(enter(x, b"B", 5, SHMX, 90 * D))
        [acc] = await a.recv(1)
        assert acc["type"] == "A"
        a.send(enter(x, b"B", 5, SHMX, 90 * D), enter(x - 1, b"B", 5, SHMX, 90 * D))   # a resend, a lower one
        assert await a.quiet(0.7) == []
        a.send(enter(y, b"B", 5, SHMX, 90 * D))
        [acc2] = await a.recv(1)
        assert acc2["urn"] == y
        await a.logout()
    run(go())


def test_cancel_reduce_replace_modify(engine):
    async def go():
        d = await Member.login(engine["addr"], "dave", "dave1")
        o, n = urns(2)
        d.send(enter(o, b"S", 1000, SHMX, 150 * D))
        [acc] = await d.recv(1)
        d.send(cancel(o, 600))                            # reduce to 600
        [c1] = await d.recv(1)
        assert c1["type"] == "C" and c1["urn"] == o and c1["qty"] == 400 and c1["reason"] == b"U"
        d.send(replace(o, n, 500, 151 * D))               # new number, price and size
        [u] = await d.recv(1)
        assert u["type"] == "U" and u["orig"] == o and u["urn"] == n and u["qty"] == 500
        assert u["price"] == 151 * D and u["size"] == 68 and u["orn"] != acc["orn"]
        d.send(cancel(o))                                 # the old number is gone
        [j] = await d.recv(1)
        assert j["type"] == "J" and j["reason"] == ouch.REJ_UNKNOWN_ORDER
        d.send(modify(n, b"T", 300))                      # sell short, reduce to 300
        [m] = await d.recv(1)
        assert m["type"] == "M" and m["urn"] == n and m["side"] == b"T" and m["qty"] == 300
        d.send(modify(n, b"B", 300))                    # a sell cannot become a buy
        [j2] = await d.recv(1)
        assert j2["type"] == "J" and j2["reason"] == ouch.REJ_INVALID_SIDE
        d.send(cancel(n))
        [c2] = await d.recv(1)
        assert c2["type"] == "C" and c2["qty"] == 300
        await d.logout()
    run(go())


def test_ioc_and_post_only(engine):
    async def go():
        a = await Member.login(engine["addr"], "alice", "alice1")
        b = await Member.login(engine["addr"], "bob", "bob1")
        w, x, y, z = urns(4)
        a.send(enter(w, b"S", 10, SHMX, 30 * D))
        await a.recv(1)
        b.send(enter(x, b"B", 25, SHMX, 30 * D, tif=b"3"))     # IOC: 10 trade, 15 expire
        acc, ex, can = await b.recv(3)
        assert (acc["type"], ex["type"], can["type"]) == ("A", "E", "C")
        assert ex["qty"] == 10 and can["qty"] == 15 and can["reason"] == b"I"
        a.send(enter(y, b"S", 10, SHMX, 31 * D))
        await a.recv(2)                                  # the fill of w, the Accepted of y
        b.send(enter(z, b"B", 5, SHMX, 31 * D, appendage=POST_ONLY))     # would cross: rejected
        [j] = await b.recv(1)
        assert j["type"] == "J" and j["reason"] == ouch.REJ_POST_ONLY_WOULD_CROSS
        await a.logout()
        await b.logout()
    run(go())


def test_reconnect_resends_from_the_requested_number(engine):
    async def go():
        d = await Member.login(engine["addr"], "dave", "dave1")
        first = d.seq + 1
        ids = urns(5)
        d.send(*[enter(u, b"B", 1, SHMX, (20 + i) * D) for i, u in enumerate(ids)])
        got = await d.recv(5)
        await d.logout()
        again = await Member.login(engine["addr"], "dave", "dave1", sequence=first + 2)
        assert again.seq == first + 1
        replayed = await again.recv(3)
        assert replayed == got[2:]                      # byte for byte the same messages
        assert await again.quiet(0.5) == []             # and nothing twice
        await again.logout()
        tail = await Member.login(engine["addr"], "dave", "dave1", sequence=0)
        assert tail.seq == first + 4                    # 0: from the next message on
        assert await tail.quiet(0.5) == []
        tail.send(*[cancel(u) for u in ids])
        assert [m["type"] for m in await tail.recv(5)] == ["C"] * 5
        await tail.logout()
    run(go())


def test_login_rules(engine):
    async def go():
        with pytest.raises(ConnectionRefusedError):
            await Member.login(engine["addr"], "alice", "wrong")
        with pytest.raises(ConnectionRefusedError):
            await Member.login(engine["addr"], "nobody", "x")
        with pytest.raises(ConnectionRefusedError):
            await Member.login(engine["addr"], "bob", "bob1", session="NOTTHISONE")
        b = await Member.login(engine["addr"], "bob", "bob1")
        with pytest.raises(ConnectionRefusedError):                       # one session per user
            await Member.login(engine["addr"], "bob", "bob1")
        b.send(enter(urns(1)[0], b"B", 1, SHMX, 10 * D))
        [acc] = await b.recv(1)
        assert acc["type"] == "A"
        await b.logout()
    run(go())
    log = _log(engine)
    assert "unknown user or wrong password" in log and "is already logged in" in log


def _raw(addr, data: bytes, timeout_s=5.0) -> bytes:
    """Send bytes on a fresh connection; -> what came back before the gateway closed it."""
    s = socket.create_connection(addr, timeout=timeout_s)
    s.sendall(data)
    got = b""
    try:
        while True:
            k = s.recv(65536)
            if not k:
                break
            got += k
    finally:
        s.close()
    return got


def test_bad_input_closes_only_that_session(engine):
    from shmex.net import soup

    async def go():
        a = await Member.login(engine["addr"], "alice", "alice1")
        # each gets a SoupBinTCP Debug packet ('+') saying why, then the connection closes
        got = _raw(engine["addr"], b"\xff\xff garbage, not SoupBinTCP")
        assert got[2:3] == b"+" and b"frame length" in got
        got = _raw(engine["addr"], b"\x00\x05Qabcd")                            # not a login first
        assert got[2:3] == b"+" and b"must be a login request" in got
        login = soup.login_request("carol", "carol1")
        got = _raw(engine["addr"], login + b"\x00\x02Qx")                      # unknown packet type
        assert got[2:3] == b"A" and b"unknown packet type" in got            # logged in, then closed
        got = _raw(engine["addr"], login + soup.unsequenced(b"O" + b"\0" * 10))  # short Enter Order
        assert got[2:3] == b"A" and b"wrong size" in got
        got = _raw(engine["addr"], login + soup.unsequenced(b"Z" + b"\0" * 10))  # unknown OUCH type
        assert got[2:3] == b"A" and b"unknown OUCH message type" in got
        [u] = urns(1)
        a.send(enter(u, b"B", 1, SHMX, 11 * D))                                  # alice goes on
        [acc] = await a.recv(1)
        assert acc["type"] == "A" and acc["urn"] == u
        a.send(cancel(u))
        await a.recv(1)
        await a.logout()
    run(go())
    log = _log(engine)
    for why in ("the first packet must be a login request", "unknown packet type",
                "OUCH message of the wrong size", "unknown OUCH message type"):
        assert why in log


def test_cancel_on_disconnect_unless_the_user_keeps_orders(engine):
    async def go():
        c = await Member.login(engine["addr"], "carol", "carol1")
        d = await Member.login(engine["addr"], "dave", "dave1")
        x, y, z = urns(3)
        c.send(enter(x, b"S", 10, SHMX, 60 * D))
        d.send(enter(y, b"S", 10, SHMX, 61 * D))
        await c.recv(1)
        await d.recv(1)
        await c.logout()                                # carol's order goes, dave's stays
        await d.logout()
        await asyncio.sleep(0.5)
        b = await Member.login(engine["addr"], "bob", "bob1")
        b.send(enter(z, b"B", 20, SHMX, 61 * D, tif=b"3"))
        acc, ex, can = await b.recv(3)
        assert ex["type"] == "E" and ex["qty"] == 10 and ex["price"] == 61 * D      # dave's, not carol's
        assert can["type"] == "C" and can["qty"] == 10
        await b.logout()
        d2 = await Member.login(engine["addr"], "dave", "dave1", sequence=0)
        await d2.logout()
    run(go())


def test_a_silent_session_is_dropped_and_heartbeats_flow(engine):
    from shmex.net import soup

    s = socket.create_connection(engine["addr"], timeout=10)
    s.sendall(soup.login_request("carol", "carol1"))
    got = b""
    try:
        while True:
            k = s.recv(4096)
            if not k:
                break
            got += k
    finally:
        s.close()
    assert got[2:3] == b"A"
    assert got.count(soup.HEARTBEAT) >= 1               # the server beat while the client was silent
    assert "silent for 3 s" in _log(engine)


def test_the_ouch_command_trades_and_prints(engine, tmp_path):
    host, port = engine["addr"]
    orders = tmp_path / "orders.txt"
    orders.write_text("# a buy and a sell that meet\nbuy 3 SHMX @ 12.34 clordid=first\nsell 3 SHMX @ 12.34\n"
                      "sell 5 NOPE @ 1\n")
    out = subprocess.run([sys.executable, "-m", "shmex.cli", "ouch", f"{host}:{port}", "--user", "bob",
                          "--password", "bob1", "--file", str(orders), "--wait", "1.5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("login accepted: session")
    text = "\n".join(lines[1:])
    assert text.count("accepted urn=") == 2 and "BUY" not in text and "buy 3 SHMX @ 12.3400" in text
    assert text.count("executed") == 2 and "maker" in text and "taker" in text
    assert "rejected" in text and "(invalid_symbol)" in text
    bad = subprocess.run([sys.executable, "-m", "shmex.cli", "ouch", f"{host}:{port}", "--user", "bob",
                          "--password", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not authorized" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "shmex.cli", "ouch", f"{host}:{port}", "buy 3 SHMX at 1"],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "want 'buy QTY SYMBOL @ PRICE" in usage.stderr


def test_hash_password_round_trips():
    from shmex.net.users import parse

    out = subprocess.run([sys.executable, "-m", "shmex.cli", "ouch", "--hash-password", "s3cret"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    [user] = parse(f"erin, 7, {out.stdout.strip()}\n")
    assert user.check("s3cret") and not user.check("s3cre") and user.cancel_on_disconnect

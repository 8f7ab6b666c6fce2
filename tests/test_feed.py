"""The ITCH feed over MoldUDP64: what subscribers get live is the journal's feed, byte for
byte what `shmex feed DIR` regenerates; lost packets and a late join are re-requested;
a killed feed process resumes the same sequence; itchfeed reads every message."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import numpy as np
import psutil

from engine_proc import stop
from itch_book import assert_itchfeed_reads
from shmex.commands.watch import check
from shmex.engine import cells, registry
from shmex.engine.config import EngineConfig
from shmex.engine.ctl import Ctl
from shmex.net import feedfile, itch, mold
from shmex.net.subscriber import Subscriber


def _group() -> str:
    """A multicast group and port of this test's own (tests run side by side)."""
    r = random.Random(os.getpid() ^ time.monotonic_ns())
    return f"239.192.{r.randint(1, 250)}.{r.randint(1, 250)}:{r.randint(20000, 60000)}"


def _launch(run_id, tmp, *extra) -> subprocess.Popen:
    err = open(tmp / "launch.err", "w")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", run_id, "--quiet",
                             "--data-dir", str(tmp / "data"), "--feed", _group(), "--symbols", "4", *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True)


def _wait(cond, p: subprocess.Popen, what: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert p.poll() is None, f"the engine ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.02)


def _slot_cell(run_id: str, field: int) -> int:
    """A cell of the feed process's slot (field: P_PID, or P_ROLE + one of the F_ cells)."""
    cfg = EngineConfig(run_id=run_id, data_dir="/tmp/unused", feed="239.1.1.1:1")
    ctl = Ctl.attach(run_id)
    try:
        return int(ctl.a[cells.proc_cell(registry.slot_of(cfg, "feed"), field)])
    finally:
        ctl.close()


def _feed_cell(run_id: str, field: int) -> int:
    return _slot_cell(run_id, cells.P_ROLE + field)


def _subscribe(data):
    """Every block of the feed until its end of session: -> (bytes, book, stats)."""
    book, parts = itch.new_book(), []
    with Subscriber.of_run(data, idle_timeout=120) as s:
        for first, block, count in s.blocks():
            assert first == s.expected - count
            parts.append(block)
            itch.apply(book, np.frombuffer(block, np.uint8))
    return b"".join(parts), book, s.stats


def test_a_late_subscriber_losing_packets_gets_every_message_and_the_engines_book(shm_run, tmp_path):
    data = tmp_path / "data"
    live, info = feedfile.paths(data)
    p = _launch(shm_run, tmp_path, "--orders", "60000", "--rate", "20000", "--feed-drop-every", "7",
                "--feed-linger", "10")
    _wait(lambda: os.path.exists(info) and os.path.exists(live) and os.path.getsize(live) > 50_000, p,
          "a feed in progress")
    got, book, stats = _subscribe(data)          # joins late: its first packet opens a gap from 1
    assert p.wait(timeout=600) == 0, (tmp_path / "launch.err").read_text()
    assert stats.gaps >= 1 and stats.rerequests >= 1 and stats.answers >= 1
    with open(live, "rb") as f:
        assert got == f.read()                   # every message, in order, once
    assert check(book, data, feedfile.info_symbols(feedfile.read_info(data))) == []
    msgs = itch.messages(got)
    assert [m[:1] for m in msgs[:2]] == [b"S", b"R"] and [itch.decode(m)["event"] for m in msgs[-3:]] == ["M", "E", "C"]
    assert {m[:1] for m in msgs} >= {b"A", b"E", b"D"}
    assert assert_itchfeed_reads(got) == len(msgs)
    regen = tmp_path / "regen.bin"
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "feed", str(data), "--out", str(regen)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical to the live feed" in r.stdout
    assert regen.read_bytes() == got


def test_a_killed_feed_resumes_the_same_sequence_on_the_wire(shm_run, tmp_path):
    data = tmp_path / "data"
    live, info = feedfile.paths(data)
    p = _launch(shm_run, tmp_path, "--producers", "2", "--duration", "600", "--rate", "10000",
                "--feed-linger", "10")
    try:
        _wait(lambda: os.path.exists(info), p, "the feed's info")
        import threading

        out = {}
        t = threading.Thread(target=lambda: out.update(zip(("bytes", "book", "stats"), _subscribe(data))))
        t.start()
        _wait(lambda: _feed_cell(shm_run, cells.F_SENT) > 20_000, p, "20,000 messages sent")
        victim = psutil.Process(_slot_cell(shm_run, cells.P_PID))
        victim.kill()
        _wait(lambda: _feed_cell(shm_run, cells.F_STARTS) >= 2, p, "the feed's restart")
        _wait(lambda: _feed_cell(shm_run, cells.F_SENT) > 40_000, p, "20,000 more messages after the restart")
    finally:
        rc = stop(p)
    t.join(timeout=300)
    assert rc == 0, (tmp_path / "launch.err").read_text()
    assert not t.is_alive() and out, "the subscriber did not see the end of session"
    with open(live, "rb") as f:
        assert out["bytes"] == f.read()          # the same sequence numbers and content throughout
    # the successor sends after its predecessor's last packet: a packet sent just before the
    # kill, not yet counted, may come twice (a duplicate is dropped); nothing else repeats
    assert out["stats"].duplicates <= 1
    assert check(out["book"], data, feedfile.info_symbols(feedfile.read_info(data))) == []
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "feed", str(data)], capture_output=True, text=True)
    assert r.returncode == 0 and "identical to the live feed" in r.stdout, r.stdout + r.stderr


def _block(msgs) -> np.ndarray:
    return np.frombuffer(itch.framed(msgs), np.uint8)


def test_the_feed_file_keeps_the_prefix_a_regenerated_feed_agrees_with(tmp_path):
    path = str(tmp_path / "itch.bin")
    old = [itch.system_event(b"O", 1)] + [itch.system_event(b"Q", k) for k in range(2, 40)]
    f = feedfile.FeedFile(path)
    b = _block(old)
    f.add(b, feedfile.offsets(b))
    f.close()
    with open(path, "ab") as g:
        g.write(b"\x00\x0cS")                   # a torn last message
    new = old[:25] + [itch.system_event(b"M", k) for k in range(25, 45)]
    f = feedfile.FeedFile(path)
    assert f.count == len(old)                  # the torn message is cut
    for lo in range(0, len(new), 10):          # regenerated in blocks that straddle the difference
        b = _block(new[lo:lo + 10])
        f.add(b, feedfile.offsets(b))
    assert f.cut_at == 26 and f.count == len(new)
    data, k = f.read(20, 200)
    assert itch.messages(data) == new[19:19 + k] and 0 < k and len(data) <= 200
    f.close()
    assert open(path, "rb").read() == itch.framed(new)


def test_packets_hold_at_most_1400_message_bytes_and_every_message_once():
    msgs = [itch.system_event(b"Q", k) if k % 3 else itch.stock_directory(0, "SHMX", 1, k) for k in range(500)]
    b = _block(msgs)
    offs = feedfile.offsets(b)
    cuts = mold.cuts(offs, 0, len(offs), len(b))
    assert cuts[0] == 0 and cuts[-1] == len(msgs)
    for a, z in zip(cuts[:-1], cuts[1:]):
        end = offs[z] if z < len(offs) else len(b)
        assert 0 < end - offs[a] <= mold.MAX_PAYLOAD
        nxt = offs[z + 1] if z + 1 < len(offs) else len(b)
        assert z == len(msgs) or nxt - offs[a] > mold.MAX_PAYLOAD   # greedy: the next one did not fit


def test_a_subscriber_fills_a_gap_by_re_request_and_delivers_each_message_once_in_order(tmp_path):
    import socket
    import threading

    msgs = [itch.system_event(b"O", 0)] + [itch.system_event(b"Q", k) for k in range(1, 100)]
    f = feedfile.FeedFile(str(tmp_path / "itch.bin"))
    b = _block(msgs)
    f.add(b, feedfile.offsets(b))
    session = mold.session_name("TEST")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()

    def serve():                                  # the re-request server, as the feed runs it
        while not stop.is_set():
            try:
                req, addr = server.recvfrom(64)
            except socket.timeout:
                continue
            _, seq, count = mold.parse_header(req)
            data, k = f.read(seq, mold.MAX_PAYLOAD, count)
            server.sendto(mold.header(session, seq, k) + data, addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    group, port = _group().rsplit(":", 1)
    sub = Subscriber(group, int(port), server.getsockname(), session="TEST", idle_timeout=30)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    for lo, hi in ((0, 10), (20, 50), (50, 100)):      # messages 11..20 never multicast
        tx.sendto(mold.header(session, lo + 1, hi - lo) + itch.framed(msgs[lo:hi]), (group, int(port)))
    tx.sendto(mold.header(session, 21, 30) + itch.framed(msgs[20:50]), (group, int(port)))   # a duplicate
    tx.sendto(mold.header(session, 101, mold.END_OF_SESSION), (group, int(port)))
    try:
        got = list(sub.decoded())
    finally:
        stop.set()
        sub.close()
        tx.close()
        t.join()
        server.close()
        f.close()
    assert [s for s, _ in got] == list(range(1, 101))
    assert [d["event"] for _, d in got] == ["O"] + ["Q"] * 99
    assert sub.stats.gaps == 1 and sub.stats.rerequests >= 1 and sub.stats.duplicates == 1

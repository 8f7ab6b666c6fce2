"""Cancel-on-disconnect: a client slot's resting orders go when its client goes away, and
the slot's next client is a new session: no order, id or report of its predecessor."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from engine_proc import stop
from shmex.client import connect
from shmex.matcher.matcher import Matcher
from shmex.net import itch
from shmex.recovery.recover import matcher_config
from shmex.ring import Ring
from shmex.schema import COMMAND, K_CANCEL_ALL, Kind, Reason, ReportKind, Side, commands

A_ORDERS = """
import os, signal, sys
from shmex.client import connect
from shmex.schema import Side
c = connect(sys.argv[1], timeout_s=900)
for i in range(3):
    c.new_order(Side.SELL, price=10_010 + i, qty=5)
c.wait_answers([1, 2, 3], timeout_s=120)
print("rested", flush=True)
os.kill(os.getpid(), signal.SIGKILL)       # gone without a word: no close, no cancel
"""


def _launch(shm_run, tmp_path, *extra) -> subprocess.Popen:
    err = open(tmp_path / "launch.err", "w")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", shm_run, "--producers", "0",
                             "--clients", "1", "--quiet", "--data-dir", str(tmp_path / "data"),
                             "--json", str(tmp_path / "run.json"), *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True)


def _killed_client(shm_run) -> None:
    a = subprocess.run([sys.executable, "-c", A_ORDERS, shm_run], capture_output=True, text=True, timeout=900)
    assert a.returncode == -signal.SIGKILL and "rested" in a.stdout, a.stderr


def _wait_sequenced(shm_run, n: int, slot: int = 0) -> None:
    """Until the matcher has taken the slot's first n records and the WAL holds them (the
    ring's slots are released only then): published alone, a record may still wait while
    another slot's later command is matched first."""
    ring = Ring.attach(Ring.name_for(shm_run, f"in-{slot}"), COMMAND, side=None)
    try:
        deadline = time.monotonic() + 60
        while ring.released_seq < n:
            assert time.monotonic() < deadline, f"the slot's ring released {ring.released_seq} records, not {n}"
            time.sleep(0.01)
    finally:
        ring.close()


def _journal(data):
    from shmex.wal.reader import WalReader

    return np.concatenate(list(WalReader(str(data)).commands(1)))


def test_a_killed_clients_orders_are_cancelled_and_the_next_client_starts_clean(shm_run, tmp_path):
    p = _launch(shm_run, tmp_path)
    try:
        _killed_client(shm_run)
        _wait_sequenced(shm_run, 4)                # the supervisor's CANCEL_ALL after the 3 orders
        with connect(shm_run, timeout_s=60) as b:
            b.new_order(Side.SELL, 10_010, 5, client_id=1)     # the predecessor's ids are free again
            b.new_order(Side.BUY, 10_012, 20, client_id=2)     # at its prices: nothing of it to fill
            r = b.wait_answers([5, 6], timeout_s=60)
            got = [(ReportKind(k).name, int(c), int(q)) for k, c, q in r[["kind", "client_id", "qty"]]]
            assert got[:2] == [("ACK", 1, 5), ("ACK", 2, 20)]
            assert all(int(x["pseq"]) in (0, 5, 6) for x in r)    # none of the predecessor's reports
            fills = r[r["kind"] == ReportKind.FILL]
            assert sorted(int(x) for x in fills["contra_client_id"]) == [1, 2]   # only its own order
    finally:
        assert stop(p) == 0, (tmp_path / "launch.err").read_text()
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["sessions_closed"] >= 1
    log = _journal(tmp_path / "data")
    assert int(log[3]["kind"]) == K_CANCEL_ALL and int(log[3]["producer"]) == 1 and int(log[3]["pseq"]) == 4
    # B's own close is a session ended too: a CANCEL_ALL (pseq 7) when the supervisor
    # saw it go before the stop, none when the stop came first
    assert [(int(t["kind"]), int(t["pseq"])) for t in log[6:]] in ([], [(K_CANCEL_ALL, 7)])
    # the cancels are the journal's: a replay cancels them again and ends with B's book
    m = Matcher(**matcher_config(str(tmp_path / "data")))
    reps = m.process_into(log[:6].copy(), stamp=False)
    gone = reps[(reps["cmd_seq"] == log[3]["seq"]) & (reps["kind"] == ReportKind.CANCELED)]
    assert sorted(int(c) for c in gone["client_id"]) == [1, 2, 3] and (gone["reason"] == Reason.DISCONNECTED).all()
    assert [(int(o["client_id"]), int(o["leaves"])) for o in m.resting()] == [(2, 15)]


def test_keep_orders_on_disconnect_leaves_them_to_the_slots_next_client(shm_run, tmp_path):
    p = _launch(shm_run, tmp_path, "--keep-orders-on-disconnect")
    try:
        _killed_client(shm_run)
        with connect(shm_run, timeout_s=60) as b:
            b.new_order(Side.SELL, 10_010, 5, client_id=1)
            r = b.wait_answers([4], timeout_s=60)
            assert ReportKind(int(r[0]["kind"])) == ReportKind.REJECTED and r[0]["reason"] == Reason.DUPLICATE_ID
    finally:
        assert stop(p) == 0, (tmp_path / "launch.err").read_text()
    assert json.loads((tmp_path / "run.json").read_text())["sessions_closed"] == 0
    assert Kind.CANCEL_ALL not in set(int(k) for k in _journal(tmp_path / "data")["kind"])


def test_cancel_all_takes_only_its_producers_orders_and_the_feed_deletes_each():
    cmds = commands(7)
    rows = [(1, Side.SELL, 101, 11), (2, Side.SELL, 101, 21), (1, Side.BUY, 99, 12), (1, Side.SELL, 103, 13),
            (2, Side.BUY, 98, 22)]
    for i, (prod, side, price, cid) in enumerate(rows):
        for f, v in zip(("kind", "side", "order_type", "tif", "producer", "client_id", "price", "qty"),
                        (Kind.NEW, side, 1, 1, prod, cid, price, 5)):
            cmds[i][f] = v
    cmds["kind"][5:] = Kind.CANCEL_ALL                               # the second: nothing left, an ACK of 0
    cmds["producer"][5:] = 1
    n = np.arange(1, 8)
    cmds["seq"], cmds["pseq"], cmds["engine_ns"] = n, n, n
    m = Matcher(symbols=1, price_lo=1, price_hi=200, capacity=64)
    reps = m.process_into(cmds.copy(), stamp=False)
    first = reps[reps["cmd_seq"] == 6]
    assert [(ReportKind(int(r["kind"])).name, int(r["client_id"]), int(r["qty"])) for r in first] == [
        ("CANCELED", 12, 5), ("CANCELED", 11, 5), ("CANCELED", 13, 5), ("ACK", 0, 3)]   # book order
    assert [(ReportKind(int(r["kind"])).name, int(r["qty"])) for r in reps[reps["cmd_seq"] == 7]] == [("ACK", 0)]
    assert sorted(int(o["client_id"]) for o in m.resting()) == [21, 22]
    e = itch.new_encoder(np.array([int.from_bytes(b"SHMX    ", "big")], np.uint64), [1], [1], capacity=64,
                         ts_offset=0)
    out = np.zeros(4096, np.uint8)
    itch.encode(e, cmds, len(cmds), reps, len(reps), out, np.zeros(64, np.int64))
    msgs = [itch.decode(x) for x in itch.messages(out[:int(e.g[itch.G_POS])].tobytes())]
    assert [x["type"] for x in msgs] == ["A"] * 5 + ["D"] * 3 and e.g[itch.G_UNKNOWN] == 0
    assert [x["ref"] for x in msgs if x["type"] == "D"] == [3, 1, 4]


def _send(c, side, price, qty, cid, tif=1) -> int:
    """One limit order; -> its pseq."""
    o = commands(1)
    o["kind"], o["side"], o["order_type"], o["tif"] = Kind.NEW, side, 1, tif
    o["price"], o["qty"], o["client_id"] = price, qty, cid
    return int(c.submit(o)[0])


def test_a_client_that_stops_reading_is_disconnected_and_everyone_else_goes_on(shm_run, tmp_path):
    from shmex.client import Disconnected

    p = _launch(shm_run, tmp_path, "--clients", "2", "--slow-client", "1")
    try:
        slow = connect(shm_run, timeout_s=900)
        fast = connect(shm_run, timeout_s=60)
        resting = slow.new_order(Side.SELL, 10_050, 5)        # an order of the slow client's
        batch = np.zeros(4096, COMMAND)
        batch["kind"], batch["side"], batch["order_type"], batch["tif"] = Kind.NEW, Side.BUY, 1, 2
        batch["qty"], batch["price"] = 1, 100                  # IOC far from any offer: one EXPIRED each
        sent = 0
        with pytest.raises(Disconnected, match="report ring stayed full"):
            for i in range(64):                                # 512K reports, none read: its ring (64K) fills
                batch["client_id"] = np.arange(i * 4096 + 2, (i + 1) * 4096 + 2)
                slow.submit(batch)
                sent += len(batch)
                r = fast.wait_answers([_send(fast, Side.BUY, 100, 1, i + 1, tif=2)], timeout_s=60)
                assert ReportKind(int(r[0]["kind"])) == ReportKind.ACK      # the others go on meanwhile
        assert sent * 2 >= 1 << 15                             # an ACK and an EXPIRED each
        _wait_sequenced(shm_run, slow._pseq + 1, slow.slot)   # it left the slot: its CANCEL_ALL
        r = fast.wait_answers([_send(fast, Side.BUY, 10_050, 5, 1000)], timeout_s=60)
        assert not (r["kind"] == ReportKind.FILL).any()        # its order went with it
        fast.close()
        with connect(shm_run, timeout_s=60) as again:           # the slot delivers to its next session
            assert again.slot == slow.slot
            r = again.wait_answers([_send(again, Side.BUY, 100, 1, resting, tif=2)], timeout_s=60)
            assert [ReportKind(int(k)).name for k in r["kind"]] == ["ACK", "EXPIRED"]
    finally:
        assert stop(p) == 0, (tmp_path / "launch.err").read_text()
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["sessions_evicted"] == 1 and doc["dropped"] > 0

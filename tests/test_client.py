"""A user's own process as a producer, through the client API, against a real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from shmex.client import connect
from shmex.schema import COMMAND, K_NEW, ReportKind, Side, Reason
from shmex.shm.names import PREFIX, SHM_DIR


def test_client_submits_cancels_and_reads(shm_run, tmp_path):
    err = open(tmp_path / "launch.err", "w")
    p = subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", shm_run, "--producers", "0",
                          "--clients", "2", "--symbols", "2",
                          "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "run.json")],
                         stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        with connect(shm_run, timeout_s=900) as c, connect(shm_run) as d:
            assert {c.producer, d.producer} == {1, 2}
            # far from the generator's prices (mid 10000 + 50 * symbol): no one else trades there
            a = c.new_order(Side.BUY, 9000, 5, symbol=1)
            b = c.new_order(Side.BUY, 8990, 7, symbol=1)
            pq = c.cancel(b, symbol=1)
            bad = c.cancel(424242, symbol=1)
            r = c.wait_answers([1, 2, pq, bad], timeout_s=60)
            kinds = [(ReportKind(x["kind"]).name, int(x["client_id"])) for x in r]
            assert kinds[:4] == [("ACK", a), ("ACK", b), ("CANCELED", b), ("REJECTED", 424242)]
            assert r[3]["reason"] == Reason.UNKNOWN_ORDER
            assert all(r["cmd_seq"][:4] > 0) and list(r["pseq"][:4]) == [1, 2, 3, 4]
            # a numpy batch from another client crosses c's resting order
            batch = np.zeros(2, dtype=COMMAND)
            batch["kind"], batch["side"], batch["order_type"], batch["tif"] = K_NEW, Side.SELL, 1, 1
            batch["symbol"], batch["client_id"], batch["price"], batch["qty"] = 1, [11, 12], [9000, 19000], [2, 1]
            d.submit(batch)
            rd = d.wait_answers([1, 2], timeout_s=60)
            fills = rd[rd["kind"] == ReportKind.FILL]
            assert (fills["qty"] == 2).all() and len(fills) == 1 and (fills["contra_producer"] == c.producer).all()
            deadline = time.monotonic() + 60
            maker = []
            while not maker and time.monotonic() < deadline:
                maker = [x for x in c.reports(timeout_s=0.2) if x["kind"] == ReportKind.FILL]
            assert maker and int(maker[0]["qty"]) == 2 and int(maker[0]["leaves"]) == 3
    finally:
        p.send_signal(signal.SIGINT)      # a clean stop even when an assertion failed
        try:
            p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()
    doc = json.loads((tmp_path / "run.json").read_text())
    # and a CANCEL_ALL for each client that left before the stop (cancel-on-disconnect)
    assert doc["orders"] == 6 and doc["last_seq"] == 6 + doc["sessions_closed"]
    assert not [e for e in os.listdir(SHM_DIR) if e.startswith(f"{PREFIX}{shm_run}-")]


def _launch_clients(shm_run, tmp_path, *extra, clients=1):
    err = open(tmp_path / "launch.err", "w")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", shm_run, "--producers", "0",
                             "--clients", str(clients), "--quiet", "--data-dir", str(tmp_path / "data"), *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True)


def _matcher_pid(shm_run):
    import psutil

    from shmex.engine import cells, registry
    from shmex.engine.ctl import Ctl

    ctl = Ctl.attach(shm_run)
    try:
        from shmex.engine.config import EngineConfig
        cfg = EngineConfig(run_id=shm_run, data_dir="/tmp/unused", producers=0, clients=1)
        pid = int(ctl.a[cells.proc_cell(registry.slot_of(cfg, "matcher"), cells.P_PID)])
    finally:
        ctl.close()
    return psutil.Process(pid)


def test_a_submit_that_times_out_counts_what_it_published(shm_run, tmp_path):
    """The matcher stopped: the input ring fills, submit times out with RingFull; the
    records it did publish are sent, so the next command's pseq follows them."""
    from shmex.errors import RingFull

    p = _launch_clients(shm_run, tmp_path)
    try:
        with connect(shm_run, timeout_s=900) as c:
            matcher = _matcher_pid(shm_run)
            matcher.suspend()
            try:
                batch = np.zeros((1 << 16) + 100, dtype=COMMAND)
                batch["kind"], batch["side"], batch["order_type"], batch["tif"] = K_NEW, Side.BUY, 1, 1
                batch["client_id"] = np.arange(1, len(batch) + 1)
                batch["price"], batch["qty"] = 5000, 1
                try:
                    c.submit(batch, timeout_s=1.0)
                    raise AssertionError("the ring did not fill")
                except RingFull as e:
                    published = e.published
                assert 0 < published < len(batch)
            finally:
                matcher.resume()
            nxt = c.cancel(1)
            assert nxt == published + 1
            r = c.wait_answers([nxt], timeout_s=120)
            assert nxt in set(int(x) for x in r["pseq"])
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=180)
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()


def test_submit_raises_engine_stopped_once_the_supervisor_is_killed(shm_run, tmp_path):
    from shmex.client import EngineStopped, logged_pseq

    p = _launch_clients(shm_run, tmp_path)
    try:
        with connect(shm_run, timeout_s=900) as c:
            c.wait_answers([c.submit(_one_order(1))[0]], timeout_s=60)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            try:
                c.submit(_one_order(2))
                raise AssertionError("submit went on after the supervisor died")
            except EngineStopped as e:
                assert "supervisor" in str(e) and "after pseq 1" in str(e)
            # what a resend to a relaunched engine starts after: the slot's last logged pseq
            assert logged_pseq(str(tmp_path / "data"), c.slot) == 1
            assert logged_pseq(str(tmp_path / "data"), c.slot + 1) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        subprocess.run([sys.executable, "-m", "shmex.cli", "clean"], capture_output=True, timeout=60)


def _one_order(cid, *, side=Side.BUY, price=5000, account=0, stp=0):
    c = np.zeros(1, dtype=COMMAND)
    c["kind"], c["side"], c["order_type"], c["tif"], c["stp"] = K_NEW, side, 1, 1, stp
    c["client_id"], c["price"], c["qty"], c["account"] = cid, price, 1, account
    return c


def test_an_idle_engine_keeps_beating(shm_run, tmp_path):
    """No load at all for several heartbeat bounds: every process still beats (its wait
    loops do), so the watchdog restarts nothing."""
    p = _launch_clients(shm_run, tmp_path, "--heartbeat-timeout", "0.5", "--json", str(tmp_path / "run.json"))
    try:
        with connect(shm_run, timeout_s=900) as c:
            c.wait_answers([c.submit(_one_order(1))[0]], timeout_s=60)
            time.sleep(3.0)
            c.wait_answers([c.submit(_one_order(2))[0]], timeout_s=60)
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=180)
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["restarts"] == []


def test_a_client_acts_only_for_the_account_it_connected_with(shm_run, tmp_path):
    """B rests three sells under its account; A's 1-lot buy carrying B's account with
    CANCEL_OLDEST is REJECTED WRONG_ACCOUNT and B's sells stay; a third client cannot
    connect with B's account while B's slot holds it; the default is the slot's own."""
    import pytest

    from shmex.engine import cells
    from shmex.errors import UsageError
    from shmex.schema import Stp

    p = _launch_clients(shm_run, tmp_path, clients=3)
    try:
        with connect(shm_run, timeout_s=900, account=202) as b, connect(shm_run, account=101) as a:
            assert (b.account, a.account) == (202, 101)
            sells = [b.new_order(Side.SELL, 9000, 1) for _ in range(3)]
            b.wait_answers([1, 2, 3], timeout_s=60)
            pq = a.submit(_one_order(1, side=Side.BUY, price=9000, account=202, stp=Stp.CANCEL_OLDEST))[0]
            r = a.wait_answers([pq], timeout_s=60)
            mine = r[r["pseq"] == pq]
            assert [(ReportKind(int(x["kind"])).name, Reason(int(x["reason"])).name) for x in mine] == [
                ("REJECTED", "WRONG_ACCOUNT")]
            with pytest.raises(UsageError, match="account"):
                connect(shm_run, account=202, timeout_s=10)
            with connect(shm_run, timeout_s=10) as c:
                assert c.account == cells.default_account(c.slot)
            cancels = [b.cancel(cid) for cid in sells]
            rb = b.wait_answers(cancels, timeout_s=60)
            done = rb[np.isin(rb["pseq"], cancels)]
            assert [ReportKind(int(x["kind"])).name for x in done] == ["CANCELED"] * 3
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=180)
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()


def _mappings(run_id: str) -> dict:
    """This process's mappings of the run's segments: segment role -> permissions."""
    out = {}
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and f"/{PREFIX}{run_id}-" in parts[5]:
                out[parts[5].rsplit(f"{PREFIX}{run_id}-", 1)[1]] = parts[1]
    return out


def test_a_client_maps_the_control_segment_read_only_and_writes_only_its_own(shm_run, tmp_path):
    """PHASE and DURABLE_SEQ are beyond a client's reach: its mapping of the control
    segment is read-only; what it writes (counters, latency row, binding request) is in its
    slot's own segment, which the summary still counts; a binding goes through the
    supervisor."""
    import pytest

    from shmex.engine import cells

    p = _launch_clients(shm_run, tmp_path, "--json", str(tmp_path / "run.json"), clients=2)
    try:
        with connect(shm_run, timeout_s=900, account=303) as c:
            maps = _mappings(shm_run)
            assert maps["ctl"].startswith("r--"), maps          # no write permission on the mapping
            assert maps[f"cli-{c.slot}"].startswith("rw"), maps
            assert "hist" not in maps and f"cli-{1 - c.slot}" not in maps, maps
            with pytest.raises(ValueError, match="read-only"):
                c._ctl[cells.PHASE] = cells.PH_STOPPING
            cids = [c.new_order(Side.BUY, 9000 - i, 1) for i in range(5)]
            c.wait_answers(list(range(1, 6)), timeout_s=60)
            assert c.account == 303 and len(cids) == 5
            b = cells.prod_base(int(c._ctl[cells.CFG_PROC_SLOTS]), c.slot)
            assert int(c._ctl[b + cells.C_ACCOUNT]) == 303      # granted by the supervisor
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=180)
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["orders"] >= 5 and doc["acks"] >= 5      # the client's own counts reached the summary


def test_the_supervisor_rebinds_a_slot_for_its_next_client_and_refuses_what_is_not_theirs(shm_run, tmp_path):
    """A slot's next client binds another account (its predecessor's orders cancelled on
    disconnect first): the old account is then WRONG_ACCOUNT on it. Another slot's default
    account and one beyond 32 bits are refused at connect, with the reason."""
    import pytest

    from shmex.engine import cells
    from shmex.errors import UsageError

    p = _launch_clients(shm_run, tmp_path, clients=1)
    try:
        with connect(shm_run, timeout_s=900, account=11) as a:
            slot = a.slot
            a.new_order(Side.BUY, 9000, 1)
            a.wait_answers([1], timeout_s=60)
        with connect(shm_run, timeout_s=60, account=12) as b:
            assert (b.slot, b.account) == (slot, 12)
            pq = b.submit(_one_order(1, account=11))[0]
            ok = b.submit(_one_order(2, account=12))[0]
            r = b.wait_answers([pq, ok], timeout_s=60)
            answers = {int(x["pseq"]): (ReportKind(int(x["kind"])).name, Reason(int(x["reason"])).name) for x in r}
            assert answers[pq] == ("REJECTED", "WRONG_ACCOUNT") and answers[ok] == ("ACK", "NONE")
        with pytest.raises(UsageError, match="another slot's default"):
            connect(shm_run, timeout_s=60, account=cells.default_account(slot + 1))
        with pytest.raises(UsageError, match="not an integer in"):
            connect(shm_run, timeout_s=60, account=1 << 32)
        with connect(shm_run, timeout_s=60) as c:                 # and the slot's own default still binds
            assert c.account == cells.default_account(slot)
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=180)
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()


def test_logged_pseq_is_the_slots_highest_pseq_in_one_run_of_the_log(tmp_path):
    """Two runs of a log: slot 2 (producer 3) logged pseqs 1..6 in the first and 1..3 in
    the second (a relaunched engine numbers anew), slot 3 only in the first."""
    import pytest

    from shmex.client import logged_pseq
    from shmex.errors import UsageError
    from wal_helpers import commands, write_log

    d = tmp_path / "log"
    first = commands(10, seed=1)
    first["producer"] = [3] * 6 + [4] * 4
    first["pseq"] = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4]
    write_log(d, first)
    second = commands(3, seed=2, first_seq=11)
    second["producer"], second["pseq"] = 3, [1, 2, 3]
    write_log(d, second)
    assert (logged_pseq(str(d), 2), logged_pseq(str(d), 3)) == (3, 0)
    assert (logged_pseq(str(d), 2, run=-2), logged_pseq(str(d), 3, run=-2)) == (6, 4)
    with pytest.raises(UsageError, match="lists 2 runs"):
        logged_pseq(str(d), 2, run=-3)

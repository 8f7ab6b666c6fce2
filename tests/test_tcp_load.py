"""`shmex launch --via tcp`: the built-in load as members logged in at the gateway, so
the run's tick-to-trade is what a member over TCP sees."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from shmex.net import EXAMPLE_USERS
from shmex.schema import Kind
from shmex.wal.reader import WalReader


def _launch(tmp_path, *flags, timeout_s=600):
    data = tmp_path / "data"
    p = subprocess.run([sys.executable, "-m", "shmex.cli", "launch", "--via", "tcp", "--quiet",
                        "--data-dir", str(data), "--json", str(tmp_path / "run.json"), *flags],
                       capture_output=True, text=True, timeout=timeout_s)
    return p, data


@pytest.mark.parametrize("flags, want", [
    (("--producers", "2", "--orders", "20000", "--durability", "none"), 20_000),
    (("--producers", "3", "--rate", "4000", "--duration", "2"), None),    # open loop, timed by the load
])
def test_every_member_order_goes_through_the_gateway_and_the_latency_is_the_members(tmp_path, flags, want):
    p, data = _launch(tmp_path, *flags)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "run.json").read_text())
    sessions = int(flags[1])
    load = doc["roles"]["tcpload"]
    assert doc["via"] == "tcp" and doc["tcp_sessions"] == sessions == load["sessions"]
    assert all(doc["checks"].values()) and doc["checks"]["tcp_orders_answered"]
    sent = load["sent"]
    if want is not None:
        assert sent == want
    else:                                  # the orders due in 2 s at 4,000/s, every one answered
        assert abs(sent - 8_000) <= sessions
    assert load["answered"] == sent and load["rejected"] == 0
    assert doc["latency_samples"] == sent                 # one member-side sample per order
    # and the engine's stages of each: the gateway's queue, the matcher, the disk, the report
    assert all(doc["stages"][k]["samples"] >= sent for k in ("queue", "to_matcher", "to_durable", "to_report"))
    assert "members over TCP" in p.stdout and f"{sent:,} Enter Orders sent" in p.stdout
    # the journal holds them as the gateway's slot's commands, one account per member; a
    # member that logs out with an order resting has it cancelled (cancel-on-disconnect)
    log = np.concatenate(list(WalReader(str(data)).commands(1)))
    new = log[log["kind"] == Kind.NEW]
    assert len(new) == sent and len(log) - sent <= sessions and (log[len(new):]["kind"] == Kind.CANCEL).all()
    assert doc["orders"] == doc["answered"] == len(log), (doc["orders"], doc["answered"], len(log))
    assert set(int(x) for x in log["producer"]) == {doc["producers"] + 1 + 1}   # after the one client slot
    assert len(set(int(a) for a in log["account"])) == sessions
    # the load's users: hashed in the gateway's file, the password itself only in its 0600 file
    users = (data / "tcp-load" / "users.csv").read_text()
    password = (data / "tcp-load" / "password").read_text().strip()
    assert users.count("pbkdf2_sha256$") == sessions and password not in users
    assert (data / "tcp-load" / "password").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("flags, said", [
    (("--users-file", EXAMPLE_USERS), "--via tcp logs in users of its own"),
    (("--itch", "day.itch"), "--via tcp cannot be used with --itch"),
    (("--producers", "0"), "the load needs >= 1 session"),
])
def test_via_tcp_refuses_what_it_cannot_drive(tmp_path, flags, said):
    p, data = _launch(tmp_path, "--fresh", *flags, timeout_s=120)
    assert p.returncode == 2 and said in p.stderr, p.stderr
    assert not data.exists()                  # refused before --fresh or anything else touched it

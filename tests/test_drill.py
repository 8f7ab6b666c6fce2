"""Crash-recovery drills through `shmex drill`: real processes SIGKILLed under load, then
the five checks (nothing acknowledged lost, replay == live, every command answered,
verify, no leaked segment). Never asserts timings."""

from __future__ import annotations

import json
import subprocess
import sys

TIMEOUT_S = 900


def _drill(tmp_path, *args):
    out = tmp_path / "drill.json"
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "drill", "--quiet", "--data-dir",
                        str(tmp_path / "data"), "--json", str(out), *args],
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    doc = json.loads(out.read_text())
    return r, doc


def _passed(r, doc):
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert doc["passed"], doc["problems"]
    assert doc["acked_lost"] == 0 and doc["duplicates_applied"] == 0
    assert doc["state_hash_live"] == doc["state_hash_replay"] != ""
    assert doc["verify_exit"] == 0 and doc["segments_leaked"] == []
    assert all(p["answered"] == p["sent"] > 0 for p in doc["producers"])
    assert "PASSED" in r.stdout


def test_drill_kills_each_target_once(tmp_path):
    r, doc = _drill(tmp_path, "--kills", "4", "--targets", "matcher,wal,publisher,producer",
                    "--orders", "20000", "--rate", "20000", "--seed", "3", "--gap", "0.1", "0.4",
                    "--no-wait-standby")
    _passed(r, doc)
    assert sorted(k["target"] for k in doc["kills"]) == ["matcher", "producer", "publisher", "wal"]
    for key in ("at_seq", "recovery_ms"):
        assert all(k[key] is not None for k in doc["kills"])
    assert len(doc["restarts"]) == 4


def test_drill_kill_during_snapshot_rotation_and_torn_tail(tmp_path):
    """Snapshots every 2,000 commands (the matcher is killed while its snapshot writer runs),
    64 KiB WAL segments (a rotation every ~800 records), a torn record cut by the successor.
    No standby: every successor is a plain spawn (the fallback path)."""
    r, doc = _drill(tmp_path, "--kills", "3", "--targets", "snapshot,torn,wal", "--orders", "20000",
                    "--rate", "20000", "--snapshot-every", "2000", "--segment-bytes", "65536",
                    "--gap", "0.1", "0.3", "--seed", "5", "--no-standby")
    _passed(r, doc)
    assert {k["target"] for k in doc["kills"]} == {"snapshot", "torn", "wal"}
    assert [k["path"] for k in doc["kills"]] == ["spawn"] * 3 and doc["standby"]["started"] == 0


def test_standby_takes_the_killed_matcher_role_and_a_killed_standby_is_replaced(tmp_path):
    """The matcher is killed (while its snapshot writer runs) with a ready standby: the
    successor is the standby's process; the standby itself killed: a new one gets ready."""
    r, doc = _drill(tmp_path, "--kills", "2", "--targets", "snapshot,standby", "--orders", "20000",
                    "--rate", "20000", "--snapshot-every", "20000", "--gap", "0.1", "0.3", "--seed", "4")
    _passed(r, doc)
    by = {k["target"]: k for k in doc["kills"]}
    m, s = by["snapshot"], by["standby"]
    assert m["process"] == "matcher" and m["path"] == "standby" and m["new_pid"] == m["standby_pid"] != 0
    assert [e["path"] for e in doc["restarts"]] == ["standby"], (
        [(e["name"], e["reason"], e["path"], e["at_seq"]) for e in doc["restarts"]], r.stderr[-3000:])
    assert s["path"] == "replaced" and s["new_pid"] not in (0, s["pid"], m["new_pid"])
    assert doc["standby"]["taken"] == 1 and doc["standby"]["died"] == 1
    assert all(k["orders_per_s_before"] > 0 for k in doc["kills"])


def test_producer_killed_mid_batch_others_unaffected(tmp_path):
    """A load producer SIGKILLed while it publishes (full speed: it is always mid-batch):
    the engine goes on, the supervisor restarts only that producer, which continues its
    pseq; every producer's commands are answered and logged once."""
    r, doc = _drill(tmp_path, "--kills", "2", "--targets", "producer", "--producers", "3",
                    "--orders", "30000", "--rate", "200000", "--gap", "0.05", "0.2", "--seed", "2",
                    "--no-wait-standby")
    _passed(r, doc)
    killed = {k["process"] for k in doc["kills"]}
    assert {e["name"] for e in doc["restarts"]} == killed
    assert all(e["role"] == "producer" for e in doc["restarts"])


def test_drill_durability_none_kills_the_wal_writer_and_matcher(tmp_path):
    """Mode none: the WAL writer's duty cycle stores into the mapped segment (wal_duty);
    64 KiB segments make it rotate every ~800 records, so its room runs out and the
    Python path takes over, again and again. A process crash loses nothing in mode none:
    the killed writer's successor finds its records in the page cache."""
    r, doc = _drill(tmp_path, "--kills", "3", "--targets", "wal,matcher,torn", "--durability", "none",
                    "--orders", "20000", "--rate", "20000", "--segment-bytes", "65536",
                    "--gap", "0.1", "0.3", "--seed", "7", "--no-wait-standby")
    _passed(r, doc)
    assert {k["target"] for k in doc["kills"]} == {"wal", "matcher", "torn"}


def test_a_stopped_matcher_is_found_by_the_watchdog_and_restarted(tmp_path):
    """SIGSTOP, not SIGKILL: the process lives but its heartbeat stops; the supervisor
    kills it after --heartbeat-timeout and a successor resumes, nothing lost."""
    r, doc = _drill(tmp_path, "--kills", "1", "--targets", "hang", "--orders", "10000", "--rate", "20000",
                    "--heartbeat-timeout", "1", "--gap", "0.2", "0.3", "--seed", "6")
    _passed(r, doc)
    assert [k["target"] for k in doc["kills"]] == ["hang"]
    assert doc["restarts"][0]["name"] == "matcher"
    assert doc["restarts"][0]["reason"].startswith("hung: no heartbeat for")


def test_an_injected_sync_error_halts_the_engine_and_loses_nothing_acknowledged(tmp_path):
    """A WAL writer SIGKILLed (its successor resumes), then its successor's next fdatasync
    fails with EIO: the supervisor restarts nothing, the engine stops with one line naming
    the segment file and the errno, every acknowledged command is in the WAL, verify is
    clean and replay rebuilds the log up to the durable seq of the halt."""
    r, doc = _drill(tmp_path, "--kills", "2", "--targets", "wal,syncerror", "--orders", "20000",
                    "--rate", "20000", "--gap", "0.1", "0.3", "--seed", "8", "--no-wait-standby")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert doc["passed"] and doc["halted"], doc["problems"]
    assert [k["target"] for k in doc["kills"]] == ["wal", "syncerror"]
    reason = doc["engine_reason"]
    assert doc["engine_status"] == "failed" and reason.startswith("walwriter (pid ")
    assert "halted: fdatasync of " + str(tmp_path / "data" / "wal-") in reason and "EIO" in reason
    assert [e["name"] for e in doc["restarts"]] == ["walwriter"]      # the SIGKILL's successor only
    assert doc["acked_lost"] == 0 and doc["duplicates_applied"] == 0
    assert doc["verify_exit"] == 0 and doc["segments_leaked"] == []
    assert "PASSED" in r.stdout and "walwriter: durability fault, stopping: fdatasync" in r.stderr


def test_a_tcp_member_outlives_gateway_and_matcher_kills(tmp_path):
    """The gateway target brings a TCP member: it reconnects after each gateway kill,
    resumes its stream, resends what had no answer; every order it saw Accepted is in the
    WAL once, none answered twice, none unanswered."""
    r, doc = _drill(tmp_path, "--kills", "3", "--targets", "gateway,matcher", "--orders", "20000",
                    "--rate", "10000", "--seed", "5", "--gap", "0.3", "0.8", "--no-wait-standby")
    _passed(r, doc)
    m = doc["tcp_member"]
    assert sorted(k["target"] for k in doc["kills"])[-1] == "matcher"
    assert m["sent"] > 0 and m["acked"] == m["logged"] == m["sent"]
    assert m["acked_lost"] == m["answered_twice"] == m["unanswered"] == 0
    assert m["reconnects"] == sum(k["target"] == "gateway" for k in doc["kills"])


def test_a_client_killed_mid_submit_leaves_its_slot_to_the_next_session(tmp_path):
    """The client target: a client-API member SIGKILLed while it submits (commands sent and
    unanswered); each killed session is closed by one CANCEL_ALL after its last command,
    the next client of the slot is answered, and every command any session saw answered
    is in the WAL once. The matcher is killed too, with the member's orders in flight."""
    r, doc = _drill(tmp_path, "--kills", "3", "--targets", "client,matcher", "--orders", "20000",
                    "--rate", "10000", "--seed", "3", "--gap", "0.3", "0.8", "--no-wait-standby")
    _passed(r, doc)
    c = doc["client_member"]
    kills = sum(k["target"] == "client" for k in doc["kills"])
    assert kills >= 1 and c["killed"] == c["closed"] == kills
    assert c["sessions"] == kills + 1
    assert c["acked"] > 0 and c["acked_lost"] == c["logged_twice"] == c["rejected"] == 0
    assert c["in_flight_at_kill"] > 0

"""The engine end to end: real processes through `shmex launch`. Never asserts timings.

Each launch warms numba kernels from the on-disk cache (a cold cache compiles them,
which takes minutes: timeouts here are generous on purpose).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from shmex.shm.names import PREFIX, SHM_DIR
from shmex.wal import manifest

LAUNCH_TIMEOUT_S = 900


def _shmex(*args, **kw):
    return subprocess.run([sys.executable, "-m", "shmex.cli", *args], capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, **kw)


def _start(run_id, data_dir, *args, tmp_path):
    err = open(tmp_path / "launch.err", "w")
    p = subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", run_id,
                          "--data-dir", str(data_dir), "--json", str(tmp_path / "run.json"), *args],
                         stdout=subprocess.PIPE, stderr=err, text=True)
    return p


def _wait_running(p, tmp_path, timeout_s=LAUNCH_TIMEOUT_S):
    """Until the supervisor's progress says the load runs (its first progress line)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert p.poll() is None, (tmp_path / "launch.err").read_text()
        if "] running:" in (tmp_path / "launch.err").read_text():
            return
        time.sleep(0.1)
    raise AssertionError("the engine never reported running")


def _segments(run_id):
    return sorted(e for e in os.listdir(SHM_DIR) if e.startswith(f"{PREFIX}{run_id}-"))


def _replay_hash(data_dir):
    r = _shmex("replay", str(data_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    return next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("state_hash"))


def _children(p):
    return {" ".join(c.cmdline()[-2:]): c for c in psutil.Process(p.pid).children()}


def test_launch_two_producers_end_to_end(shm_run, tmp_path):
    data = tmp_path / "data"
    r = _shmex("launch", "--producers", "2", "--orders", "20000", "--symbols", "3", "--quiet",
               "--name", shm_run, "--data-dir", str(data), "--json", str(tmp_path / "run.json"),
               "--hgrm", str(tmp_path / "run.hgrm"), "--snapshot-every", "5000")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    for key in ("orders", "reports", "fills", "seconds", "orders_per_s", "latency_ns", "last_seq",
                "state_hash", "data_dir", "processes"):
        assert key in doc, key
    assert set(doc["latency_ns"]) == {"p50", "p90", "p99", "p999", "p9999", "max"}
    assert doc["orders"] == 20000 and doc["answered"] == 20000        # every command answered
    assert doc["latency_samples"] == 20000
    assert doc["checks"]["fills_balance"] and doc["fills"] > 0          # both sides of each fill
    assert doc["last_seq"] == doc["durable_seq"] == 20000
    assert all(doc["checks"].values()), doc["checks"]
    names = {p["name"] for p in doc["processes"]}
    assert {"matcher", "walwriter", "producer-0", "producer-1"} <= names
    assert all(p["pid"] > 0 and p["rss_bytes"] > 0 for p in doc["processes"])
    assert doc["state_hash"] == _replay_hash(data)                     # replay == live
    assert _shmex("verify", str(data)).returncode == 0
    assert manifest.read(str(data))["runs"][-1]["sealed"]
    assert "Value     Percentile" in (tmp_path / "run.hgrm").read_text()
    assert doc["state_hash"] in r.stdout and f"shmex verify {data}" in r.stdout
    assert _segments(shm_run) == []


def test_full_speed_duration_stops_and_mode_none_replays(shm_run, tmp_path):
    """--duration at full speed: the producers stop although their input rings stay full
    (generated orders the ring never took are not submitted); mode none's numba WAL path
    logged every command: the summary's state_hash is the replay's, verify is clean."""
    data = tmp_path / "data"
    r = _shmex("launch", "--producers", "2", "--duration", "2", "--durability", "none", "--quiet",
               "--name", shm_run, "--data-dir", str(data), "--json", str(tmp_path / "run.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["orders"] > 0 and doc["answered"] == doc["orders"]
    assert all(doc["checks"].values()), doc["checks"]
    assert doc["last_seq"] == doc["durable_seq"] == doc["orders"]
    assert _replay_hash(data) == doc["state_hash"]
    assert _shmex("verify", str(data)).returncode == 0


def test_bad_wait_strategy_is_refused_before_anything_starts(shm_run, tmp_path):
    r = _shmex("launch", "--name", shm_run, "--wait", "walwriter=bogus", "--orders", "100",
               "--data-dir", str(tmp_path / "data"), "--quiet")
    assert r.returncode == 2
    assert "--wait 'walwriter=bogus'" in r.stderr and "bogus" in r.stderr
    assert _segments(shm_run) == [] and not (tmp_path / "data").exists()


def test_relaunch_continues_the_log(shm_run, tmp_path):
    """A second launch on the same directory recovers the book and goes on from its seq."""
    data = tmp_path / "data"
    args = ["launch", "--producers", "1", "--orders", "3000", "--quiet", "--data-dir", str(data)]
    assert _shmex(*args, "--name", shm_run).returncode == 0
    r = _shmex(*args, "--name", shm_run + "b", "--json", str(tmp_path / "b.json"),
               "--publisher", "process")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["last_seq"] == 6000 and doc["publisher"] == "process"
    assert doc["state_hash"] == _replay_hash(data)
    assert _shmex("verify", str(data)).returncode == 0
    assert _segments(shm_run + "b") == []


def test_sigint_mid_run_stops_cleanly(shm_run, tmp_path):
    data = tmp_path / "data"
    p = _start(shm_run, data, "--producers", "2", "--duration", "120", "--rate", "20000", tmp_path=tmp_path)
    try:
        _wait_running(p, tmp_path)
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=120)
    assert p.returncode == 0, (tmp_path / "launch.err").read_text()   # documented: a clean asked-for stop is 0
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "interrupted"
    assert doc["answered"] == doc["orders"] > 0        # what was taken was answered
    assert doc["last_seq"] == doc["durable_seq"]
    assert manifest.read(str(data))["runs"][-1]["sealed"]
    assert _shmex("verify", str(data)).returncode == 0
    assert doc["state_hash"] == _replay_hash(data)
    assert _segments(shm_run) == []


@pytest.mark.parametrize("victim", ["producer 0", "matcher 0"])
def test_child_sigkill_stops_the_engine_and_names_it(shm_run, tmp_path, victim):
    """With restarts off (--restarts 0) a death stops the engine (restarts: test_drill.py)."""
    data = tmp_path / "data"
    p = _start(shm_run, data, "--producers", "2", "--duration", "120", "--rate", "20000", "--restarts", "0",
               tmp_path=tmp_path)
    try:
        _wait_running(p, tmp_path)
        child = _children(p)[victim]
        pid = child.pid
        child.kill()
        p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = (tmp_path / "launch.err").read_text()
    assert p.returncode == 1, err
    name = victim.replace(" 0", "-0") if victim.startswith("producer") else "matcher"
    assert f"{name} (pid {pid}) died: killed by SIGKILL" in err
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "failed"
    assert all(pr["exit"] is not None for pr in doc["processes"])       # nobody left running
    assert _segments(shm_run) == []
    assert _shmex("verify", str(data)).returncode == 0                  # what was logged is intact


def test_data_files_are_private_and_a_duplicate_name_is_one_line(shm_run, tmp_path):
    import stat

    data = tmp_path / "data"
    p = _start(shm_run, data, "--producers", "1", "--duration", "60", "--rate", "5000", tmp_path=tmp_path)
    try:
        _wait_running(p, tmp_path)
        dup = _shmex("launch", "--name", shm_run, "--orders", "10", "--data-dir", str(tmp_path / "other"),
                     "--quiet")
        assert dup.returncode == 2
        assert "Traceback" not in dup.stderr
        assert f"--name {shm_run}: a run of that name is live" in dup.stderr
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=120)
    assert p.returncode == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [f for f in data.rglob("*") if f.is_file()]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), \
        [(str(f), oct(stat.S_IMODE(f.stat().st_mode))) for f in files]
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in data.rglob("*") if d.is_dir())


def test_fresh_refuses_the_directory_of_a_running_engine(shm_run, tmp_path):
    data = tmp_path / "data"
    p = _start(shm_run, data, "--producers", "1", "--duration", "60", "--rate", "5000", tmp_path=tmp_path)
    try:
        _wait_running(p, tmp_path)
        before = sorted(f.name for f in data.iterdir())
        r = _shmex("launch", "--fresh", "--orders", "10", "--data-dir", str(data), "--quiet")
        assert r.returncode == 2 and "--fresh" in r.stderr and "holds" in r.stderr, r.stderr
        assert sorted(f.name for f in data.iterdir()) == before
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=120)
    assert p.returncode == 0
    assert _shmex("verify", str(data)).returncode == 0


def test_drill_refuses_a_directory_that_is_not_its_own(tmp_path):
    data = tmp_path / "precious"
    data.mkdir()
    (data / "keep.txt").write_text("not the drill's")
    r = _shmex("drill", "--kills", "1", "--data-dir", str(data), "--quiet")
    assert r.returncode == 2 and "not a drill's directory" in r.stderr
    assert (data / "keep.txt").read_text() == "not the drill's"


DEMO_SMALL = ("import sys; from shmex import cli; from shmex.commands import launch; "
              "import shmex.engine.config as c; c.DEMO_ORDERS = 20000; "
              "launch.DEMO_LATENCY_RATE = 5000.0; launch.DEMO_LATENCY_S = 2.0; "
              "sys.exit(cli.main(sys.argv[1:]))")


def test_a_bare_launch_runs_a_throughput_phase_then_a_latency_phase(shm_run, tmp_path):
    """No length, rate or preset: capacity at full speed, then a fixed-rate phase on the
    same log, each summarized under its label (the demo, sized down here)."""
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-c", DEMO_SMALL, "launch", "--quiet", "--name", shm_run,
                        "--data-dir", str(data), "--json", str(tmp_path / "demo.json")],
                       capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    first, second = json.loads((tmp_path / "demo.json").read_text())["phases"]
    assert first["phase"]["name"] == "throughput" and first["rate"] is None and first["orders"] == 20000
    assert second["phase"]["name"] == "latency" and second["rate"] == 5000.0
    assert second["orders"] > 0 and second["last_seq"] == 20000 + second["orders"]   # the log continued
    assert second["placement"] == first["placement"]        # the first run gave its cores back
    assert all(first["checks"].values()) and all(second["checks"].values())
    assert "== phase 1 of 2: throughput" in r.stdout and "== phase 2 of 2: latency" in r.stdout
    assert "both phases" in r.stdout
    assert second["state_hash"] == _replay_hash(data)
    assert _segments(shm_run) == []


def test_a_launch_given_a_length_runs_one_phase(tmp_path):
    from shmex.cli import _parser
    from shmex.commands import launch
    from shmex.engine.config import EngineConfig

    def is_demo(*argv):
        args = _parser().parse_args(["launch", "--data-dir", str(tmp_path), *argv])
        return launch.is_demo(args, EngineConfig.from_args(args))

    assert is_demo() and is_demo("--durability", "none")
    assert not any(is_demo(*a) for a in (("--orders", "10"), ("--duration", "1"), ("--rate", "5"),
                                          ("--preset", "latency"), ("--producers", "0")))

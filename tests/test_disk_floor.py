"""The disk's floor for group commit: arrivals replayed against a sync trace, recorded per
filesystem, shown by `shmex launch` beside to_durable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from shmex.wal import floor


def test_an_arrival_is_durable_at_the_end_of_the_first_sync_starting_after_it():
    starts = np.array([0, 100, 200, 10_000], dtype=np.int64)       # the third sync stalls
    ends = np.array([90, 190, 9_990, 10_090], dtype=np.int64)
    lat = floor.replay_arrivals(starts, ends, rate=1e9 / 50)        # one arrival every 50 ns
    arrivals = np.arange(0, 10_000, 50)
    nxt = np.searchsorted(starts, arrivals)
    assert list(lat) == list(ends[nxt] - arrivals)
    assert lat[0] == 90 and lat[1] == 190 - 50 and lat[4] == 9_990 - 200
    assert lat[5] == 10_090 - 250            # it came during the stall: it waits for the next sync


def test_measure_records_per_filesystem_and_launch_shows_it(tmp_path, monkeypatch, shm_run):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    assert floor.recorded(str(data)) is None
    f = floor.measure(str(tmp_path), seconds=0.5, rate=10_000.0)
    assert f["syncs"] >= 2
    for k in ("sync_ns", "floor_ns"):                               # percentiles of real samples, in order
        assert 0 < f[k]["p50"] <= f[k]["p90"] <= f[k]["p99"] <= f[k]["p999"] <= f[k]["max"], f[k]
    assert list(tmp_path.iterdir()) == [data]                       # the trace's file is gone
    floor.record(f)
    assert floor.recorded(str(data)) == f                            # the same filesystem

    r = subprocess.run([sys.executable, "-m", "shmex.cli", "launch", "--name", shm_run, "--quiet",
                        "--producers", "1", "--rate", "2000", "--duration", "1", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("disk floor"))
    assert f"measured in {tmp_path}" in line
    assert "to_durable / floor: p50" in r.stdout


def test_bench_wal_floor_only_prints_and_records_the_floor(tmp_path):
    import json
    import os

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "bench", "wal", "--floor-only", "--floor-seconds",
                        "0.5", "--dir", str(tmp_path / "d"), "--json", str(tmp_path / "w.json")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["disk_floor"]["syncs"] >= 2 and "disk floor for group commit" in r.stdout
    cache = json.loads((tmp_path / "cache" / "shmex" / "disk-floor.json").read_text())
    assert cache[str(os.stat(tmp_path / "d").st_dev)]["directory"] == str(tmp_path / "d")


def test_bench_wal_refuses_a_floor_it_cannot_measure(tmp_path):
    for args, says in ((["--floor-rate", "0"], "--floor-rate 0: must be > 0"),
                       (["--floor-seconds", "0"], "nothing to measure")):
        r = subprocess.run([sys.executable, "-m", "shmex.cli", "bench", "wal", "--floor-only", "--dir",
                            str(tmp_path), *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and says in r.stderr, r.stderr

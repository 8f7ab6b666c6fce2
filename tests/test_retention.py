"""WAL retention: keep the newest N snapshots and the log they need, remove the segments
wholly older than the oldest kept snapshot; verify and replay still work on what is left,
and a replay to a seq that was removed says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shmex import cli
from shmex.engine.config import EngineConfig
from shmex.errors import CannotOpen, UsageError
from shmex.matcher import Matcher
from shmex.recovery.recover import recover, snapshot_dir
from shmex.recovery.retention import drop_snapshots_after, retire_bound
from shmex.snapshot import store
from shmex.wal import manifest
from shmex.wal.segment import read_header
from shmex.wal.writer import WalWriter
from wal_helpers import CFG, commands, copy_dir, seg_bytes, segments

N = 2000
EVERY = 400


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """N commands through a matcher and the WAL (40-slot segments), a snapshot every EVERY
    (all kept), the state hash at each seq; the writer left open."""
    d = tmp_path_factory.mktemp("ret") / "run"
    cmds = commands(N, seed=9)
    cmds["seq"] = 0
    m = Matcher(**CFG)
    w = WalWriter(d, config=m.config, segment_bytes=seg_bytes(40))
    hashes = {}
    for i in range(0, N, 100):
        b = cmds[i:i + 100]
        m.process(b)
        w.append(b)
        w.commit()
        hashes[m.last_seq] = m.state_hash()
        if m.last_seq % EVERY == 0:
            store.write_snapshot(snapshot_dir(d), m, keep=100)
    w.close()
    return d, hashes


def _first_seq(d) -> int:
    return int(read_header(segments(d)[0])["first_seq"])


def test_retire_removes_the_segments_older_than_the_oldest_kept_snapshot(logged, tmp_path, capsys):
    src, hashes = logged
    d = tmp_path / "run"
    copy_dir(src, d)
    snaps = [s for s, _ in store.list_snapshots(snapshot_dir(d))]
    assert snaps == [400, 800, 1200, 1600, 2000]
    upto = retire_bound(d, keep=3, durable_seq=N, window=0)
    assert upto == 1200
    w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(40))
    before = {p: os.path.getsize(p) for p in segments(d)}
    n, nbytes = w.retire(upto)
    w.close()
    kept = segments(d)
    assert n == len(before) - len(kept) > 0 and nbytes == sum(sorted(before.items())[i][1] for i in range(n))
    first = _first_seq(d)
    assert first <= upto + 1                   # the segment holding seq 1201 is kept ...
    assert int(read_header(kept[1])["first_seq"]) > upto + 1   # ... and none before it
    doc = manifest.read(d)
    assert doc["retention"]["first_seq"] == first and doc["retention"]["removed_segments"] == n
    assert cli.main(["verify", str(d)]) == 0
    assert "CORRUPT" not in capsys.readouterr().out
    r = recover(d)
    assert r.last_seq == N and r.matcher.state_hash() == hashes[N]
    r = recover(d, until=1300)
    assert r.last_seq == 1300 and r.matcher.state_hash() == hashes[1300] and r.snapshot.seq == 1200
    with pytest.raises(CannotOpen, match=f"removed by retention.*starts at seq {first}"):
        recover(d, until=700)
    assert cli.main(["replay", str(d), "--until", "700"]) == 2
    assert "removed by retention" in capsys.readouterr().err


def test_a_missing_first_segment_is_still_corruption_where_retention_did_not_remove_it(logged, tmp_path, capsys):
    src, _ = logged
    d = tmp_path / "run"
    copy_dir(src, d)
    os.unlink(segments(d)[0])
    assert cli.main(["verify", str(d)]) == 1
    assert "missing" in capsys.readouterr().out


def test_retire_bound_keeps_n_snapshots_and_the_restart_window(logged, tmp_path):
    src, _ = logged
    assert retire_bound(src, keep=0, durable_seq=N, window=0) is None        # retention off
    assert retire_bound(src, keep=6, durable_seq=N, window=0) is None        # fewer than 6 snapshots yet
    assert retire_bound(src, keep=2, durable_seq=N, window=0) == 1600
    assert retire_bound(src, keep=2, durable_seq=N, window=700) == N - 700   # a restart scans that far back


def test_retention_keeps_what_the_replicator_has_not_shipped(logged):
    """A replicator behind (a lost quorum, a restart) reads the seqs after the stream's
    last from the log: retention removes no segment it still needs."""
    src, _ = logged
    assert retire_bound(src, keep=2, durable_seq=N, window=0, replicated_seq=900) == 900
    assert retire_bound(src, keep=2, durable_seq=N, window=0, replicated_seq=N) == 1600
    assert retire_bound(src, keep=2, durable_seq=N, window=0, replicated_seq=None) == 1600
    alone = EngineConfig(run_id="r" * 12, data_dir="/tmp/unused")
    shipped = EngineConfig(run_id="r" * 12, data_dir="/tmp/unused", nats=("nats://127.0.0.1:1",))
    assert alone.replicated_cell() is None
    assert shipped.replicated_cell() is not None
    assert EngineConfig(run_id="r" * 12, data_dir="/tmp/unused", nats=("nats://127.0.0.1:1",),
                        durability="replicated").release_cell() == shipped.replicated_cell()


def test_snapshots_beyond_the_log_end_are_dropped(logged, tmp_path):
    src, _ = logged
    d = tmp_path / "run"
    copy_dir(src, d)
    gone = drop_snapshots_after(d, 1000)
    assert [os.path.basename(p) for p in gone] == [store.name_of(1200), store.name_of(1600), store.name_of(2000)]
    assert [s for s, _ in store.list_snapshots(snapshot_dir(d))] == [400, 800]


def test_keep_snapshots_is_a_config_field_with_a_flag():
    from shmex.shm.names import new_run_id

    assert EngineConfig(run_id=new_run_id(), data_dir="/tmp/x").keep_snapshots == 3
    with pytest.raises(UsageError, match="--keep-snapshots 1"):
        EngineConfig(run_id=new_run_id(), data_dir="/tmp/x", keep_snapshots=1)


def _launch(run_id, data, json_path, orders):
    return subprocess.run([sys.executable, "-m", "shmex.cli", "launch", "--name", run_id, "--data-dir", str(data),
                           "--producers", "1", "--clients", "0", "--orders", str(orders), "--snapshot-every",
                           "5000", "--segment-bytes", str(1 << 20), "--keep-snapshots", "2", "--quiet",
                           "--json", str(json_path)], capture_output=True, text=True, timeout=900)


def test_launch_applies_retention_and_shows_it(shm_run, tmp_path):
    """One producer slot: a restarted matcher reads the last 2 x (65,536 + 4,096) seqs of
    the log, so retention keeps those too; 200,000 orders leave it something to remove.
    Retention runs after each rotation and when the WAL writer starts; the snapshots it
    can count on during a run come as fast as the forked writer makes them, so the check
    is on the third launch's start, when the two kept are the earlier launches' final ones:
    after it nothing is kept that they do not need."""
    from shmex.recovery.resume import pseq_window

    data = tmp_path / "data"
    docs = []
    for k, orders in enumerate((200_000, 1000, 1000)):
        if k == 2:
            snaps = store.list_snapshots(snapshot_dir(data))
            assert [s for s, _ in snaps] == [200_000, 201_000]
            bound = min(snaps[0][0], 201_000 - pseq_window(1 << 16))
        r = _launch(shm_run + "abc"[k], data, tmp_path / f"run{k}.json", orders)
        assert r.returncode == 0, r.stdout + r.stderr
        docs.append(json.loads((tmp_path / f"run{k}.json").read_text()))
        wal = docs[-1]["wal"]
        assert wal["keep_snapshots"] == 2 and wal["kept_segments"] == len(segments(data))
        assert wal["first_seq"] == _first_seq(data)
        assert f"retention (keep 2 snapshots) removed {wal['removed_segments']} segment(s)" in r.stdout
    kept = segments(data)
    assert _first_seq(data) <= bound + 1 < int(read_header(kept[1])["first_seq"])   # nothing removable kept
    removed = sum(d["wal"]["removed_segments"] for d in docs)
    ret = manifest.read(data)["retention"]
    assert removed == ret["removed_segments"] > 0 and ret["first_seq"] == _first_seq(data) > 1
    assert sum(d["wal"]["removed_bytes"] for d in docs) == ret["removed_bytes"]
    doc = docs[-1]
    rp = subprocess.run([sys.executable, "-m", "shmex.cli", "replay", str(data)], capture_output=True, text=True,
                        timeout=900)
    assert rp.returncode == 0 and f"state_hash {doc['state_hash']}" in rp.stdout, rp.stdout + rp.stderr
    assert subprocess.run([sys.executable, "-m", "shmex.cli", "verify", str(data)],
                          capture_output=True).returncode == 0

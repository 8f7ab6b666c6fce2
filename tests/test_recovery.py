"""Determinism and recovery: replay == live (reports and state_hash), snapshot + tail ==
full replay, fallbacks, the replay verb, and a writer killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from shmex import cli
from shmex.matcher import Matcher
from shmex.schema import REPORT
from shmex.snapshot import store
from shmex.recovery.recover import recover, snapshot_dir
from shmex.wal.reader import WalReader
from shmex.wal.writer import WalWriter
from wal_helpers import CFG, commands, copy_dir, seg_bytes, segments

N = 3000
EVERY = 700


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """N commands through a matcher (process stamps seq) and the WAL, with snapshots."""
    d = tmp_path_factory.mktemp("live") / "run"
    cmds = commands(N, seed=21)
    cmds["seq"] = 0
    cmds["engine_ns"] = 0
    m = Matcher(**CFG)
    w = WalWriter(d, config=m.config, segment_bytes=seg_bytes(500))
    reports, hashes = [], {0: m.state_hash()}
    for i in range(0, N, 100):
        b = cmds[i:i + 100]
        reports.append(m.process(b))
        w.append(b)
        w.poll()
        hashes[m.last_seq] = m.state_hash()
        if m.last_seq % EVERY < 100:
            info = store.write_snapshot(snapshot_dir(d), m, keep=10)
            w.note_snapshot(info.seq, info.state_hash)
    w.close()
    return d, cmds, _cat(reports), hashes


def _cat(parts):
    out = np.zeros(sum(len(p) for p in parts), dtype=REPORT)
    i = 0
    for p in parts:
        out[i:i + len(p)] = p
        i += len(p)
    return out


def _replay_reports(m, d, from_seq):
    parts = [m.apply(b) for b in WalReader(d).commands(from_seq)]
    return _cat(parts)


def test_replay_from_the_log_gives_the_same_reports_and_hash(live):
    d, cmds, reports, hashes = live
    m = Matcher(**CFG)
    got = _replay_reports(m, d, 1)
    assert got.tobytes() == reports.tobytes()
    assert m.state_hash() == hashes[N]


def test_each_snapshot_plus_its_tail_gives_the_same_reports_and_hash(live):
    d, cmds, reports, hashes = live
    snaps = store.list_snapshots(snapshot_dir(d))
    assert len(snaps) >= 4
    for seq, path in snaps:
        m, info = store.load_snapshot(path)
        assert m.state_hash() == hashes[seq]
        got = _replay_reports(m, d, seq + 1)
        tail = reports[reports["cmd_seq"] > seq]
        assert got.tobytes() == tail.tobytes()
        assert m.state_hash() == hashes[N]


def test_recover_uses_the_newest_snapshot(live):
    d, _, _, hashes = live
    r = recover(d)
    newest = store.list_snapshots(snapshot_dir(d))[-1][0]
    assert r.snapshot.seq == newest and r.records == N - newest
    assert r.matcher.state_hash() == hashes[N] and r.damage is None and not r.refused
    r = recover(d, until=1234)
    assert r.last_seq == 1234 and r.snapshot.seq <= 1234


def test_recover_falls_back_past_bad_snapshots_to_the_log(live, tmp_path):
    d0, _, _, hashes = live
    d = tmp_path / "run"
    copy_dir(d0, d)
    snaps = store.list_snapshots(snapshot_dir(d))
    with open(snaps[-1][1], "r+b") as f:  # newest: bad checksum
        f.seek(300)
        f.write(b"\xde\xad")
    r = recover(d)
    assert r.snapshot.seq == snaps[-2][0] and [e.path for e in r.refused] == [snaps[-1][1]]
    assert r.matcher.state_hash() == hashes[N]
    for _, p in snaps:
        with open(p, "r+b") as f:
            f.truncate(200)
    r = recover(d)
    assert r.snapshot is None and len(r.refused) == len(snaps) and r.records == N
    assert r.matcher.state_hash() == hashes[N]
    assert cli.main(["verify", str(d)]) == 1


def test_a_snapshot_ahead_of_the_intact_log_is_not_used(live, tmp_path):
    d0, cmds, _, _ = live
    d = tmp_path / "run"
    copy_dir(d0, d)
    snaps = [s for s, _ in store.list_snapshots(snapshot_dir(d))]
    for p in segments(d)[3:]:  # the log loses its later segments: later snapshots are ahead
        os.unlink(p)
    r = WalReader(d)
    for _ in r.commands():
        pass
    log_end = r.end.last_seq
    ahead = [s for s in snaps if s > log_end]
    assert ahead and log_end > snaps[0]
    rec = recover(d)
    assert rec.last_seq == log_end
    assert rec.snapshot.seq == max(s for s in snaps if s <= log_end)
    assert sorted(e.seq for e in rec.refused) == ahead
    assert all("intact log ends" in e.what for e in rec.refused)
    m = Matcher(**CFG)
    m.apply(_first(cmds, log_end, d))
    assert rec.matcher.state_hash() == m.state_hash()
    assert cli.main(["verify", str(d)]) == 1


def _first(cmds, n, d):
    out = np.zeros(n, dtype=cmds.dtype)
    i = 0
    for b in WalReader(d).commands(1, until=n):
        out[i:i + len(b)] = b
        i += len(b)
    return out


def test_replay_verb_prints_and_writes_json(live, tmp_path, capsys):
    d, _, _, hashes = live
    j = tmp_path / "r.json"
    assert cli.main(["replay", str(d), "--until", "2000", "--json", str(j)]) == 0
    out = capsys.readouterr().out
    assert "state_hash" in out and "symbol 0: bid" in out
    doc = json.loads(j.read_text())
    assert doc["last_seq"] == 2000 and doc["state_hash"] == hashes.get(2000, doc["state_hash"])
    assert set(doc) >= {"last_seq", "state_hash", "records", "records_per_s"}


_WRITER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from wal_helpers import CFG, commands, seg_bytes
from shmex.wal.writer import WalWriter
w = WalWriter(sys.argv[1], mode="group", group_records=64, group_us=200, config=CFG,
              segment_bytes=seg_bytes(300))
cmds = commands(200000, seed=5)
i = 0
while True:
    w.append(cmds[i:i + 37]); i += 37
    d = w.poll()
    print(d, flush=True)
"""


def test_a_writer_killed_with_sigkill_loses_nothing_durable(tmp_path):
    d = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(d), os.path.dirname(__file__)],
                         stdout=subprocess.PIPE, text=True)
    durable = 0
    t_end = time.monotonic() + 30
    for line in p.stdout:
        durable = int(line)
        if durable > 3000 or time.monotonic() > t_end:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert durable > 0
    r = recover(d)
    assert r.last_seq >= durable  # every seq reported durable is there
    cmds = commands(200000, seed=5)
    m = Matcher(**CFG)
    m.apply(cmds[:r.last_seq])
    assert r.matcher.state_hash() == m.state_hash()
    w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(300))  # cuts any torn tail, goes on
    assert w.next_seq == r.last_seq + 1
    w.append(cmds[r.last_seq:r.last_seq + 10])
    w.close()
    assert cli.main(["verify", str(d)]) == 0

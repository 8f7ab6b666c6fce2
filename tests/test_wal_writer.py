"""WAL writer and reader: modes, durable_seq, rotation, boundaries, manifest, CLI exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shmex import cli
from shmex.errors import CannotOpen, SchemaMismatch, UsageError
from shmex.schema import REPORT
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.crc import crc32c
from shmex.wal.reader import WalReader
from shmex.wal.writer import WalWriter
from wal_helpers import CFG, commands, join, read_all, seg_bytes, segments, write_log


@pytest.mark.parametrize("data, crc", [(b"", 0), (b"123456789", 0xE3069283),
                                       (bytes(32), 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43)])
def test_crc32c_known_vectors_hw_and_table(data, crc):
    assert crc32c(data, hw=True) == crc
    assert crc32c(data, hw=False) == crc


def test_crc32c_hw_and_table_agree_on_random_lengths():
    rng = np.random.default_rng(3)
    for n in (1, 7, 8, 9, 63, 64, 80, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data, hw=True) == crc32c(data, hw=False)


_ENCODE_SNIPPET = """
import numpy as np, sys
from shmex.wal import _kernels as wal_kernels
from shmex.crc import HW
from shmex.bench.wal_bench import workload
c = workload(5, 1)
dst = np.zeros(5 * 10, np.uint64)
n, dg, bad = wal_kernels._encode_commands(c.view(np.uint64).reshape(5, 8), dst, 0, 5, 1, np.uint64(0), HW)
out = np.zeros((8, 8), np.uint64)
st = wal_kernels._scan_slots(dst, 0, dst.size, 1, 1, 1 << 62, out, np.uint64(0), HW)
sys.stdout.write(dst.tobytes().hex() + " " + str(int(dg)) + " " + str(st[:2]))
"""


def test_kernels_give_the_same_bytes_under_numba_disable_jit():
    def run(env_extra):
        env = dict(os.environ, **env_extra)
        return subprocess.run([sys.executable, "-c", _ENCODE_SNIPPET], env=env, check=True,
                              capture_output=True, text=True).stdout
    jit = run({})
    assert jit == run({"NUMBA_DISABLE_JIT": "1"})
    assert jit == run({"SHMEX_CRC": "table"})
    assert jit.endswith("(2, 5)")  # ST_SEG_END after 5 commands


@pytest.mark.parametrize("mode", ["none", "group", "always"])
def test_roundtrip_each_mode_with_rotation(tmp_path, mode):
    d = tmp_path / "wal"
    cmds = commands(120 if mode != "always" else 40)
    write_log(d, cmds, slots=16, mode=mode, chunk=7)
    got, end = read_all(d)
    assert got.tobytes() == cmds.tobytes()
    assert end.damage is None and end.last_seq == len(cmds)
    assert len(segments(d)) > 2  # rotated
    doc = manifest.read(d)
    (run,) = doc["runs"]
    assert run["sealed"] and run["last_seq"] == len(cmds) and run["records"] == len(cmds)
    assert run["config"] == CFG
    assert not os.path.exists(d / wal_layout.SPARE_NAME)
    assert cli.main(["verify", str(d)]) == 0


def test_durable_seq_advances_only_after_the_group_commit(tmp_path):
    w = WalWriter(tmp_path / "wal", mode="group", group_records=100, group_us=1000,
                  segment_bytes=seg_bytes(400), config=CFG)
    cmds = commands(250)
    seen = [w.durable_seq]
    w.append(cmds[:10])
    assert w.durable_seq == 0 and w.appended_seq == 10
    assert w.poll(now_ns=w._staged_since_ns + 999_000) == 0  # not due yet
    assert w.poll(now_ns=w._staged_since_ns + 1_000_000) == 10  # T µs elapsed: committed
    w.append(cmds[10:150])  # crosses group_records: commits 100 on its own
    seen.append(w.durable_seq)
    assert w.durable_seq == 110
    assert w.commit() == 150
    seen.append(w.durable_seq)
    w.append(cmds[150:])
    seen.append(w.durable_seq)
    assert w.close() == 250
    seen.append(w.durable_seq)
    assert seen == sorted(seen)


def test_mode_none_is_durable_on_return_and_always_per_record(tmp_path):
    cmds = commands(20)
    w = WalWriter(tmp_path / "a", mode="none", config=CFG, segment_bytes=seg_bytes(64))
    w.append(cmds[:7])
    assert w.durable_seq == 7
    w.close()
    w = WalWriter(tmp_path / "b", mode="always", config=CFG, segment_bytes=seg_bytes(64))
    w.append(cmds[:3])
    assert w.durable_seq == 3
    w.close()


def test_append_rejects_a_seq_gap_and_a_foreign_dtype(tmp_path):
    w = WalWriter(tmp_path / "wal", config=CFG, segment_bytes=seg_bytes(64))
    cmds = commands(10)
    cmds["seq"][6] = 99
    with pytest.raises(UsageError, match="command 6 carries seq 99, expected 7"):
        w.append(cmds)
    assert w.appended_seq == 6  # the six before the gap are in
    with pytest.raises(SchemaMismatch):
        w.append(np.zeros(3, dtype=REPORT))
    w.close()
    got, _ = read_all(tmp_path / "wal")
    assert list(got["seq"]) == [1, 2, 3, 4, 5, 6]


def test_empty_log_reads_verifies_and_replays(tmp_path):
    d = tmp_path / "wal"
    WalWriter(d, config=CFG, segment_bytes=seg_bytes(8)).close()
    got, end = read_all(d)
    assert len(got) == 0 and end.damage is None and end.last_seq == 0
    assert cli.main(["verify", str(d)]) == 0
    assert cli.main(["replay", str(d)]) == 0


@pytest.mark.parametrize("seal", [True, False])
def test_log_ending_exactly_at_a_segment_boundary(tmp_path, seal):
    d = tmp_path / "wal"
    slots = 8
    cmds = commands(3 * slots)
    # slot 0 of the first segment is RUN_START: 7 commands fill it, 8 each later one
    write_log(d, cmds[:slots - 1 + slots], slots=slots, seal=seal, chunk=slots)
    n_seg = len(segments(d))
    assert n_seg == (3 if seal else 2)  # a seal record goes to a fresh segment
    got, end = read_all(d)
    assert got.tobytes() == cmds[:15].tobytes() and end.damage is None
    # a new run continues after the boundary
    write_log(d, cmds[15:], slots=slots)
    got, end = read_all(d)
    assert got.tobytes() == cmds.tobytes() and end.damage is None
    assert cli.main(["verify", str(d)]) == 0


def test_reopen_continues_and_the_crashed_run_is_noted(tmp_path, capsys):
    d = tmp_path / "wal"
    cmds = commands(60)
    write_log(d, cmds[:25], seal=False)
    with pytest.raises(UsageError, match="continues at seq 26"):
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(16), first_seq=1)
    write_log(d, cmds[25:])
    got, _ = read_all(d)
    assert got.tobytes() == cmds.tobytes()
    runs = manifest.read(d)["runs"]
    assert [r["sealed"] for r in runs] == [False, True] and runs[1]["first_seq"] == 26
    assert cli.main(["verify", str(d)]) == 0
    assert "was not sealed: it crashed" in capsys.readouterr().out


def test_reader_starts_from_any_seq_and_stops_at_until(tmp_path):
    d = tmp_path / "wal"
    cmds = commands(100)
    write_log(d, cmds)
    r = WalReader(d)
    got = join(r.commands(37, until=81, batch=8))
    assert list(got["seq"]) == list(range(37, 82)) and r.end.last_seq == 81


def test_a_second_writer_is_refused(tmp_path):
    w = WalWriter(tmp_path / "wal", config=CFG, segment_bytes=seg_bytes(8))
    with pytest.raises(CannotOpen, match="another WAL writer"):
        WalWriter(tmp_path / "wal", config=CFG, segment_bytes=seg_bytes(8))
    w.close()


def test_missing_directory_exits_2(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert cli.main(["verify", missing]) == 2
    assert cli.main(["replay", missing]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["verify", str(empty)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_verify_json(tmp_path):
    d = tmp_path / "wal"
    write_log(d, commands(30))
    j = tmp_path / "v.json"
    assert cli.main(["verify", str(d), "--json", str(j)]) == 0
    doc = json.loads(j.read_text())
    assert doc["exit"] == 0 and doc["records"] == 30 and doc["last_seq"] == 30


def test_mode_none_mixes_mapped_and_pwritten_appends(tmp_path):
    """Mode none: small appends store into pages idle polls prefilled, large ones are
    pwritten; control records, a seq gap and rotations in between; the bytes read back."""
    from shmex.wal import writer as wal_writer
    d = tmp_path / "wal"
    cmds = commands(12_000)
    w = WalWriter(d, mode="none", config=CFG, segment_bytes=seg_bytes(3000))
    rng = np.random.default_rng(5)
    i, mapped_seen = 0, False
    while i < len(cmds):
        k = int(rng.choice([1, 3, 37, 200, wal_writer._SMALL, 2500]))
        w.append(cmds[i:i + k])
        i = min(len(cmds), i + k)
        assert w.durable_seq == i
        for _ in range(int(rng.integers(0, 4))):
            w.poll()
        mapped_seen |= w._ready - w._pos >= wal_layout.SLOT_BYTES
        if i % 7 == 0:
            w.note_snapshot(i, "ab" * 8)
    bad = commands(3, first_seq=i + 1)
    bad["seq"][2] = 10**9
    with pytest.raises(UsageError, match="command 2 carries seq"):
        w.append(bad)  # a small append: the two before the gap go in through the mapping path
    w.close()
    assert mapped_seen  # the idle polls prefilled ahead of the cursor
    got, end = read_all(d)
    assert got.tobytes() == cmds.tobytes() + bad[:2].tobytes()
    assert end.damage is None and end.last_seq == i + 2
    assert len(segments(d)) > 3
    assert cli.main(["verify", str(d)]) == 0


_CRASH_SNIPPET = """
import os, sys
sys.path.insert(0, {tests!r})
from wal_helpers import CFG, commands, seg_bytes
from shmex.wal.writer import WalWriter
w = WalWriter({d!r}, mode="none", config=CFG, segment_bytes=seg_bytes(3000))
c = commands(7000)
for i in range(0, 2000, 50):
    w.append(c[i:i + 50]); w.poll(); w.poll()
w.append(c[2000:6500])
w.poll()
w.append(c[6500:6503])
os._exit(0)  # a process crash: no close, no sync
"""


def test_mode_none_survives_a_process_crash(tmp_path):
    d = str(tmp_path / "wal")
    code = _CRASH_SNIPPET.format(tests=os.path.dirname(__file__), d=d)
    subprocess.run([sys.executable, "-c", code], check=True)
    got, end = read_all(d)
    assert got.tobytes() == commands(7000)[:6503].tobytes()
    assert end.damage is None
    w = WalWriter(d, mode="none", config=CFG, segment_bytes=seg_bytes(3000))
    assert w.first_seq == 6504
    w.close()
    assert cli.main(["verify", str(d)]) == 0


def test_a_followers_journal_runs_only_grow_and_a_takeover_engine_adds_its_own(tmp_path):
    from shmex.errors import CorruptRecord

    a = {"run_id": "a" * 32, "first_seq": 1, "started_ns": 10, "mono_ns": 5, "sealed": True, "last_seq": 4}
    b = {"run_id": "b" * 32, "first_seq": 5, "started_ns": 20, "mono_ns": 6, "sealed": False}
    w = WalWriter(tmp_path, mode="group", config=CFG, origin=False)
    w.note_journal_runs([a, b])
    w.note_journal_runs([a])                       # an earlier doc, the stream read again
    w.note_journal_runs([a, dict(b, sealed=True, last_seq=9)])
    w.note_journal_runs([a, b])                    # earlier than the sealed one held
    with pytest.raises(CorruptRecord, match="journal run 1"):
        w.note_journal_runs([a, dict(b, run_id="c" * 32)])
    w.append(commands(9))
    w.close()
    runs = manifest.read(tmp_path)["journal_runs"]
    assert [r["run_id"] for r in runs] == ["a" * 32, "b" * 32] and runs[1]["sealed"]
    assert len(manifest.read(tmp_path)["runs"]) == 1  # the follower's own writer is not a journal run
    with WalWriter(tmp_path / "e", mode="group", config=CFG) as engine, pytest.raises(UsageError, match="origin=False"):
        engine.note_journal_runs([a])
    e = WalWriter(tmp_path, mode="group", config=CFG)  # an engine over the follower's directory
    e.append(commands(3, first_seq=10))
    e.close()
    runs = manifest.read(tmp_path)["journal_runs"]
    assert [r["first_seq"] for r in runs] == [1, 5, 10]
    assert runs[2]["run_id"] == manifest.read(tmp_path)["runs"][-1]["run_id"] and runs[2]["last_seq"] == 12

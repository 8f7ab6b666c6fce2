"""Crash simulation: truncations and bit flips. Recovery stops at a torn tail and refuses
damage followed by intact records; verify exits 1 naming the place, nothing after the
damage is applied, nothing before lost; `shmex repair` is the only cut of acknowledged
records."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shmex import cli
from shmex.errors import CorruptRecord
from shmex.matcher import Matcher
from shmex.recovery.recover import recover
from shmex.wal import layout as wal_layout
from shmex.wal.reader import WalReader, cut_tail
from shmex.recovery.verify import verify
from shmex.wal.writer import WalWriter
from wal_helpers import (CFG, commands, copy_dir, join, last_intact_seq, read_all, seg_bytes,
                         segments, slot_kinds, write_log)


def _scan(d):
    r = WalReader(d)
    got = join(r.commands())
    return got, r.end


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    """One segment: RUN_START, 12 commands, RUN_SEALED, 2 empty slots."""
    d = tmp_path_factory.mktemp("small") / "wal"
    cmds = commands(12)
    write_log(d, cmds, slots=16)
    (seg,) = segments(d)
    return d, cmds, seg, open(seg, "rb").read()


@pytest.fixture(scope="module")
def hashes(small_log):
    """state_hash after each prefix of the small log's commands."""
    _, cmds, _, _ = small_log
    m = Matcher(**CFG)
    out = [m.state_hash()]
    for i in range(len(cmds)):
        m.apply(cmds[i:i + 1])
        out.append(m.state_hash())
    return out


def test_truncation_at_every_offset_of_a_small_log(small_log, hashes, tmp_path):
    src, cmds, seg, pristine = small_log
    kinds = slot_kinds(seg)
    d = tmp_path / "wal"
    copy_dir(src, d)
    path = segments(d)[0]
    for k in range(len(pristine)):
        with open(path, "wb") as f:
            f.write(pristine[:k])
        want = last_intact_seq(kinds, k, 0) if k >= wal_layout.HEADER_BYTES else 0
        got, end = _scan(d)
        assert end.damage is not None, k
        assert end.damage.path == path
        assert got.tobytes() == cmds[:want].tobytes(), k
        assert end.last_seq == want
        rep = verify(d)
        assert rep.corrupt, k
        if k % 5 == 0 or k < 300:
            r = recover(d, use_snapshots=False)
            assert r.last_seq == want and r.damage is not None
            assert r.matcher.state_hash() == hashes[want]


def test_truncation_then_the_writer_cuts_and_continues(small_log, tmp_path):
    _, cmds, _, pristine = small_log
    src = tmp_path / "crashed"
    write_log(src, cmds, slots=16, seal=False)  # a crash: the run never sealed
    more = commands(20)
    for k in (wal_layout.HEADER_BYTES + 3 * wal_layout.SLOT_BYTES + 17, wal_layout.HEADER_BYTES + 9 * wal_layout.SLOT_BYTES, len(pristine) - 40):
        d = tmp_path / f"wal{k}"
        copy_dir(src, d)
        path = segments(d)[0]
        with open(path, "r+b") as f:
            f.truncate(k)
        kept = _scan(d)[1].last_seq
        w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(16))
        assert w.next_seq == kept + 1
        w.append(more[kept:])
        w.close()
        got, end = _scan(d)
        assert end.damage is None
        assert list(got["seq"]) == list(range(1, 21))
        assert got[:kept].tobytes() == cmds[:kept].tobytes()
        assert os.path.getsize(path) == len(pristine)  # restored to its preallocated size
        assert cli.main(["verify", str(d)]) == 0


def test_a_sealed_run_is_never_cut(small_log, tmp_path):
    src, _, _, pristine = small_log
    d = tmp_path / "wal"
    copy_dir(src, d)
    with open(segments(d)[0], "r+b") as f:
        f.truncate(wal_layout.HEADER_BYTES + 6 * wal_layout.SLOT_BYTES)
    with pytest.raises(CorruptRecord, match="was sealed at seq 12.*refusing to cut"):
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(16))


def test_bit_flips_in_a_small_log(small_log, hashes, tmp_path, capsys):
    src, cmds, seg, pristine = small_log
    kinds = slot_kinds(seg)
    data_end = wal_layout.HEADER_BYTES + len(kinds) * wal_layout.SLOT_BYTES
    d = tmp_path / "wal"
    copy_dir(src, d)
    path = segments(d)[0]
    rng = np.random.default_rng(11)
    offsets = list(rng.integers(0, data_end, 150)) + list(rng.integers(data_end, len(pristine), 10))
    for n, off in enumerate(offsets):
        off = int(off)
        bad = bytearray(pristine)
        bad[off] ^= 1 << int(rng.integers(0, 8))
        with open(path, "wb") as f:
            f.write(bad)
        if off < wal_layout.HEADER_BYTES:
            want = 0
        else:
            want = last_intact_seq(kinds, wal_layout.HEADER_BYTES + (off - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES * wal_layout.SLOT_BYTES, 0)
        got, end = _scan(d)
        assert end.damage is not None, off
        assert got.tobytes() == cmds[:want].tobytes(), off
        slot = (off - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES if off >= wal_layout.HEADER_BYTES else -1
        if slot < len(kinds) - 1:     # intact records follow the damage: refused, named
            with pytest.raises(CorruptRecord, match="intact records follow") as e:
                recover(d, use_snapshots=False)
            assert e.value.path == end.damage.path and e.value.offset == end.damage.offset
        else:                         # the last record or the zeros after it: a torn tail
            r = recover(d, use_snapshots=False)
            assert r.last_seq == want and r.matcher.state_hash() == hashes[want]
        if n % 15 == 0:
            assert cli.main(["verify", str(d)]) == 1
            out = capsys.readouterr().out
            assert f"CORRUPT: {path} at offset" in out and "Traceback" not in out


def test_verify_names_file_offset_and_seq(small_log, tmp_path, capsys):
    src, _, _, pristine = small_log
    d = tmp_path / "wal"
    copy_dir(src, d)
    path = segments(d)[0]
    off = wal_layout.HEADER_BYTES + 5 * wal_layout.SLOT_BYTES + 40  # inside slot 5: command seq 5
    bad = bytearray(pristine)
    bad[off] ^= 0x10
    open(path, "wb").write(bad)
    assert cli.main(["verify", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"{path} at offset {wal_layout.HEADER_BYTES + 5 * wal_layout.SLOT_BYTES} (seq 5): CRC32C mismatch" in out
    assert "records up to seq 4 are intact" in out


def test_garbage_files_never_give_a_traceback(tmp_path, capsys):
    rng = np.random.default_rng(5)
    d = tmp_path / "wal"
    write_log(d, commands(30))
    for name, size in ((wal_layout.segment_name(0), 4096), (wal_layout.MANIFEST, 300), ("snapshots/snap-00000000000000000007.snap", 500)):
        p = d / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        assert cli.main(["verify", str(d)]) == 1
        assert cli.main(["replay", str(d)]) in (1, 2)
        out = capsys.readouterr()
        assert "Traceback" not in out.out + out.err


@pytest.fixture(scope="module")
def large_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("large") / "wal"
    cmds = commands(6000, seed=3)
    write_log(d, cmds, slots=400, chunk=97, seal=False)  # crashed: its tail may be cut
    return d, cmds


def test_truncation_and_flips_at_random_offsets_of_a_large_log(large_log, tmp_path):
    src, cmds = large_log
    pristine = [open(p, "rb").read() for p in segments(src)]
    assert len(pristine) > 10
    ends = []  # last command seq at the end of each segment
    seq = 0
    for p in segments(src):
        ks = slot_kinds(p)
        seq = last_intact_seq(ks, 1 << 40, seq)
        ends.append(seq)
    rng = np.random.default_rng(17)
    d = tmp_path / "wal"
    for trial in range(24):
        copy_dir(src, d)
        paths = segments(d)
        s = int(rng.integers(0, len(paths)))
        before = ends[s - 1] if s else 0
        kinds = slot_kinds(segments(src)[s])
        off = int(rng.integers(wal_layout.HEADER_BYTES, wal_layout.HEADER_BYTES + len(kinds) * wal_layout.SLOT_BYTES))
        if trial % 2:  # a crash: the segment is cut at off and later ones never written
            with open(paths[s], "r+b") as f:
                f.truncate(off)
            for p in paths[s + 1:]:
                os.unlink(p)
            want = last_intact_seq(kinds, off, before)
        else:  # a flipped bit
            b = bytearray(pristine[s])
            b[off] ^= 1 << int(rng.integers(0, 8))
            open(paths[s], "wb").write(b)
            slot_start = wal_layout.HEADER_BYTES + (off - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES * wal_layout.SLOT_BYTES
            want = last_intact_seq(kinds, slot_start, before)
        got, end = _scan(d)
        assert end.damage is not None and end.damage.path == paths[s]
        assert got.tobytes() == cmds[:want].tobytes()
        assert verify(d).corrupt
        if trial % 2:  # a torn tail: the writer cuts it and goes on
            w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(400))
            assert w.next_seq == want + 1
            w.close()
            assert _scan(d)[1].damage is None


def test_damage_inside_the_log_is_not_cut(large_log, tmp_path):
    src, cmds = large_log
    d = tmp_path / "wal"
    copy_dir(src, d)
    path = segments(d)[2]
    b = bytearray(open(path, "rb").read())
    b[wal_layout.HEADER_BYTES + 3 * wal_layout.SLOT_BYTES + 20] ^= 4
    open(path, "wb").write(b)
    with pytest.raises(CorruptRecord, match="refusing to cut"):
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(400))
    with pytest.raises(CorruptRecord, match="refusing to cut"):
        cut_tail(d)
    cut = cut_tail(d, force=True)
    assert cut.removed and cut.damage.path == path
    got, end = read_all(d)
    assert end.damage is None and end.last_seq == cut.last_seq
    assert got.tobytes() == cmds[:cut.last_seq].tobytes()


def test_a_successor_scans_only_the_tail_and_cuts_the_same_torn_record(large_log, tmp_path):
    """A writer's successor after a process crash (tail_only) scans the last segments: a
    torn last record is cut exactly as the whole scan cuts it; the work does not grow with
    the log (damage further back is verify's and a full open's to find)."""
    src, cmds = large_log
    results = {}
    for tail_only in (False, True):
        d = tmp_path / f"wal-{tail_only}"
        copy_dir(src, d)
        last = segments(d)[-1]
        b = bytearray(open(last, "rb").read())
        end = wal_layout.HEADER_BYTES + (len(b) - wal_layout.HEADER_BYTES) // wal_layout.SLOT_BYTES * wal_layout.SLOT_BYTES
        first_zero = next(o for o in range(wal_layout.HEADER_BYTES, end, wal_layout.SLOT_BYTES)
                          if not any(b[o:o + wal_layout.SLOT_BYTES]))
        b[first_zero - wal_layout.SLOT_BYTES + 30] ^= 0x55          # the last record written, torn
        open(last, "wb").write(b)
        w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(400), tail_only=tail_only)
        results[tail_only] = w.next_seq
        w.close()
        got, end_ = read_all(d)
        assert end_.damage is None and got.tobytes() == cmds[:w.next_seq - 1].tobytes()
    assert results[True] == results[False] < len(cmds) + 1

    d = tmp_path / "wal-early"
    copy_dir(src, d)
    path = segments(d)[2]
    b = bytearray(open(path, "rb").read())
    b[wal_layout.HEADER_BYTES + 3 * wal_layout.SLOT_BYTES + 20] ^= 4       # damage deep inside the log
    open(path, "wb").write(b)
    WalWriter(d, config=CFG, segment_bytes=seg_bytes(400), tail_only=True).close()   # not scanned
    assert verify(d).corrupt                              # ... verify still names it
    with pytest.raises(CorruptRecord, match="refusing to cut"):
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(400))


# --- damage followed by intact records: corruption, refused; `shmex repair` cuts it -------


@pytest.fixture
def acked_log(tmp_path):
    """A crashed (unsealed) run of 40 commands, every group synced, one flipped byte inside
    seq 33: seqs 34..40 after it are intact."""
    d = tmp_path / "wal"
    cmds = commands(40)
    write_log(d, cmds, slots=64, seal=False)
    path = segments(d)[0]
    kinds = slot_kinds(path)
    slot = next(i for i, (kind, s) in enumerate(kinds) if kind == wal_layout.REC_COMMAND and s == 33)
    off = wal_layout.HEADER_BYTES + slot * wal_layout.SLOT_BYTES
    b = bytearray(open(path, "rb").read())
    b[off + 40] ^= 0x01
    open(path, "wb").write(b)
    return d, cmds, path, off


def test_damage_followed_by_intact_records_is_refused_not_cut(acked_log, capsys):
    d, cmds, path, off = acked_log
    before = open(path, "rb").read()
    with pytest.raises(CorruptRecord, match=r"intact records follow.*refusing to cut") as e:
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(64))
    assert (e.value.path, e.value.offset, e.value.seq) == (str(path), off, 33)
    assert open(path, "rb").read() == before          # nothing zeroed: seqs 33..40 are still there
    with pytest.raises(CorruptRecord, match="intact records follow") as e:
        recover(d, use_snapshots=False)
    assert (e.value.path, e.value.offset, e.value.seq) == (str(path), off, 33)
    assert cli.main(["verify", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT: {path} at offset {off} (seq 33): CRC32C mismatch" in out
    assert "intact records follow" in out and f"shmex repair {d}" in out
    assert cli.main(["replay", str(d)]) == 1
    assert "intact records follow" in capsys.readouterr().err


def test_only_a_tail_with_nothing_intact_after_it_is_cut_silently(acked_log):
    d, cmds, path, off = acked_log
    b = bytearray(open(path, "rb").read())
    b[off + wal_layout.SLOT_BYTES:] = bytes(len(b) - off - wal_layout.SLOT_BYTES)   # 34..40 never written
    open(path, "wb").write(b)
    w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(64))
    assert w.first_seq == 33
    w.close()
    got, end = read_all(d)
    assert end.damage is None and got[:32].tobytes() == cmds[:32].tobytes()


def test_a_successor_never_cuts_a_record_its_predecessor_reported_durable(acked_log):
    d, cmds, path, off = acked_log
    b = bytearray(open(path, "rb").read())
    b[off + wal_layout.SLOT_BYTES:] = bytes(len(b) - off - wal_layout.SLOT_BYTES)
    open(path, "wb").write(b)
    with pytest.raises(CorruptRecord, match="durable seq 33") as e:
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(64), tail_only=True, durable_floor=33)
    assert e.value.seq == 33
    w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(64), tail_only=True, durable_floor=32)
    assert w.first_seq == 33           # 33 was never reported durable: a torn write, cut
    w.close()


def test_repair_cuts_at_the_first_damage_and_says_what_it_cut(acked_log, capsys):
    d, cmds, path, off = acked_log
    assert cli.main(["repair", str(d), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would cut seqs 33..40" in out and f"{path} at offset {off}" in out
    with pytest.raises(CorruptRecord):
        WalWriter(d, config=CFG, segment_bytes=seg_bytes(64))      # a dry run changes nothing
    assert cli.main(["repair", str(d)]) == 0
    out = capsys.readouterr().out
    assert "cut seqs 33..40" in out and "bytes zeroed" in out
    assert cli.main(["verify", str(d)]) == 0
    capsys.readouterr()
    w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(64))
    assert w.first_seq == 33
    w.close()
    got, end = read_all(d)
    assert end.damage is None and got.tobytes() == cmds[:32].tobytes()
    assert cli.main(["repair", str(d)]) == 0
    assert "nothing to cut" in capsys.readouterr().out


def test_repair_refuses_a_directory_a_writer_holds(tmp_path, capsys):
    d = tmp_path / "wal"
    w = WalWriter(d, config=CFG, segment_bytes=seg_bytes(16))
    try:
        assert cli.main(["repair", str(d)]) == 2
        assert ".writer.lock" in capsys.readouterr().err
    finally:
        w.close()
    assert cli.main(["repair", str(tmp_path / "missing")]) == 2

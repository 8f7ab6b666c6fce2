"""Durability faults: a failed fdatasync, ENOSPC, short writes (fsyncgate).

After a failed fdatasync the page cache may show records the disk never got, and a later
fsync may report success for them: the writer halts for good, names the operation, file,
offset and errno, and nothing written after its last good sync is ever reported durable,
by it or by the writer that opens the log next. ENOSPC anywhere is the same clean halt;
a short write is continued, never taken for a whole one."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from shmex import cli
from shmex.errors import Halt
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.wal.writer import WalWriter
from wal_helpers import CFG, commands, read_all, seg_bytes, segments


def _fail(monkeypatch, name: str, code: int, when=lambda *a: True):
    """Make os.<name> raise OSError(code) for the calls `when` accepts."""
    real = getattr(os, name)

    def fake(*a):
        if when(*a):
            raise OSError(code, os.strerror(code))
        return real(*a)

    monkeypatch.setattr(os, name, fake)


def _path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _zeros(data) -> bool:
    b = memoryview(data).cast("B")
    return len(b) > 0 and not any(bytes(b))


def _crash(w: WalWriter) -> None:
    """A process crash: the writer's files are closed, nothing synced, the lock let go."""
    w._close_segment()
    if w._spare_fd is not None:
        os.close(w._spare_fd)
    os.close(w._lock_fd)
    w._closed = True


def test_a_failed_sync_halts_and_nothing_after_the_last_good_sync_is_trusted(tmp_path, monkeypatch, capsys):
    d = tmp_path / "wal"
    cmds = commands(20)
    w = WalWriter(d, mode="group", group_records=100, segment_bytes=seg_bytes(64), config=CFG)
    w.append(cmds[:5])
    assert w.commit() == 5
    _fail(monkeypatch, "fdatasync", errno.EIO)
    w.append(cmds[5:9])
    with pytest.raises(Halt) as e:
        w.commit()
    path = segments(d)[0]
    assert e.value.errno == errno.EIO and e.value.path == path and e.value.op == "fdatasync"
    assert "EIO" in str(e.value) and path in str(e.value) and "durable up to seq 5" in str(e.value)
    assert w.durable_seq == 5
    with pytest.raises(Halt):
        w.append(cmds[9:10])          # halted for good: no second try of the same sync
    monkeypatch.undo()
    w.close()
    got, _ = read_all(d)
    assert list(got["seq"]) == list(range(1, 10))      # 6..9 are in the page cache ...
    assert manifest.read(d)["runs"][-1]["halted"]["durable_seq"] == 5
    w2 = WalWriter(d, mode="group", segment_bytes=seg_bytes(64), config=CFG)
    assert w2.first_seq == 6 and w2.durable_seq == 5   # ... and not trusted: cut, not counted
    w2.append(cmds[5:12])
    w2.close()
    got, end = read_all(d)
    assert got.tobytes() == cmds[:12].tobytes() and end.damage is None
    assert cli.main(["verify", str(d)]) == 0
    assert "halted" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["group", "always"])
def test_enospc_while_committing_is_a_clean_halt(tmp_path, monkeypatch, mode):
    d = tmp_path / "wal"
    cmds = commands(10)
    w = WalWriter(d, mode=mode, group_records=100, segment_bytes=seg_bytes(64), config=CFG)
    w.append(cmds[:3])
    w.commit()
    _fail(monkeypatch, "pwrite", errno.ENOSPC)
    with pytest.raises(Halt) as e:
        w.append(cmds[3:6])
        w.commit()
    assert e.value.errno == errno.ENOSPC and e.value.path == segments(d)[0] and "ENOSPC" in str(e.value)
    assert w.durable_seq == 3
    monkeypatch.undo()
    w.close()
    w2 = WalWriter(d, mode=mode, segment_bytes=seg_bytes(64), config=CFG)
    assert w2.first_seq == 4
    w2.close()


def test_enospc_while_prefilling_is_a_clean_halt(tmp_path, monkeypatch):
    """Mode none stores records into the mapping only over pages its idle polls wrote
    (allocated): a prefill that cannot allocate halts, rather than let a store into a
    hole on a full disk kill the process with SIGBUS."""
    d = tmp_path / "wal"
    w = WalWriter(d, mode="none", segment_bytes=seg_bytes(30_000), config=CFG)
    w.append(commands(3))
    _fail(monkeypatch, "pwrite", errno.ENOSPC, lambda fd, data, off: _zeros(data))
    with pytest.raises(Halt) as e:
        for _ in range(20):
            w.poll()
    assert e.value.errno == errno.ENOSPC and e.value.op == "prefill" and e.value.path == segments(d)[0]
    assert w.mapped_room()[2] == 0          # nothing offered over pages that were not written
    monkeypatch.undo()
    w.close()


def test_enospc_while_rotating_is_a_clean_halt(tmp_path, monkeypatch):
    d = tmp_path / "wal"
    cmds = commands(100)
    w = WalWriter(d, mode="group", segment_bytes=seg_bytes(64), config=CFG)
    _fail(monkeypatch, "pwrite", errno.ENOSPC, lambda fd, data, off: _zeros(data))
    with pytest.raises(Halt) as e:
        w.append(cmds[:70])              # the first segment holds 63: the rotation needs a new one
    assert e.value.errno == errno.ENOSPC and e.value.path.endswith(wal_layout.SPARE_NAME)
    assert w.durable_seq == 63
    monkeypatch.undo()
    w.close()
    got, end = read_all(d)
    assert got.tobytes() == cmds[:63].tobytes()


def test_enospc_while_preparing_the_next_segment_is_a_clean_halt(tmp_path, monkeypatch):
    d = tmp_path / "wal"
    w = WalWriter(d, mode="group", segment_bytes=seg_bytes(30_000), config=CFG)
    w.append(commands(3))
    w.commit()
    _fail(monkeypatch, "pwrite", errno.ENOSPC, lambda fd, data, off: _zeros(data))
    with pytest.raises(Halt) as e:
        for _ in range(5):
            w.poll()
    assert e.value.errno == errno.ENOSPC and e.value.path.endswith(wal_layout.SPARE_NAME)
    monkeypatch.undo()
    w.close()


@pytest.mark.parametrize("mode", ["none", "group", "always"])
def test_every_short_write_is_honoured(tmp_path, monkeypatch, mode):
    real = os.pwrite

    def short(fd, data, off):        # at most 100 bytes a call, as a nearly full disk may do
        return real(fd, memoryview(data).cast("B")[:100], off)

    monkeypatch.setattr(os, "pwrite", short)
    d = tmp_path / "wal"
    cmds = commands(150 if mode != "always" else 40)
    w = WalWriter(d, mode=mode, segment_bytes=seg_bytes(32), config=CFG)
    for i in range(0, len(cmds), 9):
        w.append(cmds[i:i + 9])
        w.poll()
        if i % 27 == 0:
            w.note_snapshot(w.appended_seq, "ab" * 8)
    w.close()
    monkeypatch.undo()
    got, end = read_all(d)
    assert got.tobytes() == cmds.tobytes() and end.damage is None
    assert cli.main(["verify", str(d)]) == 0


def test_a_writer_syncs_what_a_crashed_run_left_before_it_counts_it_durable(tmp_path, monkeypatch):
    d = tmp_path / "wal"
    cmds = commands(200)
    w = WalWriter(d, mode="none", segment_bytes=seg_bytes(64), config=CFG)
    w.append(cmds)
    crashed = segments(d)
    _crash(w)
    synced = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, real=real: (synced.append(_path_of(fd)), real(fd))[1])
    w2 = WalWriter(d, mode="group", segment_bytes=seg_bytes(64), config=CFG)
    assert w2.first_seq == 201 and w2.durable_seq == 200
    assert set(crashed) <= set(synced)
    w2.close()


def test_a_writer_whose_sync_of_a_crashed_run_fails_halts_and_claims_nothing(tmp_path, monkeypatch):
    d = tmp_path / "wal"
    w = WalWriter(d, mode="none", segment_bytes=seg_bytes(64), config=CFG)
    w.append(commands(100))
    old = segments(d)[-1]
    _crash(w)
    for name in ("fsync", "fdatasync"):
        _fail(monkeypatch, name, errno.EIO, lambda fd: _path_of(fd) == old)
    with pytest.raises(Halt) as e:
        WalWriter(d, mode="group", segment_bytes=seg_bytes(64), config=CFG)
    assert e.value.errno == errno.EIO and e.value.path == old


def test_the_supervisors_line_names_the_operation_file_offset_and_errno(tmp_path):
    """What a halting process records in the control cells (numbers only) comes back as
    the supervisor's one-line reason."""
    from types import SimpleNamespace

    from shmex.engine import cells, halt
    from shmex.errors import CorruptRecord

    a = np.zeros(64, np.int64)
    ctl = SimpleNamespace(store=lambda i, v: a.__setitem__(i, v))
    cfg = SimpleNamespace(data_dir=str(tmp_path))
    seg = os.path.join(str(tmp_path), wal_layout.segment_name(3))
    halt.record(ctl, Halt("fdatasync", seg, 4368, errno.EIO, durable_seq=5), str(tmp_path))
    assert halt.describe(cfg, a) == (f"fdatasync of {seg} at offset 4368 failed: EIO (Input/output error); "
                                     f"the log is durable up to seq 5, nothing after it was acknowledged")
    spare = os.path.join(str(tmp_path), wal_layout.SPARE_NAME)
    halt.record(ctl, Halt("rotation", spare, 0, errno.ENOSPC, durable_seq=63), str(tmp_path))
    assert halt.describe(cfg, a).startswith(f"rotation of {spare} at offset 0 failed: ENOSPC")
    halt.record(ctl, CorruptRecord(seg, 208, 33, "CRC32C mismatch"), str(tmp_path))
    assert halt.describe(cfg, a) == (f"the log is corrupt at {seg} offset 208 (seq 33): `shmex verify {tmp_path}` "
                                     f"names it, `shmex repair {tmp_path}` cuts it")
    a[cells.HALT_OP] = 0
    assert "not recorded" in halt.describe(cfg, a)

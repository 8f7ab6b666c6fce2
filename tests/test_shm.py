"""shmex.shm: segment create/attach/close/unlink, header checks, registry and `shmex clean`."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import stat

import numpy as np
import posix_ipc
import pytest

from shmex import cli
from shmex.errors import AttachError, UsageError
from shmex.schema import COMMAND, REPORT
from shmex.shm import (HEADER_BYTES, Segment, SegmentExists, ViewsAlive, list_runs, list_segments,
                       new_run_id, parse_name, remove_dead_runs, segment_name)
from shmex.shm.header import HEADER
from shmex.shm.names import shm_path

FORK = mp.get_context("fork")


def test_create_attach_roundtrip(shm_run):
    seg = Segment.create(shm_run, "a", 4096, dtype=COMMAND, records=64, layout="test")
    try:
        assert seg.name == f"/shmex-{shm_run}-a"
        st = os.stat(shm_path(seg.name))
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_size == HEADER_BYTES + 4096
        w = seg.view(0, np.int64, 8)
        w[3] = 12345
        assert w.ctypes.data % 64 == 0
        other = Segment.attach(seg.name, dtype=COMMAND, layout="test", records=64)
        r = other.view(0, np.int64, 8)
        assert r[3] == 12345
        h = other.info
        assert (h.creator_pid, h.run_id, h.role, h.records, h.record_bytes) == (os.getpid(), shm_run, "a", 64, 64)
        del r, w
        other.close()
        other.close()  # idempotent
    finally:
        seg.unlink()
        seg.close()


def test_exclusive_create(shm_run):
    seg = Segment.create(shm_run, "x", 64)
    try:
        with pytest.raises(SegmentExists, match=seg.name):
            Segment.create(shm_run, "x", 64)
    finally:
        seg.unlink()
        seg.close()


def test_close_refuses_while_views_alive(shm_run):
    seg = Segment.create(shm_run, "v", 128)
    v = seg.view(0, np.uint8, 128)
    with pytest.raises(ViewsAlive, match=seg.name):
        seg.close()
    del v
    seg.unlink()
    with pytest.raises(UsageError, match="closed"):
        seg.view(0, np.uint8, 1)


def test_view_bounds_and_alignment(shm_run):
    with Segment.create(shm_run, "b", 256) as seg:
        try:
            with pytest.raises(UsageError, match="outside payload"):
                seg.view(192, np.int64, 9)
            with pytest.raises(UsageError, match="aligned"):
                seg.view(8, np.int64, 1)
            assert seg.view(8, np.int64, 1, align=8).shape == (1,)
        finally:
            seg.unlink()


@pytest.mark.parametrize("run_id, role", [("bad-run", "r"), ("", "r"), ("r", ""), ("r", "-x"), ("r", "a/b"),
                                          ("r" * 41, "x")])
def test_bad_names(run_id, role):
    with pytest.raises(UsageError):
        segment_name(run_id, role)


def test_names_parse():
    assert parse_name("/shmex-abc_1-producer-3") == ("abc_1", "producer-3")
    assert parse_name("shmex-abc") is None
    assert parse_name("sem.shmex-abc-x") is None
    assert "-" not in new_run_id()


# -- attach errors: each names the segment and what differs ----------------------------

def test_attach_missing(shm_run):
    with pytest.raises(AttachError, match=rf"/shmex-{shm_run}-nope: no such segment"):
        Segment.attach(segment_name(shm_run, "nope"))


def _patch_header(name: str, field: str, value) -> None:
    with open(shm_path(name), "r+b") as f:
        raw = bytearray(f.read(HEADER_BYTES))
        h = np.frombuffer(raw, dtype=HEADER)
        h[field] = value
        f.seek(0)
        f.write(raw)


def test_attach_wrong_version(shm_run):
    seg = Segment.create(shm_run, "ver", 64)
    try:
        _patch_header(seg.name, "version", 99)
        with pytest.raises(AttachError, match=rf"{seg.name}: segment header version 99, this shmex reads version 1"):
            Segment.attach(seg.name)
    finally:
        seg.unlink()
        seg.close()


def test_attach_wrong_layout_version_and_dtype(shm_run):
    seg = Segment.create(shm_run, "lay", 64, dtype=COMMAND, layout="ring", layout_version=1)
    try:
        with pytest.raises(AttachError) as e:
            Segment.attach(seg.name, dtype=REPORT, layout="ring", layout_version=2)
        msg = str(e.value)
        assert seg.name in msg and "ring layout version 1, this shmex reads 2" in msg
        assert "record dtype differs" in msg and "client_id" in msg and "contra_client_id" in msg
        with pytest.raises(AttachError, match="layout 'ring', expected 'wal'"):
            Segment.attach(seg.name, layout="wal")
    finally:
        seg.unlink()
        seg.close()


def test_attach_wrong_size(shm_run):
    seg = Segment.create(shm_run, "size", 64)
    try:
        os.truncate(shm_path(seg.name), HEADER_BYTES + 4096)  # grown behind the header's back
        with pytest.raises(AttachError, match=rf"{seg.name}: size: header says {HEADER_BYTES + 64} bytes, "
                                              rf"the segment has {HEADER_BYTES + 4096}"):
            Segment.attach(seg.name)
    finally:
        seg.unlink()
        seg.close()


def test_attach_foreign(shm_run):
    name = segment_name(shm_run, "foreign")
    mem = posix_ipc.SharedMemory(name, flags=posix_ipc.O_CREX, mode=0o600, size=HEADER_BYTES + 64)
    os.pwrite(mem.fd, b"NOTOURS!" + b"\x07" * 100, 0)
    mem.close_fd()
    try:
        with pytest.raises(AttachError, match=rf"{name}: not a shmex segment \(magic b'NOTOURS!'"):
            Segment.attach(name)
        os.truncate(shm_path(name), 10)
        with pytest.raises(AttachError, match=rf"{name}: 10 bytes, smaller than a shmex header"):
            Segment.attach(name)
    finally:
        posix_ipc.unlink_shared_memory(name)


# -- registry and clean ---------------------------------------------------------------------

def _create_and_exit(run_id: str, roles: list[str]) -> None:
    for role in roles:
        seg = Segment.create(run_id, role, 256)
        seg.close()
    os._exit(0)  # dies without unlinking: a crashed supervisor


def _create_and_wait(run_id: str, role: str, ready, stop) -> None:
    seg = Segment.create(run_id, role, 256)
    ready.set()
    stop.wait(60)
    seg.close()
    os._exit(0)


def _attach_and_wait(name: str, ready, stop) -> None:
    seg = Segment.attach(name)
    ready.set()
    stop.wait(60)
    seg.close()
    os._exit(0)


def test_clean_removes_only_dead_runs(capsys):
    dead, live_creator, live_user, mine = (new_run_id() for _ in range(4))
    procs, stop = [], FORK.Event()
    try:
        # dead: the creator exited without unlinking; nobody has it open
        p = FORK.Process(target=_create_and_exit, args=(dead, ["matcher", "in-0"]))
        p.start()
        p.join(30)
        # live_creator: its creator runs (and holds it open)
        ready = FORK.Event()
        p = FORK.Process(target=_create_and_wait, args=(live_creator, "journal", ready, stop))
        p.start()
        procs.append(p)
        assert ready.wait(30)
        # live_user: the creator died, but another process still has it open
        p = FORK.Process(target=_create_and_exit, args=(live_user, ["out"]))
        p.start()
        p.join(30)
        ready = FORK.Event()
        p = FORK.Process(target=_attach_and_wait, args=(segment_name(live_user, "out"), ready, stop))
        p.start()
        procs.append(p)
        assert ready.wait(30)
        # mine: created by this (live) process, closed but not unlinked
        Segment.create(mine, "x", 64).close()

        runs = {r.run_id: r for r in list_runs()}
        assert not runs[dead].alive and runs[live_creator].alive and runs[live_user].alive and runs[mine].alive

        assert cli.main(["clean", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"would remove /shmex-{dead}-matcher" in out and f"would remove /shmex-{dead}-in-0" in out
        assert len(list_segments(dead)) == 2  # dry run removed nothing

        assert cli.main(["clean"]) == 0
        out = capsys.readouterr().out
        assert f"removed /shmex-{dead}-matcher" in out and f"removed /shmex-{dead}-in-0" in out
        for keep in (live_creator, live_user, mine):
            assert keep not in out
        assert list_segments(dead) == []
        assert len(list_segments(live_creator)) == len(list_segments(live_user)) == len(list_segments(mine)) == 1

        # once every process of live_user is gone, it is dead too
        stop.set()
        for p in procs:
            p.join(30)
        assert [s.name for s in remove_dead_runs(run_id=live_user)] == [f"/shmex-{live_user}-out"]
        assert [s.name for s in remove_dead_runs(run_id=live_creator)] == [f"/shmex-{live_creator}-journal"]
        assert remove_dead_runs(run_id=mine) == []  # its creator (this process) lives
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(30)
        for run in (dead, live_creator, live_user, mine):
            for s in list_segments(run):
                posix_ipc.unlink_shared_memory(s.name)


def test_clean_incomplete_segment_respects_grace(monkeypatch):
    """A header-less segment (creator killed mid-create) is removed only after a grace period."""
    run = new_run_id()
    name = segment_name(run, "half")
    mem = posix_ipc.SharedMemory(name, flags=posix_ipc.O_CREX, mode=0o600, size=HEADER_BYTES + 64)
    mem.close_fd()
    try:
        assert remove_dead_runs(run_id=run) == []  # fresh: may be being created
        from shmex.shm import registry
        monkeypatch.setattr(registry, "INCOMPLETE_GRACE_S", -1.0)
        removed = remove_dead_runs(run_id=run)
        assert [s.name for s in removed] == [name] and "not a shmex segment" in removed[0].problem
    finally:
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass


def test_attach_refuses_a_segment_owned_by_another_user(shm_run):
    """Handing the segment to another uid needs root (as the suite runs here and in CI)."""
    seg = Segment.create(shm_run, "owner", 64)
    try:
        os.chown(shm_path(seg.name), 4242, -1)
        with pytest.raises(AttachError, match=rf"{seg.name}: owned by uid 4242, not this user"):
            Segment.attach(seg.name)
    finally:
        seg.unlink()
        seg.close()

"""The segments on this machine, grouped by run; which runs are dead; removing those.

A run is **alive** while any process has one of its segments open (the whole-file
shared lock every opener holds; the kernel drops it when the process dies, SIGKILL
included) or while the creator recorded in any of its headers is still running (a
live supervisor may re-attach). A run is **dead** when neither holds: then, and only
then, `remove_dead_runs` unlinks its segments. Segments without a complete header
(a creator killed mid-create) count as dead only when unused and older than a grace
period, so a create in progress is never touched.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field

import psutil

from shmex.errors import AttachError
from shmex.shm import _locks
from shmex.shm.header import HEADER_BYTES
from shmex.shm.names import SHM_DIR, parse_name
from shmex.shm.segment import HeaderInfo, unlink

INCOMPLETE_GRACE_S = 10.0


@dataclass
class SegmentInfo:
    """What `list_segments` found about one segment."""
    name: str
    run_id: str
    role: str
    size_bytes: int
    in_use: bool
    header: HeaderInfo | None
    problem: str | None = None  # why the header could not be read, if it could not

    @property
    def creator_pid(self) -> int | None:
        return None if self.header is None else self.header.creator_pid


@dataclass
class RunInfo:
    """One run's segments and the verdict on it."""
    run_id: str
    segments: list[SegmentInfo] = field(default_factory=list)
    alive: bool = False
    why: str = ""


def list_segments(run_id: str | None = None) -> list[SegmentInfo]:
    """Every shmex segment of this user in /dev/shm (of one run, if given), by name."""
    out = []
    uid = os.getuid()
    for entry in sorted(os.listdir(SHM_DIR)):
        parsed = parse_name(entry)
        if parsed is None or (run_id is not None and parsed[0] != run_id):
            continue
        path = os.path.join(SHM_DIR, entry)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # removed since listdir
        except PermissionError:
            continue  # another user's: not ours to judge
        try:
            st = os.fstat(fd)
            if st.st_uid != uid:
                continue
            raw = os.pread(fd, HEADER_BYTES, 0)
            header, problem = None, None
            if len(raw) < HEADER_BYTES:
                problem = f"{len(raw)} bytes, smaller than a header"
            else:
                try:
                    header = HeaderInfo.decode("/" + entry, raw)
                except AttachError as e:
                    problem = str(e)
            out.append(SegmentInfo(name="/" + entry, run_id=parsed[0], role=parsed[1],
                                   size_bytes=st.st_size, in_use=_locks.in_use(fd),
                                   header=header, problem=problem))
        finally:
            os.close(fd)
    return out


def _creator_alive(h: HeaderInfo) -> bool:
    """The creator pid runs and started before the segment was made (not a reused pid)."""
    try:
        p = psutil.Process(h.creator_pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return p.create_time() * 1e9 <= h.created_ns + 1e9
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def list_runs(run_id: str | None = None) -> list[RunInfo]:
    """Segments grouped by run, each run judged alive or dead (with the reason)."""
    runs: dict[str, RunInfo] = {}
    for s in list_segments(run_id):
        runs.setdefault(s.run_id, RunInfo(s.run_id)).segments.append(s)
    now = time.time()
    for run in runs.values():
        reasons = []
        for s in run.segments:
            if s.in_use:
                reasons.append(f"{s.name} is open by a live process")
            elif s.header is not None and _creator_alive(s.header):
                reasons.append(f"creator pid {s.header.creator_pid} of {s.name} is running")
            elif s.header is None and _age_s(s.name, now) < INCOMPLETE_GRACE_S:
                reasons.append(f"{s.name} has no complete header yet (may be being created)")
        run.alive = bool(reasons)
        run.why = "; ".join(reasons) if reasons else "no process has its segments open; creators gone"
    return sorted(runs.values(), key=lambda r: r.run_id)


def _age_s(name: str, now: float) -> float:
    try:
        return now - os.stat(os.path.join(SHM_DIR, name.lstrip("/"))).st_mtime
    except FileNotFoundError:
        return float("inf")


def remove_dead_runs(*, dry_run: bool = False, run_id: str | None = None) -> list[SegmentInfo]:
    """Unlink every segment of every dead run (or list them, with dry_run); returns them.

    Each segment is re-checked for users just before it is unlinked.
    """
    removed = []
    for run in list_runs(run_id):
        if run.alive:
            continue
        for s in run.segments:
            if dry_run or _unlink_if_unused(s.name):
                removed.append(s)
    return removed


def _unlink_if_unused(name: str) -> bool:
    """Unlink while holding the exclusive lock, so that no attach slips in between the
    check and the unlink (an attacher waits for the lock, then finds the name gone)."""
    try:
        fd = os.open(os.path.join(SHM_DIR, name.lstrip("/")), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # someone opened it since the run was judged dead
        return unlink(name, missing_ok=True)
    finally:
        os.close(fd)

"""Segment: one named POSIX shared-memory segment, mapped into numpy arrays.

Lifecycle::

    seg = Segment.create(run_id, "journal", payload_bytes, dtype=COMMAND, records=n)
    ... seg.view(offset, dtype, count) ...   # numpy views into the payload
    seg.close()     # drop views, unmap, close the descriptor (releases its locks)
    seg.unlink()    # remove the name (the creator or the supervisor does this, once)

`close` and `unlink` are separate: unlinking removes the name while mapped processes
go on; closing unmaps this process's copy. `mmap.close()` refuses while numpy views
of the mapping exist, so every view is derived from one base array the segment owns,
and `close()` drops that base; a view kept elsewhere makes `close()` raise ViewsAlive.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass

import numpy as np
import posix_ipc

from shmex.errors import AttachError, ShmexError, UsageError
from shmex.schema import dtype_digest
from shmex.shm import _locks
from shmex.shm.header import (CACHE_LINE, HEADER, HEADER_BYTES, MAGIC, SEGMENT_VERSION,
                              descr_text)
from shmex.shm.names import check_role, check_run_id, segment_name, shm_path


class ViewsAlive(ShmexError):
    """close() found numpy views of the mapping still referenced elsewhere."""


class SegmentExists(ShmexError):
    """create() found a segment of that name already there."""


@dataclass(frozen=True)
class HeaderInfo:
    """A decoded segment header."""
    name: str
    version: int
    header_bytes: int
    total_bytes: int
    creator_pid: int
    created_ns: int
    records: int
    record_bytes: int
    layout: str
    layout_version: int
    digest: bytes
    run_id: str
    role: str
    descr: str

    @classmethod
    def decode(cls, name: str, raw: bytes) -> "HeaderInfo":
        h = np.frombuffer(raw[:HEADER_BYTES], dtype=HEADER)[0]
        if bytes(h["magic"]) != MAGIC:
            raise AttachError(f"{name}: not a shmex segment (magic {bytes(h['magic'])!r}, "
                              f"expected {MAGIC!r}): foreign, or its creator died before finishing it")
        return cls(name=name, version=int(h["version"]), header_bytes=int(h["header_bytes"]),
                   total_bytes=int(h["total_bytes"]), creator_pid=int(h["creator_pid"]),
                   created_ns=int(h["created_ns"]), records=int(h["records"]),
                   record_bytes=int(h["record_bytes"]), layout=h["layout"].decode("ascii", "replace"),
                   layout_version=int(h["layout_version"]), digest=bytes(h["digest"]),
                   run_id=h["run_id"].decode("ascii", "replace"), role=h["role"].decode("ascii", "replace"),
                   descr=h["descr"].decode("ascii", "replace"))


class Segment:
    """A mapped shmex segment: header + payload. Create or attach; close; unlink."""

    def __init__(self, name: str, mem: posix_ipc.SharedMemory, mm: mmap.mmap, info: HeaderInfo):
        self.name = name
        self.info = info
        self._mem = mem
        self._mm = mm
        self._base: np.ndarray | None = np.frombuffer(mm, dtype=np.uint8)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, run_id: str, role: str, payload_bytes: int, *, dtype: np.dtype | None = None,
               records: int = 0, layout: str = "raw", layout_version: int = 1) -> "Segment":
        """Create `/shmex-<run_id>-<role>` exclusively (mode 0600), zeroed, header written."""
        name = segment_name(run_id, role)
        if payload_bytes < 0:
            raise UsageError(f"payload_bytes {payload_bytes}: must be >= 0")
        if len(layout.encode("ascii")) > 8:
            raise UsageError(f"layout {layout!r}: at most 8 ASCII characters")
        descr = descr_text(dtype)
        total = HEADER_BYTES + max(payload_bytes, 1)
        try:
            mem = posix_ipc.SharedMemory(name, flags=posix_ipc.O_CREX, mode=0o600, size=total)
        except posix_ipc.ExistentialError:
            raise SegmentExists(f"{name}: already exists (run ids must be unique per run; "
                                f"`shmex clean` removes segments of dead runs)") from None
        try:
            _locks.hold_shared(mem.fd)  # marks the segment in use before anything else
            mm = mmap.mmap(mem.fd, total)
            h = np.frombuffer(mm, dtype=HEADER, count=1)
            h["version"] = SEGMENT_VERSION
            h["header_bytes"] = HEADER_BYTES
            h["total_bytes"] = total
            h["creator_pid"] = os.getpid()
            h["created_ns"] = time.time_ns()
            h["records"] = records
            h["record_bytes"] = 0 if dtype is None else dtype.itemsize
            h["layout"] = layout.encode("ascii")
            h["layout_version"] = layout_version
            h["digest"] = b"\0" * 16 if dtype is None else dtype_digest(dtype)
            h["run_id"] = check_run_id(run_id).encode("ascii")
            h["role"] = check_role(role).encode("ascii")
            h["descr"] = descr
            h["magic"] = MAGIC  # last: a reader that sees the magic sees the whole header
            info = HeaderInfo.decode(name, bytes(h.tobytes()))
            del h
        except BaseException:
            posix_ipc.unlink_shared_memory(name)
            mem.close_fd()
            raise
        return cls(name, mem, mm, info)

    @classmethod
    def attach(cls, name: str, *, dtype: np.dtype | None = None, layout: str | None = None,
               layout_version: int | None = None, records: int | None = None,
               read_only: bool = False) -> "Segment":
        """Open and map an existing segment; every check that fails is named in one AttachError.
        read_only: opened and mapped for reading only (its views are read-only arrays; a
        write through the mapping is a fault, not a change)."""
        try:
            mem = posix_ipc.SharedMemory(name, read_only=read_only)
        except posix_ipc.ExistentialError:
            raise AttachError(f"{name}: no such segment (never created, or already unlinked)") from None
        except posix_ipc.PermissionsError:
            raise AttachError(f"{name}: permission denied (segments are mode 0600: another user's run?)") from None
        try:
            _locks.hold_shared(mem.fd)
            st = os.fstat(mem.fd)
            try:
                same = os.stat(shm_path(name)).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if not same:
                raise AttachError(f"{name}: removed while attaching (by `shmex clean` or its run's supervisor)")
            if st.st_uid != os.geteuid():
                raise AttachError(f"{name}: owned by uid {st.st_uid}, not this user ({os.geteuid()}): "
                                  f"not a segment of our own run")
            size = st.st_size
            if size < HEADER_BYTES:
                raise AttachError(f"{name}: {size} bytes, smaller than a shmex header ({HEADER_BYTES}): "
                                  f"foreign or truncated")
            mm = mmap.mmap(mem.fd, size, prot=mmap.PROT_READ if read_only else mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                info = HeaderInfo.decode(name, mm[:HEADER_BYTES])
                diffs = _differences(info, size, dtype, layout, layout_version, records)
                if diffs:
                    raise AttachError(f"{name}: " + "; ".join(diffs))
            except BaseException:
                mm.close()
                raise
        except BaseException:
            mem.close_fd()
            raise
        return cls(name, mem, mm, info)

    # -- access -------------------------------------------------------------------------
    @property
    def fd(self) -> int:
        return self._mem.fd

    @property
    def payload_bytes(self) -> int:
        return self.info.total_bytes - HEADER_BYTES

    def view(self, offset: int, dtype, count: int, *, align: int = CACHE_LINE) -> np.ndarray:
        """A numpy view of `count` items of `dtype` at payload `offset` (aligned to `align`)."""
        if self._base is None:
            raise UsageError(f"{self.name}: closed")
        dt = np.dtype(dtype)
        if offset % align:
            raise UsageError(f"{self.name}: offset {offset} not aligned to {align} bytes")
        start = HEADER_BYTES + offset
        end = start + count * dt.itemsize
        if offset < 0 or count < 0 or end > self.info.total_bytes:
            raise UsageError(f"{self.name}: view [{offset}, {end - HEADER_BYTES}) outside payload "
                             f"of {self.payload_bytes} bytes")
        return self._base[start:end].view(dt)

    @property
    def closed(self) -> bool:
        return self._base is None

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Unmap and close the descriptor (dropping this process's locks). Idempotent.

        Raises ViewsAlive if numpy views handed out by `view` are still referenced; the
        descriptor is closed anyway, and the mapping lives until those views are dropped.
        """
        if self._base is None:
            return
        self._base = None
        mm, self._mm = self._mm, None  # if views remain, they keep the mmap (and its dup'd fd) alive
        try:
            mm.close()
        except BufferError:
            raise ViewsAlive(f"{self.name}: numpy views of the segment are still referenced; "
                             f"drop them before close() (the mapping stays until they go)") from None
        finally:
            if self._mem.fd >= 0:
                self._mem.close_fd()

    def unlink(self) -> None:
        """Remove the segment's name. Mappings stay valid until every process closes."""
        unlink(self.name)

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.info.total_bytes} bytes"
        return f"Segment({self.name!r}, {self.info.layout} v{self.info.layout_version}, {state})"


def unlink(name: str, *, missing_ok: bool = False) -> bool:
    """Remove a segment name; True if it was there."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        if missing_ok:
            return False
        raise AttachError(f"{name}: no such segment to unlink") from None
    return True


def _differences(info: HeaderInfo, size: int, dtype, layout, layout_version, records) -> list[str]:
    """What differs between a header, the segment and what the caller expects."""
    out = []
    if info.version != SEGMENT_VERSION:
        out.append(f"segment header version {info.version}, this shmex reads version {SEGMENT_VERSION}")
        return out  # the other fields may mean something else in another version
    if info.header_bytes != HEADER_BYTES:
        out.append(f"header_bytes {info.header_bytes}, expected {HEADER_BYTES}")
    if info.total_bytes != size:
        out.append(f"size: header says {info.total_bytes} bytes, the segment has {size}")
    if layout is not None and info.layout != layout:
        out.append(f"layout {info.layout!r}, expected {layout!r}")
    if layout_version is not None and info.layout_version != layout_version:
        out.append(f"{info.layout} layout version {info.layout_version}, this shmex reads {layout_version}")
    if records is not None and info.records != records:
        out.append(f"records {info.records}, expected {records}")
    if dtype is not None:
        dt = np.dtype(dtype)
        if info.digest != dtype_digest(dt):
            out.append(f"record dtype differs: segment holds {info.descr}, "
                       f"caller expects {descr_text(dt).decode()}")
    return out

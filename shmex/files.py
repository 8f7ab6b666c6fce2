"""File-system steps shared by the WAL and the snapshots.

Order flow is private: every file shmex writes in a data directory is FILE_MODE (0600)
and every directory it creates DIR_MODE (0700).
"""

from __future__ import annotations

import ctypes
import errno
import os

FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path, data: bytes) -> None:
    """Replace the file at `path` with `data`, all or nothing and durable: a temp file
    beside it (FILE_MODE), written whole and fsynced, renamed over it, the directory
    fsynced. A reader sees the old content or the new, never part of either."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:                       # os.write may write less than asked
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def make_private_dir(path) -> None:
    """Create `path` (and missing parents) as DIR_MODE; an existing one is left as it is."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (bytes or a contiguous array) at ``offset``: a short write is
    continued from where it stopped (a nearly full disk writes what fits, and the next
    call then says ENOSPC); a call that writes nothing raises OSError."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"pwrite wrote nothing at offset {offset + done}")
        done += n


_SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_libc.sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Start writing ``nbytes`` at ``offset`` to the disk without waiting for it
    (Linux sync_file_range, SYNC_FILE_RANGE_WRITE): a later fsync of that range then has
    little left to wait for. It makes nothing durable by itself (no metadata, no cache
    flush). OSError on failure."""
    if _libc.sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"sync_file_range: {os.strerror(e)}")

"""File locks on a segment's descriptor, released by the kernel when a process dies.

- Whole-file ``flock(LOCK_SH)``: held by every process that has the segment open, so
  `shmex clean` can tell a segment in use (the lock is held) from an orphan.
- Open-file-description byte locks (``F_OFD_SETLK``) on single bytes: one per exclusive
  role (a ring's producer, its consumer). A SIGKILLed holder's lock disappears with it.
"""

from __future__ import annotations

import errno
import fcntl
import struct

_FLOCK = "hhqqixxxx"  # struct flock on Linux x86-64/aarch64: type, whence, start, len, pid


def hold_shared(fd: int) -> None:
    """Mark the segment in use by this open file (blocks only while `clean` looks at it)."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def in_use(fd: int) -> bool:
    """True if any open file holds the shared lock (tries, and drops, an exclusive one)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def try_lock_byte(fd: int, byte: int) -> bool:
    """Take an exclusive OFD lock on one byte; False if another open file holds it."""
    arg = struct.pack(_FLOCK, fcntl.F_WRLCK, 0, byte, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, arg)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def unlock_byte(fd: int, byte: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_UNLCK, 0, byte, 1, 0))


def byte_locked(fd: int, byte: int) -> bool:
    """True if an open file other than `fd`'s holds the byte lock."""
    got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, 0, byte, 1, 0))
    return struct.unpack(_FLOCK, got)[0] != fcntl.F_UNLCK

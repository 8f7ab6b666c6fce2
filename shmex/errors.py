"""One error hierarchy. Each error carries what an operator needs to act on it."""

from __future__ import annotations


class ShmexError(Exception):
    """Base of every error shmex raises on purpose."""


class UsageError(ShmexError):
    """A caller passed something malformed: names the field and the value."""


class SchemaMismatch(ShmexError):
    """Records of one dtype were offered where another was expected."""

    def __init__(self, where: str, expected, found):
        super().__init__(f"{where}: expected records of dtype {expected}, found {found}")
        self.where, self.expected, self.found = where, expected, found


class AttachError(ShmexError):
    """A shared-memory segment is missing, foreign, of another version or another size."""


class RingFull(ShmexError):
    """A producer asked not to wait found the ring full (back-pressure, nothing lost)."""


class CorruptRecord(ShmexError):
    """A WAL record or snapshot failed its check: names file, offset, seq and what is wrong."""

    def __init__(self, path, offset: int, seq: int | None, what: str):
        where = f"{path} at offset {offset}" + (f" (seq {seq})" if seq is not None else "")
        super().__init__(f"{where}: {what}")
        self.path, self.offset, self.seq, self.what = path, offset, seq, what


class CannotOpen(ShmexError):
    """A file or directory is missing or unreadable."""


class Halt(ShmexError):
    """A durability fault: the process fail-stops. Names the operation, file, offset and
    errno; ``durable_seq`` is where the log's durability ends (None: not known)."""

    def __init__(self, op: str, path, offset: int, errno: int, detail: str = "",
                 durable_seq: int | None = None):
        import errno as errnos
        import os

        name = errnos.errorcode.get(errno, f"errno {errno}")
        text = f"{op} of {path} at offset {offset} failed: {name} ({detail or os.strerror(errno)})"
        if durable_seq is not None:
            text += f"; the log is durable up to seq {durable_seq}, nothing after it was acknowledged"
        super().__init__(text)
        self.op, self.path, self.offset, self.errno, self.durable_seq = op, str(path), offset, errno, durable_seq

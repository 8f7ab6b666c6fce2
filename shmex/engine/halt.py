"""Fail-stop on a durability fault, through the control segment.

A process that hits a fault which breaks durability (a failed fdatasync, ENOSPC, a log
it must not cut) records what failed (`record`) and exits with HALT_STATUS. The
supervisor never restarts it: after a failed fdatasync the page cache may show records
the disk does not hold, and a successor would count them durable. It stops the engine
with `describe`'s one line, which names the operation, the file, the offset and the
errno (the cells hold numbers only: the file is a segment index or a named file of the
data directory).
"""

from __future__ import annotations

import errno as errnos
import os

from shmex.engine import cells
from shmex.errors import CorruptRecord, Halt
from shmex.wal import layout as wal_layout

HALT_STATUS = 3
CORRUPT = "corrupt log"
FENCED = "fenced"   # the replicator: another engine holds the lease, or the stream went on without us
OPS = ("", "write", "fdatasync", "fsync", "prefill", "spare", "rotation", "manifest", "cut", "retire", CORRUPT,
       FENCED)
FILE_SPARE, FILE_MANIFEST, FILE_OTHER = -1, -2, -3


def record(ctl, err: Halt | CorruptRecord, data_dir) -> None:
    """Store what ``err`` names in the HALT_* cells; HALT_OP last (release): a reader that
    sees it sees the rest."""
    if isinstance(err, Halt):
        op, code, seq = err.op, err.errno, err.durable_seq
    else:
        op, code, seq = CORRUPT, 0, err.seq
    ctl.store(cells.HALT_ERRNO, code)
    ctl.store(cells.HALT_FILE, _file_code(str(err.path)))
    ctl.store(cells.HALT_OFFSET, err.offset)
    ctl.store(cells.HALT_SEQ, -1 if seq is None else seq)
    ctl.store(cells.HALT_OP, OPS.index(op) if op in OPS else 0)


def describe(cfg, a) -> str:
    """The one line the supervisor stops the engine with, from control cells ``a``."""
    op = int(a[cells.HALT_OP])
    if not 0 < op < len(OPS):
        return f"exit status {HALT_STATUS} (a durability fault; what failed was not recorded)"
    path = _file_path(cfg.data_dir, int(a[cells.HALT_FILE]))
    off, seq, code = int(a[cells.HALT_OFFSET]), int(a[cells.HALT_SEQ]), int(a[cells.HALT_ERRNO])
    if OPS[op] == FENCED:
        return (f"this engine is no longer the primary (another engine holds the lease or the stream "
                f"{cfg.nats_stream} went on without it, at seq {seq}): it stops accepting orders")
    if OPS[op] == CORRUPT:
        return (f"the log is corrupt at {path} offset {off}" + (f" (seq {seq})" if seq >= 0 else "")
                + f": `shmex verify {cfg.data_dir}` names it, `shmex repair {cfg.data_dir}` cuts it")
    name = errnos.errorcode.get(code, f"errno {code}")
    durable = (f"the log is durable up to seq {seq}, nothing after it was acknowledged" if seq >= 0
               else "nothing it had not synced was acknowledged")
    return f"{OPS[op]} of {path} at offset {off} failed: {name} ({os.strerror(code)}); {durable}"


def record_fenced(ctl, seq: int) -> None:
    ctl.store(cells.HALT_SEQ, seq)
    ctl.store(cells.HALT_OP, OPS.index(FENCED))


def _file_code(path: str) -> int:
    name = os.path.basename(path)
    index = wal_layout.parse_segment_name(name)
    if index is not None:
        return index
    if name == wal_layout.SPARE_NAME:
        return FILE_SPARE
    if name.startswith(wal_layout.MANIFEST):
        return FILE_MANIFEST
    return FILE_OTHER


def _file_path(data_dir: str, code: int) -> str:
    if code >= 0:
        return os.path.join(data_dir, wal_layout.segment_name(code))
    names = {FILE_SPARE: wal_layout.SPARE_NAME, FILE_MANIFEST: wal_layout.MANIFEST}
    return os.path.join(data_dir, names[code]) if code in names else data_dir

"""Shared pieces for the WAL, snapshot and recovery tests: small logs, byte surgery."""

from __future__ import annotations

import os
import shutil

import numpy as np

from shmex.bench.wal_bench import workload
from shmex.schema import COMMAND
from shmex.wal import layout as wal_layout
from shmex.wal.writer import WalWriter

CFG = dict(symbols=2, price_lo=1000, price_hi=1200, capacity=4096)


def seg_bytes(slots: int) -> int:
    return wal_layout.HEADER_BYTES + slots * wal_layout.SLOT_BYTES


def commands(n: int, seed: int = 7, first_seq: int = 1) -> np.ndarray:
    return workload(n, seed, symbols=CFG["symbols"], band=(CFG["price_lo"], CFG["price_hi"]),
                    first_seq=first_seq)


def write_log(d, cmds, *, slots=16, mode="group", seal=True, chunk=5, **kw) -> WalWriter:
    w = WalWriter(d, mode=mode, segment_bytes=seg_bytes(slots), config=CFG, **kw)
    for i in range(0, len(cmds), chunk):
        w.append(cmds[i:i + chunk])
        w.poll()
    w.close(seal=seal)
    return w


def read_all(d):
    from shmex.wal.reader import WalReader
    r = WalReader(d)
    return join(r.commands()), r.end


def join(batches) -> np.ndarray:
    """Concatenate COMMAND batches keeping the exact 64-byte dtype (np.concatenate of
    structured arrays may return a packed dtype without the padding bytes)."""
    parts = [b.copy() for b in batches]
    out = np.zeros(sum(len(p) for p in parts), dtype=COMMAND)
    i = 0
    for p in parts:
        out[i:i + len(p)] = p
        i += len(p)
    return out


def segments(d) -> list[str]:
    return sorted(os.path.join(d, n) for n in os.listdir(d) if wal_layout.parse_segment_name(n) is not None)


def copy_dir(src, dst) -> None:
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def slot_kinds(path) -> list[tuple[int, int]]:
    """(kind, seq) of every non-empty slot of a pristine segment, in order."""
    data = open(path, "rb").read()
    out = []
    for off in range(wal_layout.HEADER_BYTES, len(data) - wal_layout.SLOT_BYTES + 1, wal_layout.SLOT_BYTES):
        w0 = int.from_bytes(data[off:off + 8], "little")
        if w0 == 0:
            break
        out.append(((w0 >> 16) & 0xFFFF, int.from_bytes(data[off + 8:off + 16], "little", signed=True)))
    return out


def last_intact_seq(kinds: list[tuple[int, int]], byte_offset: int, before: int) -> int:
    """The last command seq whose slot ends at or before ``byte_offset`` in a segment whose
    earlier segments end at seq ``before``."""
    seq = before
    for i, (kind, s) in enumerate(kinds):
        if wal_layout.HEADER_BYTES + (i + 1) * wal_layout.SLOT_BYTES > byte_offset:
            break
        if kind == wal_layout.REC_COMMAND:
            seq = s
    return seq

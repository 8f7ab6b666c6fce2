"""The header every shmex shared-memory segment starts with (Aeron CnC style).

It is checked by `attach` before anything else in the segment is read. The creator
writes every field first and the magic last, so a reader that sees the magic sees a
complete header.

::

     0        8        12             16            24            32
    +--------+--------+--------------+-------------+-------------+
    | magic  | version| header_bytes | total_bytes | creator_pid |
    +--------+--------+--------------+-------------+-------------+
    32          40        48             52               56       64
    +-----------+---------+--------------+----------------+--------+
    | created_ns| records | record_bytes | layout_version | layout |
    +-----------+---------+--------------+----------------+--------+
    64       80       128     192                          960     1024
    +--------+--------+-------+----------------------------+-------+
    | digest | run_id | role  | descr (repr of dtype.descr)| spare |
    +--------+--------+-------+----------------------------+-------+
    1024: payload (64-byte aligned; the mapping itself is page aligned)

``created_ns`` is wall-clock time (time.time_ns), used only to tell a live creator
from a later process that reused its pid.
"""

from __future__ import annotations

import numpy as np

MAGIC = b"SHMEXSEG"
SEGMENT_VERSION = 1
HEADER_BYTES = 1024
CACHE_LINE = 64
DESCR_BYTES = 768

HEADER = np.dtype({
    "names": ["magic", "version", "header_bytes", "total_bytes", "creator_pid", "created_ns",
              "records", "record_bytes", "layout_version", "layout", "digest", "run_id",
              "role", "descr"],
    "formats": ["S8", "<u4", "<u4", "<u8", "<i8", "<i8",
                "<i8", "<u4", "<u4", "S8", "S16", "S48",
                "S64", f"S{DESCR_BYTES}"],
    "offsets": [0, 8, 12, 16, 24, 32, 40, 48, 52, 56, 64, 80, 128, 192],
    "itemsize": HEADER_BYTES,
})
assert HEADER.itemsize == HEADER_BYTES
assert HEADER.fields["descr"][1] + DESCR_BYTES <= HEADER_BYTES


def descr_text(dt: np.dtype | None) -> bytes:
    """The ASCII text stored for a record dtype (empty for raw segments)."""
    if dt is None:
        return b""
    text = repr((dt.descr, dt.itemsize)).encode("ascii")
    if len(text) > DESCR_BYTES:
        raise ValueError(f"dtype description is {len(text)} bytes; the header holds {DESCR_BYTES}")
    return text

"""WAL bytes: segment file header, record slot, control payloads. Offsets only, no logic.

A log directory::

    DIR/manifest.json          runs: id, config, first seq; sealed: last seq, records, digest
    DIR/wal-00000000.seg       segments, preallocated to SEGMENT_BYTES, named by index
    DIR/wal-00000001.seg
    DIR/snapshots/             see shmex.snapshot

A segment file::

    0                 128                208                288
    +-----------------+------------------+------------------+-- ... --+-------------+
    | SEGMENT_HEADER  | slot 0           | slot 1           |         | zeros       |
    +-----------------+------------------+------------------+-- ... --+-------------+

Every slot is 80 bytes: a 16-byte record header, then a 64-byte payload (a COMMAND from
shmex.schema, or one of the control payloads below). Fixed slots put record i of a
segment at ``HEADER_BYTES + i * SLOT_BYTES``, so a scanner never has to trust a length to
find the next record, and a torn tail cannot make it skip into the middle of one::

    0       2       4                8                16                          80
    +-------+-------+----------------+----------------+---------------------------+
    | len   | kind  | crc32c         | seq (i8)       | payload (len = 64 bytes)  |
    +-------+-------+----------------+----------------+---------------------------+

``crc32c`` covers all 80 bytes with the crc field read as zero. An all-zero header is
the end of the data (the preallocated remainder); a zero header before non-zero bytes
is a torn write. Seq rule: a COMMAND record carries the next seq (no gaps); a control
record carries the seq of the last command before it (RUN_START: first seq - 1).

All words are little-endian; the scanner reads a slot as ten u64 words:
word 0 = len | kind << 16 | crc << 32, word 1 = seq, words 2..9 = payload.
"""

from __future__ import annotations

import numpy as np

from shmex.schema import COMMAND, RECORD_BYTES, dtype_digest

MAGIC = b"SHMEXWAL"
VERSION = 1
HEADER_BYTES = 128
REC_HEADER_BYTES = 16
PAYLOAD_BYTES = RECORD_BYTES  # 64
SLOT_BYTES = REC_HEADER_BYTES + PAYLOAD_BYTES  # 80
SLOT_WORDS = SLOT_BYTES // 8
HEADER_WORDS = HEADER_BYTES // 8
SEGMENT_BYTES = 64 << 20  # default; a run may choose another (kept in the header)
MIN_SEGMENT_BYTES = HEADER_BYTES + 4 * SLOT_BYTES
COMMAND_DIGEST = dtype_digest(COMMAND)

# record kinds (kernels read these module ints as constants)
REC_COMMAND = 1
REC_RUN_START = 2
REC_SNAPSHOT = 3
REC_RUN_SEALED = 4
REC_RUN_CONFIG = 5     # right after a RUN_START: the matcher config of the run (CTRL_CONFIG)
REC_MAX = REC_RUN_CONFIG

SEGMENT_HEADER = np.dtype({
    "names": ["magic", "version", "header_bytes", "slot_bytes", "payload_bytes",
              "dtype_digest", "run_id", "segment", "first_seq", "size_bytes",
              "created_ns", "pid", "header_crc"],
    "formats": ["S8", "<u4", "<u4", "<u4", "<u4", "V16", "V16", "<u8", "<i8", "<u8",
                "<i8", "<u4", "<u4"],
    "offsets": [0, 8, 12, 16, 20, 24, 40, 56, 64, 72, 80, 88, 120],
    "itemsize": HEADER_BYTES,
})
HEADER_CRC_BYTES = 120  # header_crc covers bytes [0, 120)

# control payloads: 64 bytes each, in the payload of a REC_RUN_START / REC_RUN_SEALED /
# REC_SNAPSHOT / REC_RUN_CONFIG record.
CTRL_RUN = np.dtype({
    "names": ["run_id", "first_seq", "last_seq", "records", "time_ns", "digest"],
    "formats": ["V16", "<i8", "<i8", "<i8", "<i8", "<u4"],
    "offsets": [0, 16, 24, 32, 40, 48],
    "itemsize": PAYLOAD_BYTES,
})
CTRL_SNAPSHOT = np.dtype({
    "names": ["seq", "time_ns", "state_hash"],
    "formats": ["<i8", "<i8", "S48"],
    "offsets": [0, 8, 16],
    "itemsize": PAYLOAD_BYTES,
})
# the book's configuration (Matcher.config), so that the log, not only the manifest,
# says how to rebuild the book it holds
CONFIG_KEYS = ("symbols", "price_lo", "price_hi", "capacity", "max_open_orders", "hash_key")
CTRL_CONFIG = np.dtype({
    "names": ["run_id", *CONFIG_KEYS],
    "formats": ["V16", "<i8", "<i8", "<i8", "<i8", "<i8", "<u8"],
    "offsets": [0, 16, 24, 32, 40, 48, 56],
    "itemsize": PAYLOAD_BYTES,
})

assert SEGMENT_HEADER.itemsize == HEADER_BYTES
assert CTRL_RUN.itemsize == CTRL_SNAPSHOT.itemsize == CTRL_CONFIG.itemsize == PAYLOAD_BYTES == COMMAND.itemsize
assert HEADER_BYTES % 8 == 0 and SLOT_BYTES % 8 == 0


def segment_name(index: int) -> str:
    return f"wal-{index:08d}.seg"


def parse_segment_name(name: str) -> int | None:
    """The index in ``wal-NNNNNNNN.seg``, or None for any other name."""
    if name.startswith("wal-") and name.endswith(".seg") and name[4:-4].isdigit():
        return int(name[4:-4])
    return None


MANIFEST = "manifest.json"
SNAPSHOT_DIR = "snapshots"
SPARE_NAME = "wal-spare.tmp"

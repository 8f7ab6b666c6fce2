"""wal: the write-ahead log of sequenced commands — segments, writer, reader (the verifier
is `shmex.recovery.verify`: it reads the snapshots too).

Contract:
- Records are written in seq order with no gaps; each carries a CRC32C over its header and
  payload; a segment file starts with a checked header (magic, version, dtype digest, run id).
- `WalWriter.durable_seq` only grows, and advances only after the flush its mode requires
  (none: page cache; group: one pwrite + one fdatasync per group; always: one per record).
- A reader yields nothing at or after the first bad record, and names file, offset and seq.
- A torn tail of a crashed run is cut (zeroed) before a new run writes; damage inside the log
  or inside a sealed run is refused, never cut.
- A run is sealed (RUN_SEALED record + manifest: last seq, records, digest) only on clean close;
  an unsealed run crashed.
- A run's matcher config is in the manifest and, when whole, in the log too (a RUN_CONFIG
  record after its RUN_START): recovery and verify refuse a manifest that disagrees with it.

Public API: WalWriter (writer.py), WalReader and cut_tail (reader.py).
"""

from shmex.wal.reader import WalReader, cut_tail
from shmex.wal.writer import WalWriter

__all__ = ["WalWriter", "WalReader", "cut_tail"]

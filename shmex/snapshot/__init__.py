"""snapshot: compressed snapshots of the matcher's book (recovery from snapshot + WAL is
`shmex.recovery`).

Contract:
- A snapshot file appears whole or not at all (temp file, fsync, rename, directory fsync).
- Loading checks the header CRC, the payload checksum and the rebuilt matcher's state_hash;
  a bad file is refused with a CorruptRecord naming file, offset and seq, never half-used.
- Recovery takes the newest snapshot that loads and that the intact log reaches, and falls
  back to older ones, then to the log alone; each refusal is reported.
- Recovery applies the WAL records after the snapshot up to the first bad record and no
  further: the result's state_hash equals a never-crashed matcher's at the same seq.
- Only the newest K snapshots are kept (default 3).

Public API: write_snapshot / write_state / load_snapshot / newest_valid (store.py).
"""

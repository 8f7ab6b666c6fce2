"""recovery — the one layer that reads both the WAL (`shmex.wal`) and the snapshots
(`shmex.snapshot`).

Contract:

- `recover(dir)`: the newest snapshot that verifies + the WAL after it = the book a
  never-crashed matcher would have; a snapshot that fails its checks is refused, named.
- Replay is deterministic: `replay` of a run prints the live run's state_hash.
- `verify(dir)` reads only; exit 0 clean, 1 corrupt, 2 cannot open.
- `resume` is the restart inside a running engine: the ring is the retransmission
  buffer, and a successor continues the report stream with no gap and no duplicate.
- Damage is reported with its file, offset and seq.
"""

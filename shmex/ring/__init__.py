"""ring — a lock-free single-producer/single-consumer ring of fixed-size records in shm.

Contract:

- Nothing accepted is lost or overwritten: a full ring is back-pressure (the producer
  waits, or is told: 0 published / RingFull, by its choice); a slot is reused only after
  the consumer released it.
- Records arrive complete and in publish order, each exactly once per consumer pass:
  the producer's cursor store is a release after the slot writes, the consumer's load
  of it an acquire (LLVM atomics from `atomics`); the mirror holds for RELEASED_SEQ.
- Two consumer cursors: `read` (looked at) and `released` (reusable). A consumer may
  read ahead and release later; a new consumer resumes from `released`, so a consumer
  killed mid-stream loses nothing and a killed producer leaves only whole records.
- One live producer and one live consumer per ring, enforced by kernel byte locks that
  die with their holder; attach checks layout, version, size and record dtype.
- Waiting is chosen per side (`spin`, `yield`, `block`); the default `block` spins about
  a wake-up's cost, then sleeps on a process-shared semaphore with no lost wake-ups, so
  a waiter never starves a peer that shares its core.
"""

from shmex.ring.ring import Ring
from shmex.ring.wait import BLOCK, SPIN, YIELD, WaitStats, WaitStrategy, resolve

__all__ = ["Ring", "WaitStrategy", "WaitStats", "SPIN", "YIELD", "BLOCK", "resolve"]

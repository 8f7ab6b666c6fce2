"""Which core each engine process runs on (psutil cpu_affinity), and why.

The plan, for C usable cores and R roles (matcher, walwriter, [publisher], producers):

- C >= R: one core each, in that order.
- C == 1: everything on the one core; every wait blocks or yields, none spins.
- otherwise the matcher, the bottleneck, gets a core to itself (with the publisher
  when it runs inline); the WAL writer gets the next one; the publisher process and the
  producers are spread over the cores after the matcher's, sharing them with the WAL
  writer. On this 2-core machine: core 0 = matcher (+ inline publisher); core 1 = WAL
  writer, publisher process, producers, supervisor.

The matcher's snapshot writer (a fork of the matcher, hashing and compressing the book
for a good part of a second) runs at nice 19 on the cores no role has, or else on the
cores other than the matcher's: it inherits the matcher's pinning, and left there it
takes the matcher's core from the matching.

A process whose core is shared must not spin waiting for a peer on that core: the
supervisor tells each child (SHMEX_SHARED_CORE) and the rings skip their spin phase
when the peer is pinned to the waiter's own core.
"""

from __future__ import annotations

import os


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan(roles: list[str], cores: list[int] | None = None) -> dict[str, int]:
    """{process: core}. `roles` are process names in the registry's placement rank order
    (rank 0, the matcher, first; then the WAL writer)."""
    cores = cores or usable_cores()
    if len(cores) >= len(roles):
        return {r: cores[i] for i, r in enumerate(roles)}
    if len(cores) == 1:
        return {r: cores[0] for r in roles}
    out = {roles[0]: cores[0], roles[1]: cores[1]}
    rest = roles[2:]
    spread = cores[1:]
    for i, r in enumerate(rest):
        out[r] = spread[(i + 1) % len(spread)] if len(spread) > 1 else spread[0]
    return out


def shared(placement: dict[str, int]) -> dict[str, bool]:
    """Whether each role's core also runs another role."""
    count: dict[int, int] = {}
    for c in placement.values():
        count[c] = count.get(c, 0) + 1
    return {r: count[c] > 1 for r, c in placement.items()}


def describe(placement: dict[str, int]) -> str:
    by: dict[int, list[str]] = {}
    for r, c in placement.items():
        by.setdefault(c, []).append(r)
    return "; ".join(f"core {c}: {', '.join(rs)}" for c, rs in sorted(by.items()))


def snapshot_cores(placement: dict[str, int], matcher_core: int, cores: list[int] | None = None) -> list[int]:
    """Where the matcher's forked snapshot writer may run: the usable cores no role has,
    else every usable core but the matcher's, else the matcher's own (one core)."""
    cores = cores or usable_cores()
    spare = [c for c in cores if c not in placement.values()]
    return spare or [c for c in cores if c != matcher_core] or [matcher_core]

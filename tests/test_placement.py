"""Which core each engine process gets (`engine/placement.py`), where the matcher's
forked snapshot writer goes, and when a (re)started matcher takes its next snapshot."""

from __future__ import annotations

import os

import pytest

from shmex.engine import placement
from shmex.roles.matcher import _off_the_matchers_core, next_snapshot_due

ROLES = ["matcher", "walwriter", "producer-0", "producer-1"]


def test_two_cores_matcher_alone_the_rest_share():
    place = placement.plan(ROLES, [0, 1])
    assert place == {"matcher": 0, "walwriter": 1, "producer-0": 1, "producer-1": 1}
    assert placement.shared(place) == {"matcher": False, "walwriter": True, "producer-0": True, "producer-1": True}
    assert placement.describe(place) == "core 0: matcher; core 1: walwriter, producer-0, producer-1"


def test_enough_cores_one_each_and_no_sharing():
    place = placement.plan(ROLES, list(range(8)))
    assert sorted(place.values()) == [0, 1, 2, 3]
    assert not any(placement.shared(place).values())


def test_one_core_everything_shares_it():
    place = placement.plan(ROLES, [3])
    assert set(place.values()) == {3} and all(placement.shared(place).values())


@pytest.mark.parametrize("cores, want", [
    ([0, 1], [1]),                   # beside the WAL writer and producers, never the matcher's
    (list(range(8)), [4, 5, 6, 7]),  # the cores no role has
    ([5], [5]),                      # one core: the matcher's own
])
def test_snapshot_writer_cores(cores, want):
    assert placement.snapshot_cores(placement.plan(ROLES, cores), placement.plan(ROLES, cores)["matcher"], cores) == want


def test_snapshot_child_leaves_the_matchers_core_and_runs_at_nice_19():
    cores = sorted(os.sched_getaffinity(0))
    target = cores[-1:]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                       # what the forked snapshot writer does first
        try:
            _off_the_matchers_core(target)
            os.write(w, f"{sorted(os.sched_getaffinity(0))} {os.nice(0)}".encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 200).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert got == f"{target} 19"


@pytest.mark.parametrize("snapshot_seq, last_seq, every, want", [
    (0, 0, 1000, 1000),              # a fresh log
    (5000, 5000, 1000, 6000),        # a relaunch after a clean stop (final snapshot)
    (5000, 5700, 1000, 6000),        # a restart: due after the newest snapshot, not after the restart
    (5000, 7300, 1000, 7301),        # overdue: at the first batch
    (5000, 7300, 0, -1),             # only the final one
])
def test_next_snapshot_is_due_after_the_newest_one(snapshot_seq, last_seq, every, want):
    assert next_snapshot_due(snapshot_seq, last_seq, every) == want

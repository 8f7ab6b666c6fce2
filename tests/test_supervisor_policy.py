"""shmex.engine.supervisor.restart_refused: the restart-window policy, on its own.

A process may be restarted `max_restarts` times within `window_s`; the death after that
is refused with a reason. Only that process's events inside the window count.
"""

from __future__ import annotations

import pytest

from shmex.engine.supervisor import restart_refused

WINDOW_S = 10.0


def events(name: str, *died_s: float) -> list[dict]:
    return [{"name": name, "died_s": t, "pid": 1000 + i} for i, t in enumerate(died_s)]


@pytest.mark.parametrize("max_restarts", [1, 2, 3, 5])
def test_n_restarts_within_the_window_are_allowed(max_restarts):
    now = 100.0
    for done in range(max_restarts):
        past = events("matcher", *[now - 1.0 - i for i in range(done)])
        assert restart_refused(past, "matcher", now, max_restarts, WINDOW_S) == ""


@pytest.mark.parametrize("max_restarts", [1, 2, 3, 5])
def test_the_death_after_n_restarts_is_refused(max_restarts):
    now = 100.0
    past = events("matcher", *[now - 1.0 - i for i in range(max_restarts)])
    why = restart_refused(past, "matcher", now, max_restarts, WINDOW_S)
    assert why == f"died {max_restarts + 1} times within {WINDOW_S:g} s"


def test_events_outside_the_window_are_forgotten():
    now = 100.0
    old = events("walwriter", now - WINDOW_S - 0.001, now - 50.0, now - 99.0)
    assert restart_refused(old, "walwriter", now, 1, WINDOW_S) == ""
    # one recent event on top of the old ones: the limit counts only the recent one
    recent = old + events("walwriter", now - 2.0)
    assert restart_refused(recent, "walwriter", now, 2, WINDOW_S) == ""
    assert restart_refused(recent, "walwriter", now, 1, WINDOW_S) != ""


def test_the_window_edge_is_inside():
    now = 100.0
    assert restart_refused(events("matcher", now - WINDOW_S), "matcher", now, 1, WINDOW_S) != ""
    assert restart_refused(events("matcher", now - WINDOW_S - 1e-6), "matcher", now, 1, WINDOW_S) == ""


def test_the_window_slides_with_now():
    past = events("publisher", 10.0, 11.0)
    assert restart_refused(past, "publisher", 12.0, 2, WINDOW_S) != ""
    assert restart_refused(past, "publisher", 10.0 + WINDOW_S + 0.5, 2, WINDOW_S) == ""   # 10.0 left it
    assert restart_refused(past, "publisher", 11.0 + WINDOW_S + 0.5, 2, WINDOW_S) == ""


def test_other_processes_do_not_count():
    now = 100.0
    past = events("producer-0", now - 1, now - 2, now - 3) + events("walwriter", now - 1)
    assert restart_refused(past, "producer-1", now, 1, WINDOW_S) == ""
    assert restart_refused(past, "matcher", now, 1, WINDOW_S) == ""
    assert restart_refused(past, "walwriter", now, 2, WINDOW_S) == ""
    assert restart_refused(past, "producer-0", now, 3, WINDOW_S) == "died 4 times within 10 s"


@pytest.mark.parametrize("max_restarts", [0, -1])
def test_max_zero_refuses_the_first_death(max_restarts):
    why = restart_refused([], "matcher", 100.0, max_restarts, WINDOW_S)
    assert why and "restarts are off" in why


def test_no_events_allow_a_restart():
    assert restart_refused([], "matcher", 0.0, 1, WINDOW_S) == ""


def test_the_events_are_not_changed():
    past = events("matcher", 1.0, 2.0)
    before = [dict(e) for e in past]
    restart_refused(past, "matcher", 3.0, 1, WINDOW_S)
    assert past == before

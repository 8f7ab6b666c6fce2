"""`Matcher.process_into` returns a view of the report buffer as it is after the call:
a batch whose reports outgrow the buffer gets every report, not a view of the old one."""

from __future__ import annotations

import numpy as np

from shmex.bench.workload import book_config, reference_workload
from shmex.matcher import Matcher
from shmex.schema import R_FILL, Kind, Side, commands_from


def test_process_into_a_batch_that_outgrows_the_report_buffer():
    cmds = reference_workload(20_000, capacity=1 << 15)
    want = Matcher(**book_config(1 << 15)).process(cmds.copy())
    small = Matcher(**book_config(1 << 15), report_buffer=64)
    got = small.process_into(cmds.copy())
    assert len(want) > 64 * 4
    assert len(got) == len(want)
    assert np.array_equal(got, want)


def test_a_sweep_outgrows_the_presized_buffer_during_the_call():
    m = Matcher(symbols=1, price_lo=1, price_hi=100, report_buffer=4)
    m.process(commands_from(kind=Kind.NEW, side=Side.SELL, price=np.arange(1, 81).repeat(10),
                            qty=1, client_id=np.arange(1, 801)))
    sweep = commands_from(kind=Kind.NEW, side=Side.BUY, price=100, qty=800, client_id=[10_000])
    got = m.process_into(sweep)          # presized for 1 command; 800 fills on each side
    assert len(got) == 1 + 2 * 800 and m.live == 0
    assert (got["kind"][1:] == R_FILL).all()


def test_process_into_stamps_and_apply_agree():
    cmds = reference_workload(5_000, capacity=1 << 15)
    live = Matcher(**book_config(1 << 15), report_buffer=8)
    stamped = cmds.copy()
    reps = live.process_into(stamped).copy()
    replay = Matcher(**book_config(1 << 15), report_buffer=8)
    assert np.array_equal(replay.process_into(stamped, stamp=False), reps)
    assert replay.state_hash() == live.state_hash()

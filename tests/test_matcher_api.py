"""The Python API one call at a time and one batch at a time: columns to a COMMAND array,
process() on a fresh matcher, submit/cancel/replace, and their boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from shmex.bench.workload import book_config, reference_workload
from shmex.errors import UsageError
from shmex.matcher import Matcher
from shmex.schema import K_CANCEL, K_NEW, R_FILL, Kind, OrderType, Side, Tif, commands_from

IDENTITY = ["kind", "reason", "side", "liquidity", "client_id", "contra_client_id", "price", "qty", "cmd_seq"]


def test_commands_from_columns_equals_the_stream_field_by_field():
    cmds = reference_workload(2_000)
    names = ("kind", "side", "order_type", "tif", "price", "qty", "client_id")
    built = commands_from(**{n: cmds[n].tolist() for n in names})      # Python lists
    for n in names:
        assert np.array_equal(built[n], cmds[n]), n
    assert not built["seq"].any() and not built["producer"].any()      # unnamed: 0
    default = commands_from(kind=Kind.NEW, side=Side.BUY, price=5, qty=1, client_id=[1])
    assert default["order_type"][0] == OrderType.LIMIT and default["tif"][0] == Tif.GTC


@pytest.mark.parametrize("columns, says", [
    (dict(prise=[1]), "no field prise"),
    (dict(price=[1.5]), "price holds float64"),
    (dict(side=[1, 300]), r"side\[1\] = 300 is outside uint8"),
    (dict(qty=[-1], price=[1]), None),                                 # in range: the matcher rejects it
    (dict(qty=[1, 2], price=[1]), "price has 1 values, others 2"),
])
def test_commands_from_names_what_is_wrong(columns, says):
    if says is None:
        assert commands_from(**columns)["qty"][0] == -1
        return
    with pytest.raises(UsageError, match=says):
        commands_from(**columns)


def test_process_on_a_fresh_matcher_gives_every_report_and_the_caller_keeps_them():
    cmds = reference_workload(60_000)
    want = Matcher(**book_config(), report_buffer=1 << 20).process_into(cmds.copy()).copy()
    m = Matcher(**book_config())
    got = m.process(cmds.copy())
    assert len(got) == len(want) > 1 << 16          # large: the buffer is handed over
    assert np.array_equal(got, want)
    more = reference_workload(100, seed=9)
    more["client_id"] += 10**9
    m.process(more)                                 # the matcher's next buffer, not the caller's
    assert np.array_equal(got, want)


def test_one_call_per_command_matches_one_batch():
    cmds = reference_workload(3_000)
    batch = Matcher(**book_config()).process(cmds.copy())
    m = Matcher(**book_config())
    parts = []
    for c in cmds:
        if c["kind"] == K_NEW:
            parts.append(m.submit(Side(c["side"]), int(c["price"]), int(c["qty"]), client_id=int(c["client_id"])))
        else:
            assert c["kind"] == K_CANCEL
            parts.append(m.cancel(int(c["client_id"])))
    calls = np.concatenate(parts)
    assert np.array_equal(calls[IDENTITY], batch[IDENTITY])


def test_a_call_with_a_field_out_of_range_is_refused_and_changes_nothing():
    m = Matcher(symbols=1, price_lo=1, price_hi=100)
    with pytest.raises(UsageError, match="qty: 1099511627776 is outside the field's range"):
        m.submit(Side.BUY, 10, 2**40, client_id=1)
    with pytest.raises(UsageError, match="client_id: -1 is outside"):
        m.cancel(-1)
    with pytest.raises(UsageError, match="producer: 70000 is outside"):
        m.submit(Side.BUY, 10, 1, client_id=1, producer=70_000)
    with pytest.raises(UsageError, match="command fields"):
        m.submit(Side.BUY, 10, 1, client_id=2**64)             # beyond u8: the batch path says so
    with pytest.raises(UsageError, match="price: 10.5 is not an integer"):
        m.submit(Side.BUY, 10.5, 1, client_id=1)                # no floats: never truncated to 10
    with pytest.raises(UsageError, match="qty: .*2.0.* is not an integer"):
        m.submit(Side.BUY, 10, np.float64(2.0), client_id=1)
    assert m.last_seq == 0 and m.live == 0
    assert len(m.submit(Side.BUY, 10, 1, client_id=1)) == 1 and m.live == 1
    assert m.replace(1, 11, 2)[0]["price"] == 11 and m.live == 1
    assert m.submit(Side.BUY, np.int64(12), np.int32(1), client_id=2)[0]["price"] == 12   # numpy integers


def test_a_client_id_beyond_int64_and_a_sweep_beyond_the_buffer_take_the_batch_path():
    m = Matcher(symbols=1, price_lo=1, price_hi=100, report_buffer=8)
    big = 2**63 + 5
    assert m.submit(Side.SELL, 50, 1, client_id=big)[0]["client_id"] == big
    for k in range(100):
        m.submit(Side.SELL, 60, 1, client_id=k + 1)
    got = m.submit(Side.BUY, 60, 101, client_id=1_000)        # 101 fills each side: > 8 reports
    assert (got["kind"] == R_FILL).sum() == 2 * 101 and m.live == 0
    assert m.cancel(big)[0]["reason"] != 0                       # filled already: an unknown order


def test_a_report_buffer_grown_from_outside_is_the_one_reports_are_copied_from():
    from shmex.schema import REPORT

    m = Matcher(symbols=1, price_lo=1, price_hi=100, report_buffer=4)
    m.submit(Side.SELL, 10, 1, client_id=1)
    m._out = np.zeros(64, REPORT)          # the engine's matcher role grows the buffer this way
    got = m.submit(Side.BUY, 10, 1, client_id=2)
    assert list(got["client_id"]) == [2, 2, 1] and (got["kind"][1:] == R_FILL).all()

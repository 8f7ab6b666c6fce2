"""Each matching rule of issue 2, as a scenario that reads like the rule."""

import numpy as np
import pytest

from shmex.errors import SchemaMismatch, UsageError
from shmex.matcher import Matcher, check_book
from shmex.schema import (COMMAND, Kind, Liquidity, OrderType, Reason, ReportKind, Side, Stp,
                          Tif)
from streams import batch, cmd, kinds

BUY, SELL = Side.BUY, Side.SELL


@pytest.fixture
def m():
    return Matcher(symbols=2, price_lo=100, price_hi=200, capacity=16)


def rows(reports, *fields):
    return [tuple(int(r[f]) for f in fields) for r in reports]


def test_limit_order_rests_and_is_acked(m):
    r = m.submit(BUY, 150, 10, client_id=1)
    assert kinds(r) == ["ACK"]
    assert (int(r[0]["qty"]), int(r[0]["leaves"])) == (10, 10)
    assert m.best_bid(0) == 150 and m.best_ask(0) is None
    assert check_book(m) == []


def test_fill_at_resting_price_taker_then_maker_reports(m):
    m.submit(SELL, 150, 10, client_id=1, producer=1)
    r = m.submit(BUY, 155, 4, client_id=2, producer=2)
    assert kinds(r) == ["ACK", "FILL", "FILL"]
    taker, maker = r[1], r[2]
    assert (taker["liquidity"], taker["client_id"], taker["contra_client_id"]) == (Liquidity.TAKER, 2, 1)
    assert (maker["liquidity"], maker["client_id"], maker["contra_client_id"]) == (Liquidity.MAKER, 1, 2)
    assert taker["price"] == maker["price"] == 150
    assert (taker["qty"], taker["leaves"], maker["leaves"]) == (4, 0, 6)


def test_fifo_within_a_level_and_best_price_first(m):
    m.submit(SELL, 151, 5, client_id=1)
    m.submit(SELL, 150, 5, client_id=2)
    m.submit(SELL, 150, 5, client_id=3)
    r = m.submit(BUY, 151, 12, client_id=4)
    fills = r[(r["kind"] == ReportKind.FILL) & (r["liquidity"] == Liquidity.TAKER)]
    assert rows(fills, "contra_client_id", "price", "qty", "leaves") == [
        (2, 150, 5, 7), (3, 150, 5, 2), (1, 151, 2, 0)]
    assert m.resting().tolist() == [(0, SELL, 151, 0, 1, 3, 0)]


def test_limit_remainder_rests_after_a_sweep(m):
    m.submit(SELL, 150, 5, client_id=1)
    r = m.submit(BUY, 152, 8, client_id=2)
    assert kinds(r) == ["ACK", "FILL", "FILL"]
    assert m.best_bid(0) == 152 and m.best_ask(0) is None
    assert m.depth(0, 5)[0].tolist() == [(152, 3, 1)]


def test_market_order_never_rests_and_expires_the_rest(m):
    m.submit(SELL, 150, 5, client_id=1)
    r = m.submit(BUY, 0, 8, client_id=2, order_type=OrderType.MARKET, tif=Tif.GTC)
    assert kinds(r) == ["ACK", "FILL", "FILL", "EXPIRED"]
    assert int(r[-1]["qty"]) == 3
    assert m.live == 0


def test_ioc_remainder_expires(m):
    m.submit(SELL, 150, 5, client_id=1)
    r = m.submit(BUY, 150, 7, client_id=2, tif=Tif.IOC)
    assert kinds(r) == ["ACK", "FILL", "FILL", "EXPIRED"]
    assert int(r[-1]["qty"]) == 2 and m.live == 0


def test_fok_that_cannot_fill_in_full_does_not_trade(m):
    m.submit(SELL, 150, 5, client_id=1)
    m.submit(SELL, 152, 5, client_id=2)
    r = m.submit(BUY, 151, 6, client_id=3, tif=Tif.FOK)
    assert kinds(r) == ["ACK", "EXPIRED"] and int(r[1]["qty"]) == 6
    assert m.live == 2


def test_fok_that_can_fill_in_full_trades_across_levels(m):
    m.submit(SELL, 150, 5, client_id=1)
    m.submit(SELL, 152, 5, client_id=2)
    r = m.submit(BUY, 152, 8, client_id=3, tif=Tif.FOK)
    assert kinds(r) == ["ACK", "FILL", "FILL", "FILL", "FILL"]
    assert m.resting().tolist() == [(0, SELL, 152, 0, 2, 2, 0)]


def test_post_only_that_would_cross_is_rejected(m):
    m.submit(SELL, 150, 5, client_id=1)
    r = m.submit(BUY, 150, 1, client_id=2, tif=Tif.POST_ONLY)
    assert kinds(r) == ["REJECTED"] and r[0]["reason"] == Reason.POST_ONLY_WOULD_CROSS
    assert kinds(m.submit(BUY, 149, 1, client_id=2, tif=Tif.POST_ONLY)) == ["ACK"]
    assert m.best_bid(0) == 149


@pytest.mark.parametrize("field,value,reason", [
    ("side", 0, Reason.BAD_FIELD), ("side", 3, Reason.BAD_FIELD),
    ("order_type", 9, Reason.BAD_FIELD), ("tif", 0, Reason.BAD_FIELD), ("stp", 5, Reason.BAD_FIELD),
    ("symbol", 2, Reason.UNKNOWN_SYMBOL), ("qty", 0, Reason.BAD_QTY), ("qty", -3, Reason.BAD_QTY),
    ("price", 99, Reason.PRICE_BAND), ("price", 201, Reason.PRICE_BAND),
])
def test_invalid_new_gets_exactly_one_reject_with_the_reason(m, field, value, reason):
    c = batch(cmd(Kind.NEW, BUY, 150, 5, 1))
    c[field] = value
    r = m.process(c)
    assert kinds(r) == ["REJECTED"] and r[0]["reason"] == reason
    assert m.live == 0 and check_book(m) == []


def test_checks_run_in_the_stated_order(m):
    # bad side and unknown symbol and zero qty: the first check (BAD_FIELD) answers
    r = m.process(batch(cmd(Kind.NEW, 0, 999, 0, 1, symbol=7)))
    assert r[0]["reason"] == Reason.BAD_FIELD
    r = m.process(batch(cmd(Kind.NEW, BUY, 999, 0, 1, symbol=7)))
    assert r[0]["reason"] == Reason.UNKNOWN_SYMBOL
    r = m.process(batch(cmd(Kind.NEW, BUY, 999, 0, 1)))
    assert r[0]["reason"] == Reason.BAD_QTY


def test_market_order_price_is_not_checked_against_the_band(m):
    m.submit(SELL, 150, 1, client_id=1)
    r = m.submit(BUY, -5, 1, client_id=2, order_type=OrderType.MARKET)
    assert kinds(r) == ["ACK", "FILL", "FILL"]


def test_unknown_kind_is_rejected_bad_field(m):
    r = m.process(batch(cmd(9, BUY, 150, 1, 1)))
    assert kinds(r) == ["REJECTED"] and r[0]["reason"] == Reason.BAD_FIELD


def test_duplicate_live_id_is_rejected_and_ids_reuse_after_finish(m):
    m.submit(BUY, 150, 5, client_id=7)
    r = m.submit(SELL, 160, 5, client_id=7)
    assert r[0]["reason"] == Reason.DUPLICATE_ID
    assert kinds(m.submit(BUY, 150, 5, client_id=7, producer=1)) == ["ACK"]  # other producer
    m.cancel(7)
    assert kinds(m.submit(SELL, 160, 5, client_id=7)) == ["ACK"]


def test_cancel_live_order_and_unknown_order(m):
    m.submit(BUY, 150, 5, client_id=1)
    r = m.cancel(1)
    assert kinds(r) == ["CANCELED"] and int(r[0]["qty"]) == 5 and r[0]["reason"] == Reason.NONE
    assert m.cancel(1)[0]["reason"] == Reason.UNKNOWN_ORDER
    m.submit(BUY, 150, 5, client_id=2, symbol=1)
    assert m.cancel(2, symbol=0)[0]["reason"] == Reason.UNKNOWN_ORDER  # wrong symbol
    assert kinds(m.cancel(2, symbol=1)) == ["CANCELED"]


def test_replace_reduce_at_same_price_keeps_priority(m):
    m.submit(BUY, 150, 5, client_id=1)
    m.submit(BUY, 150, 5, client_id=2)
    r = m.replace(1, 150, 3)
    assert kinds(r) == ["REPLACED"] and (int(r[0]["qty"]), int(r[0]["leaves"])) == (3, 3)
    assert [o[4] for o in m.resting().tolist()] == [1, 2]
    assert m.depth(0, 1)[0].tolist() == [(150, 8, 2)]


@pytest.mark.parametrize("price,qty", [(150, 6), (151, 5), (149, 2)])
def test_replace_with_price_change_or_increase_loses_priority(m, price, qty):
    m.submit(BUY, 150, 5, client_id=1)
    m.submit(BUY, price, 5, client_id=2)
    assert kinds(m.replace(1, price, qty)) == ["REPLACED"]
    assert [o[4] for o in m.resting().tolist() if o[2] == price] == [2, 1]
    assert check_book(m) == []


def test_replace_that_crosses_trades_at_once(m):
    m.submit(SELL, 152, 3, client_id=1)
    m.submit(BUY, 150, 5, client_id=2)
    r = m.replace(2, 152, 5)
    assert kinds(r) == ["REPLACED", "FILL", "FILL"]
    assert m.resting().tolist() == [(0, BUY, 152, 0, 2, 2, 0)]


def test_a_post_only_order_replaced_to_a_crossing_price_is_rejected_and_rests_as_it_was(m):
    m.submit(SELL, 152, 3, client_id=1)
    m.submit(BUY, 150, 5, client_id=2, tif=Tif.POST_ONLY)
    r = m.replace(2, 152, 5)
    assert kinds(r) == ["REJECTED"] and r[0]["reason"] == Reason.POST_ONLY_WOULD_CROSS
    assert m.resting().tolist() == [(0, BUY, 150, 0, 2, 5, 0), (0, SELL, 152, 0, 1, 3, 0)]
    assert check_book(m) == []


def test_a_post_only_order_replaced_stays_post_only():
    """The flag goes with the order through a replace that loses priority, and through a
    snapshot of the book."""
    m = Matcher(symbols=1, price_lo=100, price_hi=200, capacity=16)
    m.submit(BUY, 150, 5, client_id=2, tif=Tif.POST_ONLY)
    assert kinds(m.replace(2, 151, 6)) == ["REPLACED"]       # moved, not crossing: rests
    m.submit(SELL, 153, 3, client_id=1)
    m2 = Matcher.from_state(m.export_state())
    r = m2.replace(2, 153, 6)
    assert kinds(r) == ["REJECTED"] and r[0]["reason"] == Reason.POST_ONLY_WOULD_CROSS
    assert kinds(m2.replace(2, 152, 6)) == ["REPLACED"] and m2.best_bid(0) == 152


def test_a_book_state_saved_without_order_flags_loads_with_no_order_post_only(m):
    m.submit(BUY, 150, 5, client_id=2, tif=Tif.POST_ONLY)
    m.submit(SELL, 152, 3, client_id=1)
    state = m.export_state()
    del state["o_flags"]
    assert kinds(Matcher.from_state(state).replace(2, 152, 5)) == ["REPLACED", "FILL", "FILL"]


@pytest.mark.parametrize("client_id,price,qty,reason", [
    (9, 150, 5, Reason.UNKNOWN_ORDER), (1, 150, 0, Reason.BAD_QTY), (1, 201, 5, Reason.PRICE_BAND)])
def test_replace_rejects(m, client_id, price, qty, reason):
    m.submit(BUY, 150, 5, client_id=1)
    r = m.replace(client_id, price, qty)
    assert kinds(r) == ["REJECTED"] and r[0]["reason"] == reason
    assert m.resting().tolist() == [(0, BUY, 150, 0, 1, 5, 0)]


def stp_book(m):
    m.submit(SELL, 150, 5, client_id=1, account=7)
    m.submit(SELL, 150, 5, client_id=2, account=8)


def test_stp_none_trades_with_itself(m):
    stp_book(m)
    r = m.submit(BUY, 150, 5, client_id=3, account=7, stp=Stp.NONE)
    assert kinds(r) == ["ACK", "FILL", "FILL"]


def test_stp_cancel_newest_cancels_the_incoming_order(m):
    stp_book(m)
    r = m.submit(BUY, 150, 8, client_id=3, account=7, stp=Stp.CANCEL_NEWEST)
    assert kinds(r) == ["ACK", "CANCELED"]
    assert (r[1]["client_id"], r[1]["reason"], r[1]["qty"]) == (3, Reason.SELF_TRADE, 8)
    assert m.live == 2


def test_stp_cancel_oldest_cancels_resting_and_goes_on(m):
    stp_book(m)
    r = m.submit(BUY, 150, 8, client_id=3, account=7, stp=Stp.CANCEL_OLDEST)
    assert kinds(r) == ["ACK", "CANCELED", "FILL", "FILL"]
    assert (r[1]["client_id"], r[1]["reason"]) == (1, Reason.SELF_TRADE)
    assert m.resting().tolist() == [(0, BUY, 150, 0, 3, 3, 7)]


def test_stp_cancel_both(m):
    stp_book(m)
    r = m.submit(BUY, 150, 8, client_id=3, account=7, stp=Stp.CANCEL_BOTH)
    assert kinds(r) == ["ACK", "CANCELED", "CANCELED"]
    assert rows(r[1:], "client_id", "reason") == [(1, Reason.SELF_TRADE), (3, Reason.SELF_TRADE)]
    assert m.resting().tolist() == [(0, SELL, 150, 0, 2, 5, 8)]


def test_stp_decrement_resting_stays_above_zero(m):
    stp_book(m)
    r = m.submit(BUY, 150, 3, client_id=3, account=7, stp=Stp.DECREMENT)
    assert kinds(r) == ["ACK", "REPLACED", "CANCELED"]
    assert rows(r[1:], "client_id", "reason", "leaves") == [(1, Reason.SELF_TRADE, 2), (3, Reason.SELF_TRADE, 0)]
    assert [o[5] for o in m.resting().tolist()] == [2, 5]


def test_stp_decrement_resting_reaches_zero_and_matching_goes_on(m):
    stp_book(m)
    r = m.submit(BUY, 150, 8, client_id=3, account=7, stp=Stp.DECREMENT)
    assert kinds(r) == ["ACK", "CANCELED", "FILL", "FILL"]
    assert (r[1]["client_id"], r[1]["reason"], r[1]["qty"]) == (1, Reason.SELF_TRADE, 5)
    assert (int(r[2]["qty"]), int(r[2]["leaves"])) == (3, 0)


def test_stp_applies_only_to_nonzero_equal_accounts(m):
    m.submit(SELL, 150, 5, client_id=1, account=0)
    r = m.submit(BUY, 150, 5, client_id=2, account=0, stp=Stp.CANCEL_NEWEST)
    assert kinds(r) == ["ACK", "FILL", "FILL"]


def test_fok_counts_quantity_before_self_trade_prevention(m):
    stp_book(m)
    r = m.submit(BUY, 150, 10, client_id=3, account=7, stp=Stp.CANCEL_OLDEST, tif=Tif.FOK)
    # 10 lots cross, so the FOK goes ahead; STP then removes 5 of them and the rest expires.
    assert kinds(r) == ["ACK", "CANCELED", "FILL", "FILL", "EXPIRED"]


def test_full_arena_rejects_only_orders_that_could_rest():
    m = Matcher(symbols=1, price_lo=100, price_hi=200, capacity=2)
    m.submit(SELL, 150, 5, client_id=1)
    m.submit(SELL, 151, 5, client_id=2)
    assert m.submit(SELL, 152, 5, client_id=3)[0]["reason"] == Reason.BOOK_FULL
    assert m.submit(BUY, 140, 5, client_id=4, tif=Tif.POST_ONLY)[0]["reason"] == Reason.BOOK_FULL
    r = m.submit(BUY, 150, 5, client_id=5, tif=Tif.IOC)  # cannot rest: allowed, frees a slot
    assert kinds(r) == ["ACK", "FILL", "FILL"]
    assert kinds(m.submit(SELL, 152, 5, client_id=3)) == ["ACK"]
    assert check_book(m) == []


def test_seq_is_stamped_across_calls_and_reports_carry_it(m):
    a = batch(cmd(Kind.NEW, BUY, 150, 1, 1), cmd(Kind.NEW, BUY, 150, 1, 2))
    m.process(a)
    b = batch(cmd(Kind.CANCEL, client_id=1))
    r = m.process(b)
    assert a["seq"].tolist() == [1, 2] and b["seq"].tolist() == [3]
    assert r["cmd_seq"].tolist() == [3] and (a["engine_ns"] > 0).all()


def test_apply_keeps_seq_and_refuses_a_gap(m):
    c = batch(cmd(Kind.NEW, BUY, 150, 1, 1))
    c["seq"] = 1
    c["engine_ns"] = 42
    m.apply(c)
    assert m.last_seq == 1 and int(c["engine_ns"][0]) == 42
    c["seq"] = 5
    with pytest.raises(UsageError, match="seq"):
        m.apply(c)


def test_reports_echo_pseq_and_sent_ns_only_to_the_commanding_order(m):
    m.process(batch(cmd(Kind.NEW, SELL, 150, 5, 1, pseq=11, sent_ns=111)))
    r = m.process(batch(cmd(Kind.NEW, BUY, 150, 5, 2, pseq=12, sent_ns=222)))
    # the maker's fill: no pseq; its sent_ns is the fill's index within the command (match number)
    assert rows(r, "pseq", "sent_ns") == [(12, 222), (12, 222), (0, 1)]


def test_a_batch_that_overflows_the_report_buffer_grows_it():
    m = Matcher(symbols=1, price_lo=1, price_hi=100, capacity=50_000)
    rows_ = [cmd(Kind.NEW, SELL, 50, 1, i) for i in range(1, 40_001)]
    m.process(batch(*rows_))
    r = m.submit(BUY, 50, 40_000, client_id=0)
    assert len(r) == 1 + 2 * 40_000 and m.live == 0


def test_wrong_dtype_and_shape_are_refused_at_the_boundary(m):
    with pytest.raises(SchemaMismatch):
        m.process(np.zeros(3, dtype=np.int64))
    with pytest.raises(UsageError, match="1-d"):
        m.process(np.zeros((2, 2), dtype=COMMAND))


def test_non_contiguous_batches_are_stamped_in_place(m):
    c = batch(*[cmd(Kind.NEW, BUY, 150, 1, i) for i in range(6)])
    view = c[::2]
    m.process(view)
    assert c["seq"].tolist() == [1, 0, 2, 0, 3, 0]


def test_bad_configuration_is_refused():
    with pytest.raises(UsageError, match="price band"):
        Matcher(symbols=1, price_lo=10, price_hi=5, capacity=4)
    with pytest.raises(UsageError, match="capacity"):
        Matcher(symbols=1, price_lo=1, price_hi=5, capacity=0)


def test_state_round_trips_through_export(m):
    m.submit(BUY, 150, 5, client_id=1)
    m.submit(SELL, 160, 5, client_id=2, account=3)
    copy = Matcher.from_state(m.export_state())
    assert copy.state_hash() == m.state_hash()
    assert kinds(copy.cancel(2)) == ["CANCELED"]


def test_replace_under_cancel_oldest_uses_the_orders_account_and_may_cancel_many():
    # The REPLACE command carries account 0; self-trade prevention uses the order's (7),
    # so one replace of qty 1 cancels 20,000 resting orders: more reports than the
    # matcher's initial buffer holds.
    m = Matcher(symbols=1, price_lo=1, price_hi=100, capacity=30_000)
    m.process(batch(*[cmd(Kind.NEW, SELL, 60, 1, i, account=7) for i in range(1, 20_001)]))
    m.submit(BUY, 50, 1, client_id=0, account=7)
    r = m.replace(0, 60, 1, stp=Stp.CANCEL_OLDEST)
    assert kinds(r) == ["REPLACED"] + ["CANCELED"] * 20_000
    assert (r["reason"][1:] == Reason.SELF_TRADE).all()
    assert m.resting().tolist() == [(0, BUY, 60, 0, 0, 1, 7)]
    assert check_book(m) == []


def test_market_post_only_is_rejected_as_a_bad_field():
    from shmex.matcher import Matcher
    from shmex.schema import R_REJECTED, RS_BAD_FIELD, OrderType, Side, Tif

    m = Matcher(symbols=1, price_lo=1, price_hi=200, capacity=64)
    m.submit(Side.SELL, 100, 5, client_id=1)
    r = m.submit(Side.BUY, 0, 5, client_id=2, order_type=OrderType.MARKET, tif=Tif.POST_ONLY)
    assert [(int(x["kind"]), int(x["reason"])) for x in r] == [(R_REJECTED, RS_BAD_FIELD)]
    assert len(m.resting()) == 1


def test_market_fok_is_all_or_nothing():
    from shmex.matcher import Matcher
    from shmex.schema import R_ACK, R_EXPIRED, R_FILL, OrderType, Side, Tif

    m = Matcher(symbols=1, price_lo=1, price_hi=200, capacity=64)
    m.submit(Side.SELL, 100, 3, client_id=1)
    r = m.submit(Side.BUY, 0, 10, client_id=2, order_type=OrderType.MARKET, tif=Tif.FOK)
    assert [int(x["kind"]) for x in r] == [R_ACK, R_EXPIRED]      # 3 of 10 available: nothing trades
    assert len(m.resting()) == 1
    r = m.submit(Side.BUY, 0, 3, client_id=3, order_type=OrderType.MARKET, tif=Tif.FOK)
    assert [int(x["kind"]) for x in r] == [R_ACK, R_FILL, R_FILL]
    assert len(m.resting()) == 0

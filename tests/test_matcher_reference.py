"""The numba matcher agrees with the reference book on random command streams."""

from hypothesis import HealthCheck, given, settings

from reference_book import ReferenceBook
from shmex.matcher import Matcher, check_book
from streams import SMALL, assert_reports_equal, batch, command_streams

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_both(stream, report_buffer=1 << 14, **config):
    fast, slow = Matcher(**config, report_buffer=report_buffer), ReferenceBook(**config)
    for rows in stream:
        cmds = batch(*rows)
        assert_reports_equal(fast.process(cmds.copy()), slow.process(cmds))
        assert fast.resting().tolist() == slow.resting().tolist()
        assert check_book(fast) == []
    return fast


@PROPS
@given(command_streams())
def test_matcher_agrees_with_reference(stream):
    run_both(stream, **SMALL)


@PROPS
@given(command_streams(wild=False, ids=12, max_batches=4, max_batch=40))
def test_matcher_agrees_with_reference_on_valid_streams_with_deep_books(stream):
    # A 4-record report buffer: batches stop and resume at every growth of the buffer.
    run_both(stream, symbols=2, price_lo=100, price_hi=110, capacity=64, report_buffer=4)


@PROPS
@given(command_streams(band=(0, 300), wild=False, ids=30, max_batches=3, max_batch=40))
def test_matcher_agrees_across_bitmap_words(stream):
    # A 301-tick band spans five bitmap words: next-level scans cross word boundaries.
    run_both(stream, symbols=1, price_lo=0, price_hi=300, capacity=32)


@PROPS
@given(command_streams(wild=False, max_batches=3, max_batch=30))
def test_replay_reaches_the_live_state(stream):
    live = Matcher(**SMALL)
    sequenced = []
    for rows in stream:
        cmds = batch(*rows)
        live.process(cmds)
        sequenced.append(cmds)
    replayed = Matcher(**SMALL)
    for cmds in sequenced:
        replayed.apply(cmds)
    assert replayed.state_hash() == live.state_hash()
    assert replayed.last_seq == live.last_seq

"""The ITCH 5.0 encoder: a book rebuilt from its messages is the matcher's book, and a
third-party ITCH parser (itchfeed) reads every message it writes."""

from __future__ import annotations

import numpy as np
import pytest

from shmex.matcher.matcher import Matcher
from shmex.net import itch
from shmex.recovery.feed import book_levels
from shmex.schema import Side

from itch_book import assert_itchfeed_reads, mixed_stream

TICK, LOT = 100, 10
NAMES = np.array([int.from_bytes(b"SHMX    ", "big"), int.from_bytes(b"ABCD    ", "big")], np.uint64)


def _feed(seed: int, n: int = 3000):
    cmds = mixed_stream(n, seed)
    m = Matcher(symbols=2, price_lo=1, price_hi=200, capacity=8192)
    reps = m.apply(cmds)
    e = itch.new_encoder(NAMES, [TICK, TICK], [LOT, LOT], capacity=8192, ts_offset=0)
    out = np.zeros((itch.MAX_MESSAGE + 2) * len(reps) + 64, np.uint8)
    offs = np.zeros(len(reps) + 1, np.int64)
    assert itch.encode(e, cmds, len(cmds), reps, len(reps), out, offs) == len(reps)
    assert e.g[itch.G_UNKNOWN] == 0
    return m, e, out[:int(e.g[itch.G_POS])], reps


@pytest.mark.parametrize("seed", range(8))
def test_a_book_rebuilt_from_the_messages_is_the_matchers_book(seed):
    m, e, block, _ = _feed(seed)
    book = itch.new_book(8192)
    itch.apply(book, block)
    assert book.g[itch.B_UNKNOWN] == 0
    assert book.g[itch.B_LIVE] == m.live == e.g[itch.G_LIVE]
    res = m.resting()
    for sym in range(2):
        for side, code in ((Side.BUY, "B"), (Side.SELL, "S")):
            assert itch.levels(book, sym, code) == book_levels(res, sym, side, TICK, LOT)


def test_executions_carry_the_match_numbers_of_the_makers_fills():
    _, _, block, reps = _feed(3)
    execs = [itch.decode(msg) for msg in itch.messages(block) if msg[:1] == b"E"]
    fills = reps[(reps["kind"] == 2) & (reps["liquidity"] == 1)]
    assert len(execs) == len(fills) > 0
    want = [(int(r["cmd_seq"]) << itch.MATCH_SHIFT | int(r["sent_ns"]), int(r["qty"]) * LOT) for r in fills]
    assert [(x["match"], x["shares"]) for x in execs] == want


def test_itchfeed_parses_every_message_with_the_fields_written():
    _, _, block, _ = _feed(5)
    head = itch.framed([itch.system_event(itch.START_OF_MESSAGES, 5),
                        itch.stock_directory(0, "SHMX", LOT, 5), itch.stock_directory(1, "ABCD", LOT, 5)])
    assert assert_itchfeed_reads(head + block.tobytes(), LOT) > 100

"""A NASDAQ ITCH 5.0 day as load (`launch --itch`): each message becomes the command that
replays it; a consistent day's executions are all made again by shmex's matcher against
the same resting order and its books end as the file's; the real sample (tests/data)
is read whole (itchfeed agrees with every count) and its replay says what it could not
reproduce and why."""

from __future__ import annotations

import collections
import gzip
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from itch_book import mixed_stream
from shmex.errors import UsageError
from shmex.matcher.matcher import Matcher
from shmex.net import itch, itchload
from shmex.recovery import itchrun
from shmex.schema import BUY, COMMAND, GTC, IOC, K_CANCEL, K_NEW, K_REPLACE, SELL

# Nasdaq's sample (../shared/data, shipped here with its MIT licence so a clone alone tests)
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ex20101224.TEST_ITCH_50.gz")
B = itchload.IOC_BASE


def _h(typ: bytes, locate: int, ts: int) -> bytes:
    return typ + struct.pack(">HH", locate, 0) + ts.to_bytes(6, "big")


def _msg_add(ref, side, shares, name, price, locate, ts):
    return _h(b"A", locate, ts) + struct.pack(">Q", ref) + side + struct.pack(">I", shares) \
        + name.ljust(8) + struct.pack(">I", price)


def _day() -> list[bytes]:
    """Every kind of message the translation handles, on two symbols (AAA locate 1, BBB 2)."""
    return [
        itch.system_event(b"O", 500),
        itch.stock_directory(0, "AAA", 100, 600), itch.stock_directory(1, "BBB", 100, 600),
        _msg_add(10, b"B", 100, b"AAA", 10000, 1, 1000),
        _msg_add(11, b"S", 50, b"AAA", 10100, 1, 2000),
        _h(b"E", 1, 3000) + struct.pack(">QIQ", 11, 20, 7),                       # 20 of 11 executed
        _h(b"X", 1, 4000) + struct.pack(">QI", 10, 30),                           # 10: 100 -> 70
        _h(b"U", 1, 5000) + struct.pack(">QQII", 10, 12, 70, 10000),             # same price, no more
        _h(b"U", 1, 6000) + struct.pack(">QQII", 11, 13, 30, 10200),             # a new price
        _h(b"C", 1, 7000) + struct.pack(">QIQcI", 13, 10, 8, b"Y", 10150),        # 10 of 13 (was 11)
        _h(b"D", 1, 7500) + struct.pack(">Q", 999),                               # never added
        _h(b"P", 1, 7600) + struct.pack(">QcI8sIQ", 0, b"B", 100, b"AAA     ", 10050, 9),
        _msg_add(20, b"S", 5, b"BBB", 20000, 2, 8000),
        _h(b"D", 1, 9000) + struct.pack(">Q", 13),
    ]


def _file(tmp_path, msgs, *, zero_lengths=(), gz=False) -> str:
    """msgs framed as Nasdaq's files are: a 2-byte length before each, zero for those in
    zero_lengths (as in Nasdaq's sample), gzip'd if asked."""
    raw = b"".join((0 if i in zero_lengths else len(m)).to_bytes(2, "big") + m for i, m in enumerate(msgs))
    path = tmp_path / ("day.itch.gz" if gz else "day.itch")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return str(path)


def _sequenced(data_dir) -> np.ndarray:
    """The load as producer 1 sends it and the matcher sequences it."""
    cmds = np.fromfile(itchrun.paths(str(data_dir))["commands"], dtype=COMMAND).copy()
    n = np.arange(1, len(cmds) + 1)
    cmds["producer"], cmds["pseq"], cmds["seq"], cmds["engine_ns"] = 1, n, n, n
    return cmds


def _replayed(data_dir, info) -> dict:
    lo, hi = info["band"]
    m = Matcher(symbols=len(info["symbols"]), price_lo=lo, price_hi=hi, capacity=1 << 16)
    ex = np.fromfile(itchrun.paths(str(data_dir))["executions"], dtype=itchload.EXEC)
    return itchrun.agreement([_sequenced(data_dir)], m, info, ex)


def test_each_message_becomes_the_command_that_replays_it(tmp_path):
    path = _file(tmp_path, _day(), zero_lengths={0, 3, 5, 9}, gz=True)
    info = itchrun.prepare(path, str(tmp_path / "data"), speed=2.0)
    assert [(s["name"], s["tick"], s["lo"], s["hi"]) for s in info["symbols"]] == [
        ("AAA", 100, 10000, 10200), ("BBB", 20000, 20000, 20000)]
    cmds = np.fromfile(itchrun.paths(str(tmp_path / "data"))["commands"], dtype=COMMAND)
    got = [(int(c["kind"]), int(c["side"]), int(c["tif"]), int(c["symbol"]), int(c["client_id"]),
            int(c["price"]), int(c["qty"])) for c in cmds]
    assert got == [
        (K_NEW, BUY, GTC, 0, 10, 100, 100),
        (K_NEW, SELL, GTC, 0, 11, 101, 50),
        (K_NEW, BUY, IOC, 0, B + 0, 101, 20),         # E: the other side, at the resting price
        (K_REPLACE, 0, 0, 0, 10, 100, 70),            # X: smaller at the same price keeps priority
        (K_CANCEL, 0, 0, 0, 10, 0, 0),                # U at the same price, no more shares: shmex's
        (K_NEW, BUY, GTC, 0, 12, 100, 70),            # replace would keep priority, ITCH's loses it
        (K_REPLACE, 0, 0, 0, 11, 102, 30),            # U to a new price: a replace, same client id
        (K_NEW, BUY, IOC, 0, B + 1, 102, 10),         # C against 13, which is order 11 replaced
        (K_NEW, SELL, GTC, 1, 20, 1, 5),
        (K_CANCEL, 0, 0, 0, 11, 0, 0),
    ]
    # paced: the time since the file's first message, halved
    assert [int(t) for t in cmds["sent_ns"]] == [(t - 500) // 2 for t in
                                                 (1000, 2000, 3000, 4000, 5000, 5000, 6000, 7000, 8000, 9000)]
    ex = np.fromfile(itchrun.paths(str(tmp_path / "data"))["executions"], dtype=itchload.EXEC)
    assert [(int(e["ioc_cid"]), int(e["maker_cid"]), int(e["qty"]), int(e["match"])) for e in ex] == [
        (B, 11, 20, 7), (B + 1, 11, 10, 8)]
    assert info["counts"] == {"adds": 3, "executions": 2, "reductions": 1, "deletes": 1, "replaces": 1,
                              "replaces_as_cancel_new": 1, "skipped_unknown_order": 1,
                              "skipped_not_book": 4, "skipped_other_symbols": 0}
    assert info["book"] == {"AAA": {"bids": [[10000, 70, 1]], "asks": []},
                            "BBB": {"bids": [], "asks": [[20000, 5, 1]]}}
    r = _replayed(tmp_path / "data", info)
    assert (r["reproduced"], r["executions"], r["books_equal"], r["rejected"]) == (2, 2, True, 0)


def test_only_the_symbols_asked_for_are_replayed(tmp_path):
    info = itchrun.prepare(_file(tmp_path, _day()), str(tmp_path / "data"), speed=None, only=("BBB",))
    assert [s["name"] for s in info["symbols"]] == ["BBB"]
    assert info["commands"] == 1 and info["counts"]["skipped_other_symbols"] == 9     # AAA's but its P
    cmds = np.fromfile(itchrun.paths(str(tmp_path / "data"))["commands"], dtype=COMMAND)
    assert int(cmds[0]["symbol"]) == 0 and int(cmds[0]["sent_ns"]) == 0      # unpaced
    with pytest.raises(UsageError, match="CCC not in"):
        itchrun.prepare(_file(tmp_path, _day()), str(tmp_path / "data"), speed=None, only=("CCC",))


def test_a_message_that_is_not_itch_is_named_with_its_offset(tmp_path):
    msgs = _day()
    bad = msgs[:4] + [b"A" + msgs[4][1:20]] + msgs[5:]          # an Add Order 20 bytes long
    offset = sum(2 + len(m) for m in msgs[:4])
    with pytest.raises(UsageError, match=f"offset {offset}: message type 'A' with length 20"):
        itchrun.prepare(_file(tmp_path, bad), str(tmp_path / "data"), speed=None)
    with pytest.raises(UsageError, match=f"offset {offset}: message type 'z'"):
        itchrun.prepare(_file(tmp_path, msgs[:4] + [b"z" + msgs[4][1:]]), str(tmp_path / "data"), speed=None)
    cut = _file(tmp_path, msgs)
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) - 3)
    with pytest.raises(UsageError, match="ends inside a message"):
        itchrun.prepare(cut, str(tmp_path / "data"), speed=None)


def _consistent_day(tmp_path, seed: int, n: int = 4000) -> str:
    """The ITCH of a real matching run (every kind of order, replaces, self-trade
    prevention), as the feed writes it: a day whose book is always one a matcher made."""
    cmds = mixed_stream(n, seed)
    m = Matcher(symbols=2, price_lo=1, price_hi=200, capacity=8192)
    reps = m.apply(cmds)
    names = np.array([int.from_bytes(b"SHMX    ", "big"), int.from_bytes(b"ABCD    ", "big")], np.uint64)
    e = itch.new_encoder(names, [100, 100], [1, 1], capacity=8192, ts_offset=0)
    out = np.zeros((itch.MAX_MESSAGE + 2) * len(reps) + 64, np.uint8)
    itch.encode(e, cmds, len(cmds), reps, len(reps), out, np.zeros(len(reps) + 1, np.int64))
    head = itch.framed([itch.system_event(itch.START_OF_MESSAGES, 10**9),
                        itch.stock_directory(0, "SHMX", 1, 10**9), itch.stock_directory(1, "ABCD", 1, 10**9)])
    path = tmp_path / f"run{seed}.itch"
    path.write_bytes(head + out[:int(e.g[itch.G_POS])].tobytes())
    return str(path)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_consistent_day_is_reproduced_execution_for_execution(tmp_path, seed):
    info = itchrun.prepare(_consistent_day(tmp_path, seed), str(tmp_path / "data"), speed=None)
    assert info["executions"] > 100 and info["counts"]["replaces"] > 0
    assert info["counts"]["skipped_unknown_order"] == 0
    r = _replayed(tmp_path / "data", info)
    assert r["reproduced"] == r["executions"] == info["executions"]
    assert (r["against_another_order"], r["short"], r["orders_traded_on_entry"], r["rejected"]) == (0, 0, 0, 0)
    assert r["books_equal"] and r["live_orders"] == info["live_orders"]


def _itchfeed_book(data: bytes):
    """Counts and the implied book from a third-party parser's reading of a framed file."""
    from itch.parser import MessageParser

    msgs = list(MessageParser().parse_file(io.BytesIO(data)))
    live: dict[int, list] = {}
    counts = collections.Counter(m.message_type.decode() for m in msgs)
    unknown = 0
    for m in msgs:
        t = m.message_type
        if t in (b"A", b"F"):
            live[m.order_reference_number] = [m.stock_locate, m.buy_sell_indicator, m.price, m.shares]
        elif t in (b"E", b"C", b"X", b"D", b"U"):
            o = live.get(m.order_reference_number)
            if o is None:
                unknown += 1
            elif t == b"D":
                del live[m.order_reference_number]
            elif t == b"U":
                del live[m.order_reference_number]
                live[m.new_order_reference_number] = [o[0], o[1], m.price, m.shares]
            else:
                o[3] -= m.executed_shares if t != b"X" else m.cancelled_shares
                if o[3] <= 0:
                    del live[m.order_reference_number]
    book = {}
    for loc, side, price, shares in live.values():
        lv = book.setdefault(loc, {}).setdefault(side, {}).setdefault(price, [0, 0])
        lv[0] += shares
        lv[1] += 1
    return len(msgs), counts, unknown, book


def test_the_nasdaq_sample_is_read_whole_as_itchfeed_reads_it(tmp_path):
    raw = np.frombuffer(gzip.open(SAMPLE).read(), np.uint8).copy()
    end, bad = itchload.frame(raw, len(raw))
    assert (end, bad) == (len(raw), -1)
    n, counts, unknown, book = _itchfeed_book(raw.tobytes())      # itchfeed needs the lengths
    assert n == 12_012 and counts["A"] == 4_997 and counts["P"] == 5_000
    info = itchrun.prepare(SAMPLE, str(tmp_path / "data"), speed=None)
    c = info["counts"]
    assert info["messages"] == n
    assert c["adds"] == counts["A"] + counts["F"]
    assert c["skipped_unknown_order"] == unknown
    assert c["executions"] + c["reductions"] + c["deletes"] + c["replaces"] + c["replaces_as_cancel_new"] \
        + unknown == sum(counts[t] for t in "ECXDU")
    for s in info["symbols"]:
        theirs = book.get(s["locate"], {})
        for side, key in ((b"B", "bids"), (b"S", "asks")):
            levels = sorted(theirs.get(side, {}).items(), reverse=side == b"B")
            assert info["book"][s["name"]][key] == [[p, q, k] for p, (q, k) in levels]


def _launch(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shmex.cli", "launch", "--quiet", *args],
                          capture_output=True, text=True, timeout=600)


def test_the_engine_replays_a_day_at_its_pace_and_checks_it_from_the_journal(shm_run, tmp_path):
    day = _consistent_day(tmp_path, 4)
    data = tmp_path / "data"
    p = _launch(tmp_path, "--name", shm_run, "--itch", day, "--itch-speed", "0.5", "--data-dir", str(data),
                "--json", str(tmp_path / "run.json"))
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    r = doc["itch"]
    assert r["reproduced"] == r["executions"] > 100 and r["books_equal"]
    assert r == {**r, **itchrun.check(str(data))}          # the check is the journal's: the same again
    assert "reproduced against the same resting order (100.0%)" in p.stdout
    # the journal holds each command at its intended time: the run's start plus twice the
    # file's offset (speed 0.5)
    from shmex.wal.reader import WalReader

    sent = np.concatenate([b["sent_ns"] for b in WalReader(str(data)).commands(1)])
    load = np.fromfile(itchrun.paths(str(data))["commands"], dtype=COMMAND)
    assert len(sent) == len(load) == doc["orders"]
    assert np.array_equal(sent - sent[0], load["sent_ns"] - load["sent_ns"][0])
    assert int(load["sent_ns"][-1]) > 0
    # a second launch on that log is refused: a day replays on an empty book
    again = _launch(tmp_path, "--name", shm_run, "--itch", day, "--data-dir", str(data))
    assert again.returncode == 2 and "holds a log (add --fresh" in again.stderr


def test_the_nasdaq_sample_replays_and_says_what_it_could_not_reproduce(shm_run, tmp_path):
    data = tmp_path / "data"
    p = _launch(tmp_path, "--name", shm_run, "--itch", SAMPLE, "--data-dir", str(data), "--feed",
                "239.192.9.9:31991", "--feed-linger", "0", "--json", str(tmp_path / "run.json"))
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "run.json").read_text())["itch"]
    assert r["executions"] == 180 and r["seqs"] == r["commands"]
    assert r["reproduced"] + r["against_another_order"] + r["short"] >= r["executions"]
    # the sample is 12,012 messages drawn from a day: most of its orders are never removed,
    # so adds cross what it leaves resting; the summary says so instead of hiding it
    assert r["orders_traded_on_entry"] > 1000 and not r["books_equal"]
    assert "the file is not one exchange's complete book" in p.stdout
    # the engine's own feed of the replay names the day's symbols at the day's prices
    from shmex.net import feedfile

    live, _ = feedfile.paths(data)
    msgs = [itch.decode(m) for m in itch.messages(open(live, "rb").read())]
    assert [m["stock"] for m in msgs if m["type"] == "R"] == ["ALC", "BOB", "CHAR"]
    adds = [m for m in msgs if m["type"] == "A"]
    src = json.load(open(itchrun.paths(str(data))["info"]))
    assert adds and all(s["lo"] <= a["price"] <= s["hi"] for a in adds for s in [src["symbols"][a["locate"] - 1]])


def test_itch_flags_that_cannot_work_are_refused(tmp_path):
    for args, want in [(("--producers", "2"), "--producers 2 cannot be used"),
                       (("--rate", "1000"), "sets its own pace"),
                       (("--symbols", "3"), "stock directory gives the symbols"),
                       (("--itch-symbols", "NOPE"), "NOPE not in")]:
        p = _launch(tmp_path, "--itch", SAMPLE, "--data-dir", str(tmp_path / "d"), *args)
        assert p.returncode == 2 and want in p.stderr, (args, p.stderr)
    p = _launch(tmp_path, "--itch-speed", "2", "--data-dir", str(tmp_path / "d"))
    assert p.returncode == 2 and "need --itch FILE" in p.stderr

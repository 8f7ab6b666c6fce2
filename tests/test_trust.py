"""Trust boundaries of the engine's input: a client writes its own ring records, so the
matcher's merge step stamps identity from the ring it read (``producer``), checks each
record's place in its ring (``pseq``) and the slot's account, and recovery counts only
what the matcher stamped. The id table's hash is keyed; a producer's open orders are capped."""

from __future__ import annotations

import numpy as np
import pytest

from shmex.engine import cells
from shmex.engine.config import EngineConfig
from shmex.errors import UsageError
from shmex.matcher import Matcher, check_book
from shmex.matcher import _kernels as matcher_kernels
from shmex.recovery import resume
from shmex.ring import Ring
from shmex.schema import COMMAND, REPORT, Kind, Reason, ReportKind, Side, Stp, Tif, commands
from shmex.wal.writer import WalWriter
from test_matcher_duty import _Rig, _published

BUY, SELL = Side.BUY, Side.SELL


def _cmd(n=1, *, kind=Kind.NEW, producer, pseq, cid, side=SELL, price=150, qty=1, account=0,
         stp=Stp.NONE, tif=Tif.GTC):
    """n commands with client ids cid, cid + 1, ... and pseqs pseq, pseq + 1, ... (or as given)."""
    c = commands(n)
    c["kind"], c["side"], c["order_type"], c["tif"], c["stp"] = int(kind), int(side), 1, int(tif), int(stp)
    c["producer"], c["account"], c["price"], c["qty"] = producer, account, price, qty
    c["client_id"] = np.arange(cid, cid + n)
    c["pseq"] = np.arange(pseq, pseq + n) if np.isscalar(pseq) else pseq
    return c


def _answers(reps, producer):
    return [(ReportKind(int(r["kind"])).name, Reason(int(r["reason"])).name, int(r["client_id"]), int(r["pseq"]))
            for r in reps if int(r["producer"]) == producer]


# ---------------------------------------------------------------- producer and pseq

def test_the_merge_step_stamps_producer_from_the_ring_it_read():
    """A's ring carries records that claim B's producer id: they act as A's."""
    rig = _Rig()
    rig.publish(1, _cmd(3, producer=2, pseq=1, cid=1))               # B rests three sells
    rig.duty()
    rig.publish(0, _cmd(kind=Kind.CANCEL, producer=2, pseq=1, cid=2))   # A cancels "B's" order 2
    rig.publish(0, _cmd(producer=2, pseq=2, cid=1, side=BUY, price=100))  # and rests "B's" id 1 again
    rig.duty()
    journal = _published(rig.journal, COMMAND)
    assert list(journal["producer"]) == [2, 2, 2, 1, 1]
    reps = _published(rig.out, REPORT)
    assert _answers(reps[reps["cmd_seq"] > 3], 1) == [("REJECTED", "UNKNOWN_ORDER", 2, 1), ("ACK", "NONE", 1, 2)]
    assert not len(reps[(reps["cmd_seq"] > 3) & (reps["producer"] == 2)])
    rest = rig.m.resting()
    assert sorted((int(r["producer"]), int(r["client_id"])) for r in rest) == [(1, 1), (2, 1), (2, 2), (2, 3)]
    assert check_book(rig.m) == []


def test_a_pseq_out_of_its_place_is_rejected_and_replay_rejects_it_the_same_way():
    """Each record's pseq must be its place in its ring (1, 2, 3, ...): a repeated, skipped
    or forged one is REJECTED BAD_PSEQ; the journal holds the place, so the reject report
    and every later pseq are the engine's own numbering, and replay gives the same reports."""
    rig = _Rig()
    rig.publish(0, _cmd(5, producer=1, pseq=np.array([1, 2, 2, 10**12, 5], np.uint64), cid=1))
    rig.duty()
    reps = _published(rig.out, REPORT)
    assert _answers(reps, 1) == [("ACK", "NONE", 1, 1), ("ACK", "NONE", 2, 2), ("REJECTED", "BAD_PSEQ", 3, 3),
                                 ("REJECTED", "BAD_PSEQ", 4, 4), ("ACK", "NONE", 5, 5)]
    journal = _published(rig.journal, COMMAND)
    assert list(journal["pseq"]) == [1, 2, 3, 4, 5]
    assert list(journal["seq"]) == [1, 2, 3, 4, 5]
    replay = Matcher(**rig.m.config)
    assert replay.apply(journal).tobytes() == reps.tobytes()
    assert replay.state_hash() == rig.m.state_hash()


def test_a_restart_skips_exactly_the_logged_commands_whatever_pseq_clients_wrote(shm_run, tmp_path):
    """A forges B's producer id with a huge pseq. The matcher sequences A's record and
    three of B's, dies before anything is durable (nothing released); B has sent two more.
    The restarted matcher's skip (WAL pseq scan + release of the logged prefix) must leave
    exactly what was never sequenced: A's record is not read twice, B's two are not lost."""
    rig = _Rig()
    rings = [Ring.create(shm_run, cells.in_role(k), 64, COMMAND) for k in range(2)]
    prods = [Ring.attach(r.name, COMMAND, side="producer") for r in rings]
    cons = [Ring.attach(r.name, COMMAND, side="consumer") for r in rings]
    try:
        rig.ins = [c.arrays() for c in cons]
        prods[0].publish(_cmd(producer=2, pseq=10**12, cid=7, side=BUY, price=100))
        b = _cmd(5, producer=2, pseq=1, cid=1)
        prods[1].publish(b[:3])
        rig.duty()                                   # seqs 1..4, journaled; DURABLE_SEQ 0: none released
        prods[1].publish(b[3:])                      # never read by the matcher that dies now
        journal = _published(rig.journal, COMMAND)
        assert len(journal) == 4
        rig.ins = None
        for c in cons:
            c.close()
        wal = tmp_path / "wal"
        w = WalWriter(wal, config=rig.m.config)
        w.append(journal)
        w.close(seal=True)
        cons = [Ring.attach(r.name, COMMAND, side="consumer") for r in rings]   # the successor
        last = resume.last_pseqs(str(wal), 1, 4)
        buf = commands(16)
        skipped = [resume.skip_logged(cons[k], int(last[k + 1]), buf) for k in range(2)]
        assert skipped == [1, 3]
        left = [buf[:c.consume(buf)].copy() for c in cons]
        assert len(left[0]) == 0
        assert list(left[1]["client_id"]) == [4, 5]
    finally:
        rig.ins = None
        for h in cons + prods + rings:
            h.close()
        for r in rings:
            r.unlink()


# ---------------------------------------------------------------- accounts

def test_a_slot_acts_only_for_its_account():
    """B's sells rest under B's account; A's buy carrying B's account with CANCEL_OLDEST is
    REJECTED WRONG_ACCOUNT (B's orders stay); A's buy with account 0 gets A's account and
    trades with B (different accounts: no self-trade prevention)."""
    rig = _Rig()
    rig.bind_account(0, 101)
    rig.bind_account(1, 202)
    rig.publish(1, _cmd(3, producer=2, pseq=1, cid=1))
    rig.duty()
    rig.publish(0, _cmd(producer=1, pseq=1, cid=1, side=BUY, account=202, stp=Stp.CANCEL_OLDEST))
    rig.publish(0, _cmd(producer=1, pseq=2, cid=2, side=BUY, price=100, account=101))
    rig.publish(0, _cmd(producer=1, pseq=3, cid=3, side=BUY, account=0, stp=Stp.CANCEL_OLDEST))
    rig.duty()
    reps = _published(rig.out, REPORT)
    a = _answers(reps, 1)
    assert a[0] == ("REJECTED", "WRONG_ACCOUNT", 1, 1)
    assert a[1] == ("ACK", "NONE", 2, 2)
    assert [k for k, *_ in a[2:]] == ["ACK", "FILL"]
    assert not len(reps[(reps["producer"] == 2) & (reps["kind"] == ReportKind.CANCELED)])
    journal = _published(rig.journal, COMMAND)
    assert list(journal["account"]) == [202, 202, 202, 202, 101, 101]
    rest = rig.m.resting()
    assert sorted((int(r["producer"]), int(r["client_id"]), int(r["account"])) for r in rest) == [
        (1, 2, 101), (2, 2, 202), (2, 3, 202)]


def test_a_multi_account_slot_keeps_the_account_each_command_carries():
    """A trusted multi-account slot (a gateway that stamps each session's account itself)."""
    rig = _Rig(multi_account=(0,))
    rig.bind_account(1, 202)
    rig.publish(0, _cmd(2, producer=1, pseq=1, cid=1, account=np.array([7, 8]), price=100, side=BUY))
    rig.publish(1, _cmd(producer=2, pseq=1, cid=1, account=9))
    rig.duty()
    journal = _published(rig.journal, COMMAND)
    assert list(journal["account"]) == [7, 8, 9]
    reps = _published(rig.out, REPORT)
    assert _answers(reps, 2) == [("REJECTED", "WRONG_ACCOUNT", 1, 1)]


def test_engine_config_binds_load_producer_accounts_and_checks_them(tmp_path):
    base = dict(run_id="ab" * 8, data_dir=str(tmp_path), producers=2, clients=2)
    cfg = EngineConfig(**base, producer_accounts=(5,))
    assert [cfg.account_of(k) for k in range(4)] == [5, cells.default_account(1), cells.default_account(2),
                                                      cells.default_account(3)]
    with pytest.raises(UsageError, match="producer_accounts"):
        EngineConfig(**base, producer_accounts=(5, 5))
    with pytest.raises(UsageError, match="producer_accounts"):
        EngineConfig(**base, producer_accounts=(1, 2, 3))
    with pytest.raises(UsageError, match="multi_account_slots"):
        EngineConfig(**base, multi_account_slots=(4,))


# ---------------------------------------------------------------- id table and open orders

_K1, _K2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F
_M64 = (1 << 64) - 1


def _crafted_for_the_fixed_hash(n, prod, hsize):
    """n client ids that all share one home under the id table's fixed (unkeyed) hash, as
    anyone reading the source can compute: invert x -> ((cid >> 4) ^ prod * K2) * K1,
    x ^= x >> 29 for x values that agree in the masked bits; 16 consecutive ids per x."""
    inv_k1 = pow(_K1, -1, 1 << 64)
    out = []
    step = hsize >> 4
    j = 0
    while len(out) < n:
        j += 1
        x = j * step                   # (x << 4) & mask == 0 for every j
        y = x
        for _ in range(3):             # invert x ^= x >> 29 (three rounds cover 64 bits)
            y = x ^ (y >> 29)
        hi = ((y * inv_k1) & _M64) ^ ((prod * _K2) & _M64)
        if hi >> 60:
            continue                   # cid >> 4 must fit in 60 bits
        out.extend((hi << 4) | r for r in range(16))
    return np.array(out[:n], dtype=np.uint64)


def _displacement(m):
    """Sum over the id table's entries of how far each sits from its home (probes wasted)."""
    b = m.book
    mask = len(b.ids) - 1
    used = np.flatnonzero(b.ids["prod"] >= 0)
    return sum((int(h) - int(matcher_kernels._home(b, np.int64(b.ids[h]["prod"]), np.uint64(b.ids[h]["cid"])))) & mask
               for h in used)


def test_client_ids_crafted_against_a_fixed_hash_do_not_pile_up_in_the_id_table():
    """A fixed hash puts all these ids in one probe run (about n * n / 2 probes); keyed,
    they land like random ids: a few probes each (a run of 16 per home, half the table
    free), as honest ids 1, 2, 3, ... do."""
    n = 16_384
    books = []
    for crafted in (False, True):
        m = Matcher(symbols=1, price_lo=1, price_hi=1000, capacity=n)
        c = _cmd(n, producer=1, pseq=1, cid=1, side=BUY, price=10)
        if crafted:
            c["client_id"] = _crafted_for_the_fixed_hash(n, 1, len(m.book.ids))
        reps = m.process(c)
        assert (reps["kind"] == ReportKind.ACK).all() and m.live == n
        assert check_book(m) == []
        books.append(m)
    honest, crafted = (_displacement(m) for m in books)
    assert honest < 16 * n
    assert crafted < 16 * n


def test_the_hash_key_is_book_state_that_snapshots_and_config_reproduce():
    a, b = Matcher(capacity=64), Matcher(capacity=64)
    assert a.config["hash_key"] != b.config["hash_key"]          # drawn per book
    c = _cmd(40, producer=3, pseq=1, cid=1000, side=BUY, price=10)
    a.process(c.copy())
    again = Matcher(**a.config)                                   # what replay from the manifest builds
    again.process(c.copy())
    assert again.book.ids.tobytes() == a.book.ids.tobytes()
    copy = Matcher.from_state(a.export_state())
    assert copy.config == a.config
    cfg = EngineConfig(run_id="cd" * 8, data_dir="/tmp/unused")
    assert 0 <= cfg.book["hash_key"] < 1 << 64
    assert EngineConfig.from_dict(cfg.to_dict()).book == cfg.book   # children get the parent's key
    with pytest.raises(UsageError, match="hash_key"):
        Matcher(hash_key=-1)


def test_open_orders_are_capped_per_producer():
    m = Matcher(symbols=1, price_lo=100, price_hi=200, capacity=64, max_open_orders=3)
    for i in range(3):
        m.submit(BUY, 110 + i, 1, client_id=i + 1, producer=1)
    r = m.submit(BUY, 105, 1, client_id=9, producer=1)
    assert [(ReportKind(int(x["kind"])).name, Reason(int(x["reason"])).name) for x in r] == [
        ("REJECTED", "TOO_MANY_ORDERS")]
    assert [ReportKind(int(x["kind"])).name for x in m.submit(BUY, 105, 1, client_id=9, producer=2)] == ["ACK"]
    r = m.submit(SELL, 150, 1, client_id=10, producer=1, tif=Tif.IOC)       # never rests: not capped
    assert [ReportKind(int(x["kind"])).name for x in r] == ["ACK", "EXPIRED"]
    m.submit(SELL, 112, 1, client_id=11, producer=3)                        # fills producer 1's best
    assert [ReportKind(int(x["kind"])).name for x in m.submit(BUY, 105, 1, client_id=12, producer=1)] == ["ACK"]
    m.cancel(12, producer=1)
    assert [ReportKind(int(x["kind"])).name for x in m.submit(BUY, 105, 1, client_id=13, producer=1)] == ["ACK"]
    assert check_book(m) == []
    assert m.config["max_open_orders"] == 3
    with pytest.raises(UsageError, match="max_open_orders"):
        Matcher(max_open_orders=0)
    with pytest.raises(UsageError, match="--max-open-orders"):
        EngineConfig(run_id="ef" * 8, data_dir="/tmp/unused", max_open_orders=0)
    assert EngineConfig(run_id="ef" * 8, data_dir="/tmp/unused", max_open_orders=7).book["max_open_orders"] == 7
    import argparse

    from shmex.commands import launch
    p = argparse.ArgumentParser()
    launch.add_arguments(p)
    assert EngineConfig.from_args(p.parse_args(["--max-open-orders", "9"])).book["max_open_orders"] == 9


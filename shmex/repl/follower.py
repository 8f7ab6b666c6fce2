"""The follower engine: the stream -> its own WAL, snapshots and matcher; state hashes
checked against the primary's checkpoints; on takeover, the stream to its end and the
lease, then an engine over its data directory that continues the same seq.

- Every command is applied in seq order through `Matcher.process_into(stamp=False)`,
  as recovery replays a log, and appended to the follower's WAL (`WalWriter`, group
  commit); a message that does not continue the seq (a gap) stops it with status 1.
- A message marked as a checkpoint has the follower's own state hash taken at its last
  seq; the primary's hash for that seq (on the hash subject) must equal it.
- A restarted follower recovers its directory (`recover`: snapshot + WAL) and subscribes
  just after the last journal message it holds whole, found by a binary search over the
  stream (`start_sequence`): however long the stream, it reads none of those again.
- Lag: seqs (the stream's last seq minus the applied one) and ms (wall clock now minus
  the primary's append time of the message just applied).
- The primary's book comes from the stream's last primary doc (`cluster.primary_doc`).
  Each primary doc's runs go into the manifest's ``journal_runs``
  (`WalWriter.note_journal_runs`) as they arrive, before the commands of a new run, and
  its symbols file into SYMBOLS_FILE: the feed of the follower's directory is the
  primary's, and an engine that takes over has the primary's instruments.
- ``on_commit(durable_seq)`` is called after each commit of the follower's WAL (a feed
  reading the follower's durable log waits on it).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from shmex.errors import CannotOpen, CorruptRecord
from shmex.repl import cluster, lease, names
from shmex.schema import COMMAND

COMMIT_EVERY = 64          # messages between WAL commits while more are pending
STALL_S = 10.0             # nothing delivered this long while the stream holds more: subscribe again
LEASE_LOOK_S = 0.1         # --takeover: how often the lease is looked at (one key-value get)
SYMBOLS_FILE = "primary-symbols.csv"   # in the data directory: the primary's symbols file


@dataclass
class Followed:
    status: int = 0                      # 0 ok, 1 a check failed (gap, hash mismatch)
    reason: str = ""
    applied_seq: int = 0
    messages: int = 0
    commands: int = 0
    checkpoints: int = 0                 # primary hashes equal to the follower's
    unchecked: int = 0                   # primary hashes at a seq the follower kept no hash of
    final_hash: str = ""
    lag_ms: list = field(default_factory=list)
    took_over: bool = False
    lease_revision: int = 0
    takeover_ms: float = 0.0             # lease taken -> stream applied to its end
    resubscribed: int = 0                # subscriptions made again after a stall
    subscribed_from: int = 0             # the stream sequence the first subscription started at
    book: dict = field(default_factory=dict)   # the book's configuration (Matcher's arguments)
    symbols_path: str | None = None      # the primary's symbols file, written here


class Follower:
    def __init__(self, data_dir: str, servers, stream: str, bucket: str, *, lease_s: float = 2.0,
                 snapshot_every: int = 1_000_000, takeover: bool = False, until_end: bool = False,
                 promote: bool = False, progress=None, stall_s: float = STALL_S, on_commit=None):
        self.data_dir = os.path.abspath(data_dir)
        self.servers, self.stream, self.bucket = tuple(servers), stream, bucket
        self.lease_s, self.snapshot_every = lease_s, snapshot_every
        self.takeover, self.until_end, self.progress = takeover or promote, until_end, progress
        self.promote, self.stall_s = promote, stall_s
        self.on_commit = on_commit
        self.out = Followed()
        self.own: dict[int, str] = {}
        self.stop = False
        self.seen_primary = False            # --takeover acts only on a lease it saw held, then lapse

    # ---- set-up ----------------------------------------------------------------------------
    async def _primary(self, js) -> dict:
        """The stream's last primary doc (`cluster.primary_doc`), once it has one."""
        t0, said = time.monotonic(), False
        while True:
            doc = await cluster.answered(lambda: cluster.last_primary(js, self.stream))
            if doc is not None:
                return doc
            if not said and time.monotonic() - t0 > 5.0:
                said = True
                print(f"follow: waiting for the primary's book on {names.primary_subject(self.stream)} "
                      f"(no primary has started its replicator on this stream)", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)

    def _write_symbols(self, text: str | None) -> str | None:
        """The primary's symbols file into the data directory (atomically); -> its path."""
        from shmex.files import replace_durably

        if text is None:
            return None
        path = os.path.join(self.data_dir, SYMBOLS_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text:
                    return path
        except FileNotFoundError:
            pass
        replace_durably(path, text.encode("utf-8"))
        return path

    def _open_local(self, book: dict):
        from shmex.matcher import Matcher
        from shmex.recovery.recover import recover
        from shmex.wal.segment import list_segments
        from shmex.wal.writer import WalWriter

        if os.path.isdir(self.data_dir) and list_segments(self.data_dir):
            m = recover(self.data_dir).matcher
        else:
            m = Matcher(**book)
        wal = WalWriter(self.data_dir, mode="group", config=book, origin=False)
        if wal.next_seq != m.last_seq + 1:
            raise CorruptRecord(self.data_dir, 0, m.last_seq + 1,
                                f"the log continues at seq {wal.next_seq}, the recovered book at {m.last_seq + 1}")
        return m, wal

    # ---- the loop --------------------------------------------------------------------------
    async def run(self) -> Followed:
        nc, js = await cluster.connect(self.servers)
        try:
            kv = await cluster.answered(lambda: cluster.ensure(js, self.stream, self.bucket, self.lease_s),
                                        deadline=time.monotonic() + cluster.ANSWER_S)
            primary = await self._primary(js)
            self.m, self.wal = self._open_local(primary["book"])
            self.out.book = self.m.config
            self.out.symbols_path = self._write_symbols(primary.get("symbols_text"))
            self.wal.note_journal_runs(primary["runs"])   # the latest: it extends every earlier one
            if self.on_commit is not None and self.wal.durable_seq:
                self.on_commit(self.wal.durable_seq)      # a restarted follower's log is durable already
            self.out.applied_seq = self.m.last_seq
            self.next_snap = self.m.last_seq + self.snapshot_every if self.snapshot_every else 0
            try:
                await self._follow(js, kv)
            finally:
                if self.out.took_over or self.out.status == 0:
                    self._finish()
                else:
                    self.wal.close(seal=True)
        finally:
            await nc.close()
        return self.out

    async def _subscribe(self, js, start: int):
        """An ordered consumer of the whole stream from stream sequence `start`."""
        from nats.js import api

        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        return await cluster.answered(lambda: js.subscribe(f"{self.stream}.>", stream=self.stream,
                                                           ordered_consumer=True, config=cfg))

    async def _unstalled(self, js, sub, now: float):
        """The subscription, or a new one from the next stream sequence when nothing came
        for stall_s while the stream holds more (nats-py's ordered consumer recreates its
        server-side consumer in a background task and gives up when that request fails)."""
        if now - self.last_msg_at < self.stall_s:
            return sub
        try:
            end = await cluster.stream_last_seq(js, self.stream)
        except cluster.unanswered():
            return sub
        if end <= self.received:
            return sub
        print(f"follow: no message for {now - self.last_msg_at:.0f} s while the stream holds up to sequence "
              f"{end:,}: subscribing again from {self.received + 1:,}", file=sys.stderr, flush=True)
        try:
            await sub.unsubscribe()
        except Exception:   # noqa: BLE001 - the old subscription is dropped whatever it says
            pass
        self.out.resubscribed += 1
        self.last_msg_at = now
        return await self._subscribe(js, self.received + 1)

    async def _follow(self, js, kv) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        start = await cluster.answered(lambda: start_sequence(js, self.stream, self.out.applied_seq))
        self.out.subscribed_from = start
        sub = await self._subscribe(js, start)
        last_tick = last_lease = time.monotonic()
        since_commit = 0
        stream_seq = 0
        self.t0 = self.last_msg_at = time.monotonic()
        self.received = start - 1          # the stream sequence of the last message taken
        while not self.stop:
            try:
                msg = await sub.next_msg(timeout=0.05)
            except (NatsTimeout, asyncio.TimeoutError):
                msg = None
            if msg is not None:
                sseq = msg.metadata.sequence.stream
                if sseq <= self.received:
                    continue                  # delivered again by a new subscription
                self.received, self.last_msg_at = sseq, time.monotonic()
                pending = msg.metadata.num_pending if msg.metadata else 0
                if msg.subject == names.hash_subject(self.stream):
                    # --until-end: the final hash of the stream's last run; an earlier
                    # run's (the primary was relaunched after it) has messages after it
                    if self._check_hash(msg) and self.until_end and not pending:
                        return
                elif msg.subject == names.primary_subject(self.stream):
                    self._note_primary(msg)
                else:
                    self._apply(msg)
                    since_commit += 1
                if self.out.status:
                    return
                if pending and since_commit < COMMIT_EVERY:
                    continue
            if since_commit:
                self._commit()
                since_commit = 0
                self._maybe_snapshot()
            now = time.monotonic()
            if now - last_tick >= 1.0:
                last_tick = now
                try:
                    _, stream_seq = await cluster.stream_end(js, self.stream)
                except cluster.unanswered():
                    pass                      # a slow answer: the lag shown is a second older
                if self.progress:
                    self.progress(self, stream_seq, now - self.t0)
                sub = await self._unstalled(js, sub, now)
            if self.takeover and (now - last_lease >= min(LEASE_LOOK_S, self.lease_s / 4) or self.promote):
                last_lease = now
                if await self._try_take(js, kv, sub):
                    return

    def _apply(self, msg) -> None:
        h = msg.headers or {}
        first, last = int(h[names.FIRST_SEQ]), int(h[names.LAST_SEQ])
        applied = self.out.applied_seq
        if last <= applied:
            return                            # held already (a restarted follower)
        if first > applied + 1:
            self._fail(f"stream message {msg.metadata.sequence.stream if msg.metadata else '?'} holds seqs "
                       f"{first}..{last}: seqs {applied + 1}..{first - 1} are missing (a gap)")
            return
        cmds = np.frombuffer(msg.data, dtype=COMMAND).copy()
        if len(cmds) != last - first + 1 or int(cmds[0]["seq"]) != first or int(cmds[-1]["seq"]) != last:
            self._fail(f"stream message for seqs {first}..{last} holds {len(cmds)} commands "
                       f"({int(cmds[0]['seq']) if len(cmds) else '-'}..): it does not match its headers")
            return
        cmds = cmds[applied + 1 - first:]
        self.m.process_into(cmds, stamp=False)
        self.wal.append(cmds)
        self.out.applied_seq = last
        self.out.messages += 1
        self.out.commands += len(cmds)
        if h.get(names.CHECKPOINT):
            self.own[last] = self.m.state_hash()
        sent = int(h.get(names.SENT_NS, 0))
        if sent:
            self.out.lag_ms.append((time.time_ns() - sent) / 1e6)

    def _note_primary(self, msg) -> None:
        import json

        try:
            doc = json.loads(msg.data)
            self.wal.note_journal_runs(doc["runs"])
            self.out.symbols_path = self._write_symbols(doc.get("symbols_text"))
        except (ValueError, KeyError, TypeError, CorruptRecord) as e:
            self._fail(f"stream message {msg.metadata.sequence.stream if msg.metadata else '?'} on "
                       f"{msg.subject}: not a primary doc ({type(e).__name__}: {e})")

    def _commit(self) -> None:
        durable = self.wal.commit()
        if self.on_commit is not None:
            self.on_commit(durable)

    def _check_hash(self, msg) -> bool:
        """-> True when this was the primary's final hash and it matched."""
        import json

        doc = json.loads(msg.data)
        seq, theirs = int(doc["seq"]), doc["state_hash"]
        if seq == self.out.applied_seq:
            ours = self.m.state_hash()
        else:
            ours = self.own.pop(seq, None)
        for s in [s for s in self.own if s < seq]:
            del self.own[s]
        if ours is None:
            self.out.unchecked += 1
            return False
        if ours != theirs:
            self._fail(f"state hash at seq {seq}: the primary's is {theirs}, this follower's {ours}")
            return False
        self.out.checkpoints += 1
        if doc.get("final"):
            self.out.final_hash = ours
            return True
        return False

    def _maybe_snapshot(self) -> None:
        from shmex.recovery.recover import snapshot_dir
        from shmex.snapshot import store

        if self.next_snap and self.m.last_seq >= self.next_snap:
            info = store.write_snapshot(snapshot_dir(self.data_dir), self.m)
            self.wal.note_snapshot(info.seq, info.state_hash)
            self.next_snap = self.m.last_seq + self.snapshot_every

    def _fail(self, why: str) -> None:
        self.out.status, self.out.reason = 1, why

    def _finish(self) -> None:
        """Commit, snapshot the book as of the last applied seq, seal the log."""
        from shmex.recovery.recover import snapshot_dir
        from shmex.snapshot import store

        self._commit()
        if self.m.last_seq:
            info = store.write_snapshot(snapshot_dir(self.data_dir), self.m)
            self.wal.note_snapshot(info.seq, info.state_hash)
        self.wal.close(seal=True)
        self.out.final_hash = self.out.final_hash or self.m.state_hash()

    # ---- takeover --------------------------------------------------------------------------
    async def _try_take(self, js, kv, sub) -> bool:
        """Take the lease if it lapsed; then apply the stream to its end. -> True if taken."""
        try:
            rev, other = await lease.current(kv, names.lease_key(self.stream))
        except cluster.unanswered():
            return False              # asked again at the next look
        if other is not None:
            self.seen_primary = True
            if self.promote:
                raise CannotOpen(f"promote: the lease is held by {lease.describe(other)}; "
                                 f"stop that primary (or wait {self.lease_s:g} s after its death)")
            return False
        if not (self.seen_primary or self.promote):
            return False              # no primary yet (it may be starting): nothing lapsed
        try:
            rev = await lease.take(kv, names.lease_key(self.stream), lease.holder(self.data_dir, "follower"))
        except lease.Fenced:
            return False              # another follower was quicker
        except cluster.unanswered():
            return False              # not settled: tried again at the next look
        t = time.monotonic()
        self.out.took_over, self.out.lease_revision = True, rev
        print(f"follow: the lease lapsed; took it (revision {rev}); applying the stream to its end",
              file=sys.stderr, flush=True)
        await self._drain(js, sub)
        self.out.takeover_ms = (time.monotonic() - t) * 1e3
        return True

    async def _drain(self, js, sub) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        _, end = await cluster.answered(lambda: cluster.stream_end(js, self.stream))
        while self.out.applied_seq < end and not self.out.status:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):
                _, end = await cluster.answered(lambda: cluster.stream_end(js, self.stream))
                sub = await self._unstalled(js, sub, time.monotonic())
                continue
            if msg.metadata.sequence.stream <= self.received:
                continue
            self.received, self.last_msg_at = msg.metadata.sequence.stream, time.monotonic()
            if msg.subject == names.hash_subject(self.stream):
                self._check_hash(msg)
            elif msg.subject == names.primary_subject(self.stream):
                self._note_primary(msg)
            else:
                self._apply(msg)
        if self.out.status:
            raise CannotOpen(f"takeover stopped: {self.out.reason}")


async def start_sequence(js, stream: str, applied: int) -> int:
    """The stream sequence to follow `stream` from when seqs 1..applied are held: the one
    just after the last journal message whose seqs are all held (1 if there is none).
    Journal messages carry increasing seqs in stream order, so a binary search
    over stream sequences finds it in about log2(messages) lookups; hash messages before
    it are of seqs already held."""
    from nats.js.errors import NotFoundError

    if applied <= 0:
        return 1
    subject = names.journal_subject(stream)

    async def journal_at(s: int):
        """(stream sequence, last seq) of the first journal message at or after s, or None."""
        try:
            m = await js.get_msg(stream, seq=s, subject=subject, next=True)
        except NotFoundError:
            return None
        return int(m.seq), int((m.headers or {})[names.LAST_SEQ])

    lo, hi = 1, await cluster.stream_last_seq(js, stream) + 1    # the answer is in lo..hi
    while lo < hi:
        mid = (lo + hi) // 2
        at = await journal_at(mid)
        if at is None or at[1] > applied:
            hi = mid
        else:
            lo = at[0] + 1            # every s in mid..at[0] finds this same message
    return lo


def lag_percentiles(lag_ms: list) -> dict:
    if not lag_ms:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(lag_ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}

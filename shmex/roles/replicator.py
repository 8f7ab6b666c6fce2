"""The replicator: the durable WAL -> the engine's NATS JetStream stream; R_REPLICATED_SEQ.

- It reads only what DURABLE_SEQ covers (`wal.tail.WalTail`), so R_REPLICATED_SEQ never
  passes DURABLE_SEQ; it stores R_REPLICATED_SEQ (release) only after the stream's quorum
  acknowledged the message (JetStream acks an R3 append once a majority stored it).
- One message at a time, in seq order: as many durable commands as there are (at most
  BATCH), cut at the seq of each snapshot the matcher took (SNAP_SEQ), headers naming the
  range; the message id is derived from the range and each append states the stream
  sequence it expects, so a retry after a lost ack is de-duplicated and an append from a
  deposed primary is refused.
- An append that is not acknowledged in time (no quorum) is retried, unchanged, until it
  is; R_QUORUM says 0 meanwhile and the release of reports waits (mode replicated).
- A restarted replicator reads the stream's last message and continues after its last
  seq: no duplicate, no gap.
- It holds the lease: taken at the start, renewed every lease_s / 4. Another holder, or an
  append refused because the stream went on without this engine, is a fail-stop
  (`halt.FENCED`, exit HALT_STATUS): the engine stops accepting orders and says why.
- Beside the journal it publishes each snapshot's (seq, state hash) once the snapshot file
  exists, and the final state hash at the end (`repl.names.hash_subject`); and the
  primary's book, symbols file and runs (`repl.names.primary_subject`) at its start and
  whenever they changed, before the commands of a new run and again once the last run
  is sealed: a follower's feed is the primary's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from shmex.engine import cells, halt
from shmex.engine.ctl import Aborted, Ctl, ProcessSlot, load_hash
from shmex.errors import CannotOpen, CorruptRecord
from shmex.repl import cluster, lease, names
from shmex.schema import commands

BATCH = 8192              # commands per message at most (64 B each: 512 KiB, under NATS's 1 MiB)
ACK_TIMEOUT_S = 1.0       # an append unacknowledged this long is retried (the quorum may be gone)
IDLE_S = 0.0002           # nap when nothing durable is new
HASH_POLL_S = 0.1         # under load, look for written snapshots this often
FINAL_WAIT_S = 60.0       # at the end, how long the snapshot hashes still due are waited for
LEASE_MARGIN = 0.75       # append only within this fraction of the TTL since the last renewal
DUPLICATE_IN_PROCESS = 10158   # JetStream: "duplicate message id is in process"


def warm() -> None:
    import importlib

    importlib.import_module("nats")          # load the client before READY
    from shmex.wal.tail import WalTail

    WalTail("/nonexistent", 1)               # and the tail reader (its scan kernel is the reader's)


def run(cfg, ctl: Ctl, me: ProcessSlot, index: int = 0) -> int:
    return asyncio.run(Replicator(cfg, ctl, me).main())


class Fenced(Exception):
    pass


class Replicator:
    def __init__(self, cfg, ctl: Ctl, me: ProcessSlot):
        self.cfg, self.ctl, self.me = cfg, ctl, me
        self.base = cells.proc_cell(me.slot, cells.P_ROLE)
        self.subject = names.journal_subject(cfg.nats_stream)
        self.stream = cfg.nats_stream
        self.origin = lease.origin(cfg.data_dir)
        self.key = names.lease_key(cfg.nats_stream)
        self.pending: list[int] = []      # snapshot seqs not yet shipped (cut points)
        self.hash_due: list[int] = []     # snapshot seqs shipped whose hash is not published yet
        self.fenced: str | None = None
        self.runs_stat = None             # manifest.stat_key when it was last read
        self.primary_sent: dict | None = None   # the primary doc the stream holds last

    def cell(self, i: int) -> int:
        return self.base + i

    async def main(self) -> int:
        cfg, ctl = self.cfg, self.ctl
        try:
            nc, js = await cluster.connect(cfg.nats)
        except CannotOpen as e:
            print(f"replicator: {e}", file=sys.stderr, flush=True)
            return 1
        try:
            return await self._run(js)
        except Fenced as e:
            print(f"replicator: fenced, stopping: {e}; this engine is no longer the primary and "
                  f"stops accepting orders", file=sys.stderr, flush=True)
            halt.record_fenced(ctl, ctl.load(self.cell(cells.R_REPLICATED_SEQ)))
            return halt.HALT_STATUS
        except Aborted:
            return 0
        finally:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:   # noqa: BLE001 - the stop goes on whatever the connection says
                pass

    async def _run(self, js) -> int:
        from shmex.wal.tail import WalTail

        cfg, ctl, me = self.cfg, self.ctl, self.me
        self._js = js
        self.kv = kv = await self._retry(lambda: cluster.ensure(js, self.stream, cfg.nats_bucket, cfg.lease_s))
        self.holder = lease.holder(cfg.data_dir, cfg.run_id)
        # the lease lapses after the bucket's TTL, set when the bucket was made: the margin
        # and the renewals follow the shorter of it and lease_s
        ttl = (await self._retry(kv.status)).ttl
        self.lease_s = min(cfg.lease_s, ttl) if ttl else cfg.lease_s
        try:
            first = ctl.load(self.cell(cells.R_LEASE_REV)) == 0 and cfg.lease_revision
            self.rev = await self._retry(lambda: lease.take(kv, self.key, self.holder, revision=cfg.lease_revision if first else 0))
        except lease.Fenced as e:
            raise Fenced(str(e)) from None
        self.renewed_at = time.monotonic()
        ctl.store(self.cell(cells.R_LEASE_REV), self.rev)
        with open(cfg.symbols_path, encoding="utf-8") as fh:
            self.symbols_text = fh.read()
        self.sseq, shipped = await self._retry(lambda: cluster.stream_end(js, self.stream))
        self.sseq = await self._retry(lambda: cluster.stream_last_seq(js, self.stream))
        self.primary_sent = await self._retry(lambda: cluster.last_primary(js, self.stream))
        durable = ctl.load(cells.DURABLE_SEQ)
        if shipped > durable:
            raise Fenced(f"the stream {self.stream} holds seqs up to {shipped:,}, this log only to {durable:,}")
        await self._ship_primary()            # a follower waits for the book before anything else
        self.shipped = shipped
        ctl.store(self.cell(cells.R_REPLICATED_SEQ), shipped)
        ctl.store(self.cell(cells.R_QUORUM), 1)
        tail = WalTail(cfg.data_dir, shipped + 1)
        buf = commands(BATCH)
        renewal = asyncio.create_task(self._renew_loop())
        hashes_at = 0.0
        me.ready()
        try:
            await self._wait_go()
            while True:
                if self.fenced:
                    raise Fenced(self.fenced)
                ctl.check()
                me.beat()
                durable = ctl.load(cells.DURABLE_SEQ)   # ORDER: acquire: the records are in the log
                self._note_snapshot()
                until = durable
                cut = [s for s in self.pending if s > self.shipped]
                if cut and min(cut) <= durable:
                    until = min(cut)
                try:
                    n = tail.read(until, buf)
                except CorruptRecord as e:
                    print(f"replicator: {e}", file=sys.stderr, flush=True)
                    return 1
                if n:
                    await self._ship_primary()
                    await self._append(buf[:n], checkpoint=bool(cut) and int(buf[n - 1]["seq"]) == min(cut))
                if self.hash_due and (not n or time.monotonic() - hashes_at > HASH_POLL_S):
                    hashes_at = time.monotonic()
                    await self._publish_hashes(js)
                if n:
                    continue
                if ctl.load(cells.WAL_DONE) and self.shipped >= ctl.load(cells.DURABLE_SEQ):
                    await self._ship_primary()    # a clean stop sealed the run before WAL_DONE
                    if ctl.load(cells.MATCHER_DONE) == 1:
                        await self._final_snapshot_written()
                        await self._publish_hashes(js, at_end=True)
                    await self._final_hash(js)
                    return 0
                await asyncio.sleep(IDLE_S)
        finally:
            renewal.cancel()
            tail.close()

    async def _wait_go(self) -> None:
        """`ProcessSlot.wait_go` without blocking the loop: the lease renewal runs meanwhile."""
        while self.ctl.phase == cells.PH_STARTING:
            self.ctl.check(every_ns=0)
            self.me.beat()
            await asyncio.sleep(0.002)
        if self.ctl.phase == cells.PH_ABORT:
            raise Aborted("aborted before the start")
        self.me.wait_go()         # returns at once now; starts the slot's CPU and wall clocks

    def _note_snapshot(self) -> None:
        s = self.ctl.load(cells.SNAP_SEQ)
        if s > self.shipped and s not in self.pending:
            self.pending.append(s)

    async def _retry(self, make):
        """Await ``make()`` until the cluster answers (a lost quorum at the start waits)."""
        return await cluster.answered(make, waiting=self._unanswered)

    def _unanswered(self) -> None:
        self.ctl.store(self.cell(cells.R_QUORUM), 0)
        self.ctl.check()
        self.me.beat()

    async def _ship_primary(self) -> None:
        """Publish the primary doc (book, symbols file, the log's runs) if it differs from
        the one the stream holds last. Called after durable commands were read and before
        they are appended: the WAL writer writes a run's entry before any of its commands
        can be durable, so the runs a follower holds cover every command it receives after
        them."""
        import hashlib

        from shmex.wal import manifest

        key = manifest.stat_key(self.cfg.data_dir)   # None: the WAL writer is opening (no run yet)
        if key is not None and key == self.runs_stat:
            return
        self.runs_stat = key
        runs = manifest.feed_runs(manifest.read(self.cfg.data_dir)) if key is not None else []
        doc = cluster.primary_doc(self.cfg.book, self.symbols_text, runs)
        if doc == self.primary_sent:
            return
        body = json.dumps(doc, sort_keys=True).encode()
        # the id names the content: a retry after a lost ack is de-duplicated, and runs
        # only grow (a new run, a run sealed), so no earlier message had the same content
        self.sseq = await self._publish(names.primary_subject(self.stream), body,
                                        {names.MSG_ID: f"{self.stream}:primary-{hashlib.sha256(body).hexdigest()[:32]}"})
        self.primary_sent = doc

    async def _append(self, cmds, checkpoint: bool) -> None:
        first, last = int(cmds[0]["seq"]), int(cmds[-1]["seq"])
        hdr = {names.FIRST_SEQ: str(first), names.LAST_SEQ: str(last), names.SENT_NS: str(time.time_ns()),
               names.MSG_ID: names.msg_id(self.stream, first, last), names.ORIGIN: self.origin}
        if checkpoint:
            hdr[names.CHECKPOINT] = "1"
            self.hash_due.append(last)
        self.sseq = await self._publish(self.subject, cmds.tobytes(), hdr)
        self.shipped = last
        c = self.ctl
        c.store(self.cell(cells.R_REPLICATED_SEQ), last)  # ORDER: after the quorum's ack; pairs with the publisher's load
        c.a[self.cell(cells.R_MESSAGES)] += 1
        c.store(self.cell(cells.R_STREAM_SEQ), self.sseq)

    async def _publish(self, subject: str, payload: bytes, hdr: dict) -> int:
        """Append at the stream sequence after self.sseq, retried until acknowledged; -> its sequence."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import APIError, NoStreamResponseError

        hdr = {**hdr, names.EXPECTED_LAST: str(self.sseq)}
        while True:
            await self._hold_lease()
            try:
                ack = await self.js_publish(subject, payload, hdr)
                self.ctl.store(self.cell(cells.R_QUORUM), 1)
                return int(ack.seq)
            except (NatsTimeout, asyncio.TimeoutError, NoStreamResponseError):
                self.ctl.store(self.cell(cells.R_QUORUM), 0)
            except APIError as e:
                if e.err_code not in (10071, 10164):   # wrong last sequence
                    # 503: no quorum (JetStream unavailable); 10158: an earlier try of this
                    # very message is still being proposed (its fate is decided when the
                    # quorum answers): both are asked again, unchanged
                    if e.code == 503 or e.err_code == DUPLICATE_IN_PROCESS:
                        self.ctl.store(self.cell(cells.R_QUORUM), 0)
                        self.ctl.check()
                        self.me.beat()
                        await asyncio.sleep(0.05)
                        continue
                    raise
                got = await self._retry(lambda: self._landed(hdr))
                if got:
                    return got
                raise Fenced(f"append after stream sequence {self.sseq} refused: the stream "
                             f"{self.stream} went on without this engine") from None
            if self.fenced:
                raise Fenced(self.fenced)
            self.ctl.check()
            self.me.beat()

    async def _hold_lease(self) -> None:
        """Append only while the lease is surely ours: renewed within LEASE_MARGIN of its
        TTL (a primary paused past it may have been replaced; it waits for a renewal,
        which either succeeds or fences it)."""
        while time.monotonic() - self.renewed_at > LEASE_MARGIN * self.lease_s:
            if self.fenced:
                raise Fenced(self.fenced)
            self.ctl.store(self.cell(cells.R_QUORUM), 0)
            self.ctl.check()
            self.me.beat()
            await asyncio.sleep(0.01)

    async def js_publish(self, subject, payload, hdr):
        return await self._js.publish(subject, payload, timeout=ACK_TIMEOUT_S, headers=hdr)

    async def _landed(self, hdr: dict) -> int:
        """An earlier try of this append may have been stored (its ack lost): -> its stream
        sequence if the stream's last message is it, else 0."""
        last = await self._js.get_msg(self.stream, seq=await cluster.stream_last_seq(self._js, self.stream))
        if last.headers and last.headers.get(names.MSG_ID) == hdr[names.MSG_ID]:
            return int(last.seq)
        return 0

    async def _publish_hashes(self, js, *, at_end: bool = False) -> None:
        """Publish the hash of each shipped checkpoint whose snapshot file is written. At
        the end (the matcher done: it reaped its snapshot writers) one still missing was
        never written (the matcher skipped it while a writer was busy) or was pruned."""
        from shmex.snapshot import store

        if not self.hash_due:
            return
        snap_dir = os.path.join(self.cfg.data_dir, "snapshots")
        written = dict(store.list_snapshots(snap_dir)) if os.path.isdir(snap_dir) else {}
        for s in list(self.hash_due):
            info = None
            if s in written:
                try:
                    info, _ = store.read_header(written[s])
                except (CorruptRecord, CannotOpen, OSError):
                    info = None        # pruned meanwhile
            if info is not None:
                await self._hash(info.seq, info.state_hash)
            if info is not None or at_end:
                self.hash_due.remove(s)

    async def _final_snapshot_written(self) -> None:
        """Until the matcher's final snapshot file exists (it reaps its snapshot writers
        before writing it, so every earlier file is there too), at most FINAL_WAIT_S."""
        from shmex.snapshot import store

        path = os.path.join(self.cfg.data_dir, "snapshots", store.name_of(self.shipped))
        deadline = time.monotonic() + FINAL_WAIT_S
        while self.hash_due and not os.path.exists(path) and time.monotonic() < deadline:
            self.ctl.check()
            self.me.beat()
            await asyncio.sleep(0.02)

    async def _final_hash(self, js) -> None:
        if self.ctl.load(cells.MATCHER_DONE) == 1 and self.ctl.load(cells.MATCHER_SEQ) == self.shipped:
            await self._hash(self.shipped, load_hash(self.ctl.a), final=True)

    async def _hash(self, seq: int, state_hash: str, final: bool = False) -> None:
        body = json.dumps({"seq": seq, "state_hash": state_hash, "final": final}).encode()
        self.sseq = await self._publish(names.hash_subject(self.stream), body,
                                        {names.MSG_ID: f"{self.stream}:hash-{seq}-{self.cfg.run_id}"})
        self.ctl.a[self.cell(cells.R_HASHES)] += 1

    async def _renew_loop(self) -> None:
        import nats.errors

        every = self.lease_s / 4
        while True:
            await asyncio.sleep(every)
            try:
                t = time.monotonic()
                self.rev = await asyncio.wait_for(lease.renew(self.kv, self.key, self.holder, self.rev), every * 2)
                self.renewed_at = t
                self.ctl.store(self.cell(cells.R_LEASE_REV), self.rev)
            except lease.Fenced as e:
                self.fenced = str(e)
                return
            except (nats.errors.Error, asyncio.TimeoutError):
                # no quorum, no responder, a node gone: the lease is not renewed, so appends
                # wait (`_hold_lease`) until it is, or until another engine took it
                pass


"""The feed: every book change as ITCH 5.0 over MoldUDP64 multicast, from the durable journal.

- It reads only what DURABLE_SEQ covers (`net.feed.Generator` over `wal.tail.WalTail`) and
  replays it through its own matcher: the feed is a function of the journal, the bytes
  ``shmex feed DIR`` regenerates, and it never touches the matcher's rings (it cannot
  slow or stall matching; it only lags).
- Each batch of messages is appended to DATA_DIR/feed/itch.bin (2-byte length framing,
  message k = sequence number k) and multicast in packets of at most 1400 message bytes;
  a heartbeat (count 0) after HEARTBEAT_S without a packet; at a clean stop the closing
  System Events, then end of session (count 0xFFFF), repeated while it lingers.
- Re-requests (unicast UDP to the address in DATA_DIR/feed/feed.json) are answered from
  the file, as much as fits in one packet.
- Restarted, it regenerates the feed from seq 1, keeps the file's prefix that agrees with
  it (`net.feedfile`), and multicasts only what comes after F_SENT, the last sequence
  number its predecessor sent: the wire goes on where it stopped. A first start on a
  directory whose file already holds a feed (an earlier run of the log) does not
  multicast that history again: subscribers re-request it.
- Matching goes first. Replaying and encoding take CPU and memory bandwidth, and on a
  machine with fewer cores than engine processes every cycle the feed takes is one the
  matcher, the WAL writer or a producer waits for. There, while the journal grows faster
  than ``feed_defer_above`` commands/s or the matcher takes its input in batches of
  DEFER_BATCH commands or more (each over SUSTAINED windows of RATE_WINDOW_S), or while
  the WAL writer is half a journal ring behind the matcher (the last two are what a feed
  that slowed the WAL writer cannot hide from itself), the feed waits: it lags under a
  full-speed burst and catches up when the load eases. With a core of
  its own it never waits. Each turn reads BATCH commands at most, so that it beats its
  heartbeat and answers re-requests between turns.
- ``feed_drop_every`` k leaves out every k-th data packet (fault injection for tests and
  drills: the subscribers must re-request).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

import numpy as np

from shmex.engine import cells
from shmex.engine.ctl import Aborted, Ctl, ProcessSlot
from shmex.net import feedfile, mold
from shmex.recovery import feed as feed_mod

HEARTBEAT_S = 1.0
EOS_EVERY_S = 0.2          # end of session repeated this often while lingering
IDLE_S = 0.0005            # nap when nothing durable is new
REQUESTS_PER_TURN = 64
SNDBUF = 4 << 20
BATCH = 8192               # journal commands per turn: between turns it beats and serves re-requests
RATE_WINDOW_S = 0.05       # the journal's rate and the matcher's batches are measured over this long;
SUSTAINED = 2              # this many windows in a row say "saturated" (a group commit's burst, a
                           # backlog's catch-up after a stall are shorter)
DEFER_BATCH = 64           # commands per matcher batch (on average over the window) that say the
                           # matcher is saturated: it finds its input rings full
DEFER_NAP_S = 0.002        # a deferring feed naps this long between looks at the rate


def _log(msg: str) -> None:
    print(f"feed: {msg}", file=sys.stderr, flush=True)


def warm() -> None:
    from shmex.net import itch
    from shmex.wal.tail import WalTail

    itch.warm()
    mold.warm()
    feedfile.offsets(np.zeros(3, np.uint8))
    WalTail("/nonexistent", 1)


def report(cfg, ctl, base: int) -> tuple[dict, str]:
    """The run summary's part: what went out, and how to watch it again."""
    from shmex.net.feedfile import paths

    c = {k: int(ctl[base + i]) for k, i in (("messages", cells.F_MESSAGES), ("sent", cells.F_SENT),
                                           ("packets", cells.F_PACKETS), ("rerequests", cells.F_REREQUESTS),
                                           ("dropped", cells.F_DROPPED), ("starts", cells.F_STARTS),
                                           ("state", cells.F_STATE), ("journal_seq", cells.F_CMD_SEQ))}
    c["ended"] = int(c.pop("state") == cells.FS_ENDED)
    path, _ = paths(cfg.data_dir)
    doc = {**c, "group": cfg.feed, "file": path}
    line = (f"{c['messages']:,} ITCH messages to {cfg.feed} in {c['packets']:,} packets "
            f"(journal to seq {c['journal_seq']:,}; {c['rerequests']:,} re-requests answered"
            + (f"; {c['dropped']:,} packets left out on purpose" if c["dropped"] else "")
            + (f"; restarted {c['starts'] - 1}x" if c["starts"] > 1 else "")
            + ("" if c["ended"] else "; NO end of session") + f"); file {path}, regenerate: shmex feed {cfg.data_dir}")
    return doc, line


def run(cfg, ctl: Ctl, me: ProcessSlot, index: int = 0) -> int:
    f = Feed(cfg, ctl, me)
    try:
        return f.main()
    except Aborted:
        return 0
    finally:
        f.close()


class Feed:
    def __init__(self, cfg, ctl: Ctl, me: ProcessSlot):
        self.cfg, self.ctl, self.me = cfg, ctl, me
        self.base = cells.proc_cell(me.slot, cells.P_ROLE)
        self.file: feedfile.FeedFile | None = None
        self.gen: feed_mod.Generator | None = None
        self.tx = self.rx = None

    def cell(self, i: int) -> int:
        return self.base + i

    def close(self) -> None:
        for s in (self.tx, self.rx):
            if s is not None:
                s.close()
        if self.file is not None:
            self.file.close()
        if self.gen is not None:
            self.gen.close()

    # -- setup -------------------------------------------------------------------------------
    def _sockets(self) -> None:
        cfg = self.cfg
        self.group = cfg.feed_address()
        tx = self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(cfg.feed_iface))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        rx = self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind((cfg.feed_iface, cfg.feed_rerequest_port))
        rx.setblocking(False)

    def main(self) -> int:
        cfg, ctl, me = self.cfg, self.ctl, self.me
        if cfg.feed_priority == "idle":     # market data takes only the CPU time matching leaves
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif cfg.feed_priority == "low":
            os.nice(10)
        path, _ = feedfile.paths(cfg.data_dir)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        symbols = feed_mod.symbols_for(cfg.symbols, cfg.symbols_path)
        self.gen = gen = feed_mod.Generator(cfg.data_dir, symbols, batch=BATCH)
        self.session = mold.session_name(gen.session)
        self.file = feedfile.FeedFile(path)
        try:
            self._sockets()
        except OSError as e:
            _log(f"cannot open the feed's sockets ({cfg.feed}, re-requests on {cfg.feed_iface}:"
                 f"{cfg.feed_rerequest_port}): {e.strerror or e}")
            return 1
        starts = ctl.load(self.cell(cells.F_STARTS))
        ctl.store(self.cell(cells.F_STARTS), starts + 1)
        # the wire goes on after what a predecessor in this run sent; a first start leaves
        # what the file already holds (an earlier run's feed) to re-requests
        self.sent = ctl.load(self.cell(cells.F_SENT)) if starts else self.file.count
        ctl.store(self.cell(cells.F_SENT), self.sent)
        host, port = self.rx.getsockname()
        feedfile.write_info(cfg.data_dir, {
            "session": gen.session, "group": self.group[0], "port": self.group[1], "iface": cfg.feed_iface,
            "rerequest": [host, port], "file": path, "run_id": cfg.run_id,
            "symbols": [[s.name, s.tick, s.lot] for s in gen.symbols]})
        self.defer_above = self._defer_rate()
        self.rate_at, self.rate_seq, self.rate = time.monotonic(), ctl.load(cells.DURABLE_SEQ), 0.0
        self.batch_at = (ctl.load(cells.MATCHER_SEQ), ctl.load(cells.BATCHES))
        self.busy = 0                        # windows in a row that looked saturated
        self.last_tx = time.monotonic()
        self.packets = 0
        self._req = bytearray(mold.HEADER_BYTES + 64)
        me.ready()
        me.wait_go()
        self._add(np.frombuffer(gen.opening(), np.uint8))
        while True:
            ctl.check()
            me.beat()
            self._serve()
            durable = ctl.load(cells.DURABLE_SEQ)   # ORDER: acquire: the records are in the log
            if self._deferring(durable):
                self._heartbeat()            # subscribers hear the feed is there while it waits
                time.sleep(DEFER_NAP_S)
                continue
            before = gen.next_seq
            n = gen.read(durable)
            if n:
                self._add(gen.block, gen.offs[:n])
            if gen.next_seq != before:
                ctl.store(self.cell(cells.F_CMD_SEQ), gen.next_seq - 1)
                continue
            done = ctl.load(cells.WAL_DONE)
            if done and gen.next_seq > ctl.load(cells.DURABLE_SEQ):
                if done == 1 and gen.sealed():
                    self._add(np.frombuffer(gen.closing(), np.uint8))
                self._end()
                return 0
            self._heartbeat()
            time.sleep(IDLE_S)

    def _heartbeat(self) -> None:
        if time.monotonic() - self.last_tx >= HEARTBEAT_S:
            self._send(mold.header(self.session, self.sent + 1, mold.HEARTBEAT))   # the next message multicast

    def _defer_rate(self) -> float:
        """Commands/s above which the feed waits (0: never)."""
        if self.cfg.feed_defer_above is not None:
            return float(self.cfg.feed_defer_above)
        from shmex.engine import registry
        from shmex.engine.config import DEFER_RATE

        return DEFER_RATE if (os.cpu_count() or 1) < len(registry.launched(self.cfg)) else 0.0

    def _deferring(self, durable: int) -> bool:
        """Matching is saturated (see the module's docstring) and the engine is not
        stopping (then the feed catches up)."""
        if not self.defer_above:
            return False
        now = time.monotonic()
        if now - self.rate_at >= RATE_WINDOW_S:
            ctl = self.ctl
            seq, batches = ctl.load(cells.MATCHER_SEQ), ctl.load(cells.BATCHES)
            d_seq, d_batches = seq - self.batch_at[0], batches - self.batch_at[1]
            self.rate = (durable - self.rate_seq) / (now - self.rate_at)
            hot = self.rate > self.defer_above or (d_batches > 0 and d_seq >= DEFER_BATCH * d_batches)
            self.busy = self.busy + 1 if hot else 0
            self.rate_at, self.rate_seq, self.batch_at = now, durable, (seq, batches)
        behind = self.ctl.load(cells.MATCHER_SEQ) - durable > self.cfg.ring_journal // 2
        defer = (self.busy >= SUSTAINED or behind) and not self.ctl.load(cells.WAL_DONE)
        self.ctl.store(self.cell(cells.F_STATE), cells.FS_DEFERRING if defer else cells.FS_RUNNING)
        return defer

    # -- the feed ----------------------------------------------------------------------------
    def _add(self, block: np.ndarray, offs: np.ndarray | None = None) -> None:
        """Append messages to the file; multicast the ones after `sent`."""
        f = self.file
        offs = feedfile.offsets(block) if offs is None else offs
        first = f.kept + 1
        f.add(block, offs)
        if f.cut_at is not None:
            if f.cut_at <= self.sent:
                _log(f"the feed file differed from the journal's feed at message {f.cut_at:,}: "
                     f"cut there; multicast again from it")
                self.sent = f.cut_at - 1
            f.cut_at = None
        self.ctl.store(self.cell(cells.F_MESSAGES), f.count)
        lo = max(self.sent + 1 - first, 0)
        if lo < len(offs):
            self._multicast(block, offs, lo, first)

    def _multicast(self, block: np.ndarray, offs: np.ndarray, lo: int, first: int) -> None:
        cuts = mold.cuts(offs, lo, len(offs), len(block)).tolist()
        drop = self.cfg.feed_drop_every
        mv = memoryview(block)
        dropped = 0
        for a, b in zip(cuts[:-1], cuts[1:]):
            end = int(offs[b]) if b < len(offs) else len(block)
            self.packets += 1
            if drop and self.packets % drop == 0:
                dropped += 1
            else:
                self._send(mold.header(self.session, first + a, b - a), mv[int(offs[a]):end])
            self.sent = first + b - 1
            self.ctl.store(self.cell(cells.F_SENT), self.sent)   # after the send: a restart repeats at most this packet
        a = self.ctl.a                    # plain: this process is the only writer
        a[self.cell(cells.F_PACKETS)] += len(cuts) - 1
        a[self.cell(cells.F_DROPPED)] += dropped

    def _send(self, head: bytes, body=b"") -> None:
        try:
            self.tx.sendmsg([head, body] if body else [head], [], 0, self.group)
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
        self.last_tx = time.monotonic()

    def _serve(self) -> None:
        """Answer waiting re-requests: session, first sequence number, count."""
        for _ in range(REQUESTS_PER_TURN):
            try:
                n, addr = self.rx.recvfrom_into(self._req)
            except (BlockingIOError, InterruptedError):
                return
            if n != mold.HEADER_BYTES:
                continue
            session, seq, count = mold.parse_header(self._req)
            if session != self.session or count == 0 or count == mold.END_OF_SESSION:
                continue
            data, k = self.file.read(seq, mold.MAX_PAYLOAD, count)
            if not k:
                continue
            try:
                self.rx.sendto(mold.header(self.session, seq, k) + data, addr)
            except OSError:
                continue
            self.ctl.a[self.cell(cells.F_REREQUESTS)] += 1

    def _end(self) -> None:
        """End of session, repeated while re-requests are answered for feed_linger_s."""
        eos = mold.header(self.session, self.file.count + 1, mold.END_OF_SESSION)
        self.ctl.store(self.cell(cells.F_STATE), cells.FS_ENDED)   # before the send: a subscriber
        self._send(eos)                                           # that saw it finds the feed ended
        until = time.monotonic() + self.cfg.feed_linger_s
        last = time.monotonic()
        while time.monotonic() < until:
            self.ctl.check()
            self.me.beat()
            self._serve()
            if time.monotonic() - last >= EOS_EVERY_S:
                self._send(eos)
                last = time.monotonic()
            time.sleep(IDLE_S)

"""The ITCH feed of a journal: a function of the WAL and the instruments, nothing else.

`Generator` replays the log from seq 1 through its own `Matcher` (the reports are the
engine's: the matcher's output depends only on its sequenced input) and turns each batch
into ITCH 5.0 messages (`net.itch.encode`). The feed role runs it on the durable part of
a live log; ``shmex feed DIR`` runs it on a finished one; both write the same bytes.

- Opening: System Event 'O', a Stock Directory per symbol, 'S', 'Q', stamped with the
  first run's start (UTC).
- Each command's messages carry its logged engine stamp (CLOCK_MONOTONIC) turned into a
  time of day with the difference of the two clocks the WAL writer read together when
  the run holding that command began (manifest ``started_ns`` and ``mono_ns``); a run
  logged without ``mono_ns`` uses its first command's stamp as its start.
- The runs are those of the engine that sequenced the journal (`manifest.journal_runs`):
  a follower's directory has the primary's, so its feed is the primary's, byte for byte.
- Closing, only when the log's last run was sealed (a clean stop): 'M', 'E', 'C' at the
  last command's stamp.

The MoldUDP64 session is named after the log's first run. The feed needs the whole
journal: a log whose retention removed its first segments cannot give one (the engine
keeps the whole log while it runs a feed).
"""

from __future__ import annotations

import bisect

import numpy as np

from shmex.errors import CannotOpen, UsageError
from shmex.net import itch
from shmex.net.feedfile import Symbol
from shmex.wal import manifest

BATCH = 1 << 16
DEFAULT_TICK = 100                   # price units (1/10000) per tick beyond the symbols file: $0.01
DEFAULT_LOT = 1


def new_encoder(symbols: list[Symbol], capacity: int) -> itch.Encoder:
    """An ITCH encoder for the feed's instruments (stamps are offset per batch)."""
    from shmex.net.instruments import name_bytes

    return itch.new_encoder([int.from_bytes(name_bytes(s.name), "big") for s in symbols],
                            [s.tick for s in symbols], [s.lot for s in symbols], capacity=capacity, ts_offset=0)


def symbols_for(count: int, symbols_path: str) -> list[Symbol]:
    """The feed's instruments for a book of `count` symbols: the symbols file's, in its
    order, then ``SYMk`` (tick $0.01, lot 1) for the book symbols beyond it."""
    from shmex.net import instruments

    table = instruments.load(symbols_path)[:count]
    out = [Symbol(i.name, i.tick, i.lot) for i in table]
    return out + [Symbol(f"SYM{k}", DEFAULT_TICK, DEFAULT_LOT) for k in range(len(out), count)]


def session_of(doc: dict | None) -> str:
    """The MoldUDP64 session of a log: its first run's id, 10 upper-case hex digits (the
    runs of the engine that sequenced it: `manifest.journal_runs`)."""
    runs = manifest.journal_runs(doc)
    if not runs:
        raise CannotOpen("no run in the manifest: the log has no feed yet")
    return runs[0]["run_id"][:10].upper()


class Generator:
    """ITCH messages of a log directory, batch by batch. ``read(until)`` leaves the
    framed messages of what it read in ``block`` and their offsets in ``offs``."""

    def __init__(self, directory, symbols: list[Symbol], *, batch: int = BATCH):
        from shmex.matcher.matcher import Matcher
        from shmex.recovery.recover import matcher_config
        from shmex.schema import commands
        from shmex.wal.tail import WalTail

        self.directory = str(directory)
        doc = manifest.read(self.directory)
        self.session = session_of(doc)
        cfg = matcher_config(self.directory)
        if len(symbols) < cfg["symbols"]:
            raise UsageError(f"feed: {len(symbols)} instruments for a book of {cfg['symbols']} symbols")
        self.symbols = symbols[:cfg["symbols"]]
        self.matcher = Matcher(**cfg)
        self.encoder = new_encoder(self.symbols, int(cfg["capacity"]))
        self.tail = WalTail(self.directory, 1)
        self.cmds = commands(batch)
        self.out = np.zeros((itch.MAX_MESSAGE + 2) * batch * 2, np.uint8)
        self.offs = np.zeros(batch * 2, np.int64)
        self.block = self.out[:0]
        self._stat = None
        self._runs: list[dict] = []
        self._firsts: list[int] = []
        self._offsets: dict[int, int] = {}     # run index -> UTC ns minus engine ns
        self._load_runs(doc)
        self.start_ns = int(self._runs[0]["started_ns"])
        self.last_ts = self.start_ns % itch.DAY_NS    # time of day of the last command read (UTC ns)

    @property
    def next_seq(self) -> int:
        return self.tail.next_seq

    def _load_runs(self, doc: dict | None = None) -> None:
        doc = doc if doc is not None else manifest.read(self.directory)
        self._runs = list(manifest.journal_runs(doc))
        self._firsts = [int(r["first_seq"]) for r in self._runs]

    def _refresh_runs(self) -> None:
        """Re-read the manifest when it changed (a new run began). The WAL writer writes a
        run's entry before any of its commands can be durable, so a caller that read its
        bound after this sees every run that bound covers."""
        key = manifest.stat_key(self.directory)
        if key is not None and key != self._stat:
            self._stat = key
            self._load_runs()

    def _run_of(self, seq: int) -> int:
        return bisect.bisect_right(self._firsts, seq) - 1

    def _bound(self, seq: int) -> int | None:
        """The last seq of the run holding seq, if a later run is known."""
        i = bisect.bisect_right(self._firsts, seq)
        return self._firsts[i] - 1 if i < len(self._firsts) else None

    def opening(self) -> bytes:
        ts = self.start_ns
        msgs = [itch.system_event(itch.START_OF_MESSAGES, ts)]
        msgs += [itch.stock_directory(k, s.name, s.lot, ts) for k, s in enumerate(self.symbols)]
        msgs += [itch.system_event(itch.START_OF_SYSTEM, ts), itch.system_event(itch.START_OF_MARKET, ts)]
        return itch.framed(msgs)

    def closing(self) -> bytes:
        ts = self.last_ts
        return itch.framed([itch.system_event(c, ts) for c in (itch.END_OF_MARKET, itch.END_OF_SYSTEM,
                                                               itch.END_OF_MESSAGES)])

    def read(self, until: int) -> int:
        """Live: commands next_seq..until of the durable log (one run's at most, BATCH at
        most) -> messages in ``block`` / ``offs``; -> how many."""
        if until < self.tail.next_seq:
            return 0
        self._refresh_runs()
        bound = self._bound(self.tail.next_seq)
        n = self.tail.read(until if bound is None else min(until, bound), self.cmds)
        self.block = self.out[:0]
        return self.encode(self.cmds[:n]) if n else 0

    def runs_of(self, cmds):
        """Split a batch of commands at the first seqs of runs: -> the parts."""
        while len(cmds):
            bound = self._bound(int(cmds[0]["seq"]))
            if bound is None or int(cmds[-1]["seq"]) <= bound:
                yield cmds
                return
            k = bound - int(cmds[0]["seq"]) + 1
            yield cmds[:k]
            cmds = cmds[k:]

    def encode(self, cmds) -> int:
        """The messages of a batch of consecutive commands of one run (the next ones the
        book has not seen) into ``block`` / ``offs``; -> how many."""
        seq = int(cmds[0]["seq"])
        if seq != self.matcher.last_seq + 1:
            raise CannotOpen(f"{self.directory}: the log holds seq {seq} where the feed needs "
                             f"{self.matcher.last_seq + 1} (the feed needs the whole journal from seq 1; "
                             f"retention may have removed its first segments)")
        e = self.encoder
        e.g[itch.G_TS_OFF] = self._offset(self._run_of(seq), int(cmds[0]["engine_ns"]))
        reps = self.matcher.process_into(cmds, stamp=False)
        need = (itch.MAX_MESSAGE + 2) * len(reps)
        if need > len(self.out):
            self.out = np.zeros(need * 2, np.uint8)
        if len(reps) > len(self.offs):
            self.offs = np.zeros(len(reps) * 2, np.int64)
        e.g[itch.G_POS] = 0
        e.g[itch.G_MSGS] = 0
        itch.encode(e, cmds, len(cmds), reps, len(reps), self.out, self.offs)
        k = int(e.g[itch.G_MSGS])
        self.block = self.out[:int(e.g[itch.G_POS])]
        self.last_ts = (int(cmds[-1]["engine_ns"]) + int(e.g[itch.G_TS_OFF])) % itch.DAY_NS
        return k

    def _offset(self, run: int, first_engine_ns: int) -> int:
        if run in self._offsets:
            return self._offsets[run]
        r = self._runs[run] if run >= 0 else self._runs[0]
        mono = r.get("mono_ns")
        off = int(r["started_ns"]) - (int(mono) if mono is not None else first_engine_ns)
        self._offsets[run] = off
        return off

    def sealed(self) -> bool:
        """The log's last run was sealed (a clean stop) and the feed has read it to its last
        seq (a follower's log may stop short of it): the feed ends with its closing."""
        self._load_runs()
        return (bool(self._runs) and bool(self._runs[-1].get("sealed"))
                and self._runs[-1].get("last_seq", self.matcher.last_seq) == self.matcher.last_seq)

    def close(self) -> None:
        self.tail.close()


def regenerate(directory, symbols: list[Symbol], out, *, progress=None):
    """Write the feed of a log to the binary file object `out`: -> (messages, bytes, the
    log's damage or None). A damaged log's feed stops before the damage, without a closing."""
    from shmex.wal.reader import WalReader

    g = Generator(directory, symbols)
    head = g.opening()
    out.write(head)
    msgs, size = len(itch.messages(head)), len(head)
    reader = WalReader(directory)
    for batch in reader.commands(1):
        for part in g.runs_of(batch):
            msgs += g.encode(part)
            out.write(g.block)
            size += len(g.block)
        if progress is not None:
            progress(int(batch[-1]["seq"]), msgs)
    damage = reader.end.damage if reader.end is not None else None
    if damage is None and g.sealed():
        tail = g.closing()
        out.write(tail)
        msgs += len(itch.messages(tail))
        size += len(tail)
    g.close()
    return msgs, size, damage


def book_levels(resting: np.ndarray, symbol: int, side: int, tick: int, lot: int):
    """[(price, shares, orders)] of one side of a symbol of `Matcher.resting()`, in ITCH
    units (price 1/10000, shares), best first: what a feed subscriber's book must show."""
    from shmex.schema import Side

    sel = resting[(resting["symbol"] == symbol) & (resting["side"] == side)]
    agg: dict[int, list[int]] = {}
    for r in sel:
        a = agg.setdefault(int(r["price"]) * tick, [0, 0])
        a[0] += int(r["leaves"]) * lot
        a[1] += 1
    rows = [(p, q, k) for p, (q, k) in agg.items()]
    rows.sort(key=lambda r: -r[0] if side == Side.BUY else r[0])
    return rows

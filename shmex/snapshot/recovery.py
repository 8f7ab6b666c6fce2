"""Recovery: the newest valid snapshot + the WAL after it -> the matcher a never-crashed
engine would hold. Also the ``shmex replay DIR [--until SEQ] [--json PATH]`` verb.

A snapshot is used only if the intact log reaches its seq: a snapshot ahead of the log
would hold commands that were never durable (never acknowledged).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

from shmex.errors import CannotOpen, CorruptRecord, ShmexError
from shmex.snapshot import store
from shmex.wal import layout as L
from shmex.wal import manifest as M
from shmex.wal.reader import ScanEnd, WalReader


@dataclass
class Recovered:
    matcher: object                  # shmex.matcher.Matcher at seq last_seq
    last_seq: int
    records: int                     # commands applied from the WAL
    snapshot: store.SnapshotInfo | None
    damage: CorruptRecord | None     # where the log stopped being intact, if it did
    refused: list = field(default_factory=list)   # CorruptRecord per refused snapshot
    findings: list = field(default_factory=list)  # other things worth telling (str)
    mismatch: list = field(default_factory=list)  # logged state hashes replay did not reproduce
    seconds: float = 0.0             # all of it: snapshot load, scan, apply
    replay_seconds: float = 0.0      # scanning + CRC + applying the WAL records
    end: ScanEnd | None = None


def snapshot_dir(directory) -> str:
    return os.path.join(str(directory), L.SNAPSHOT_DIR)


def recover(directory, *, until: int | None = None, use_snapshots: bool = True,
            progress=None) -> Recovered:
    """Rebuild the book from ``directory`` (a WAL dir with its ``snapshots/``).

    Stops at the first bad record (reported in ``damage``; nothing after it is applied) or
    at ``until``. Raises CannotOpen when the directory is missing, or when there is neither a
    snapshot nor a matcher config in the manifest to start from.
    ``progress(seq, records)`` is called about every million commands.
    """
    from shmex.matcher import Matcher

    t0 = time.perf_counter()
    reader = WalReader(directory)  # CannotOpen if missing
    refused: list[CorruptRecord] = []
    findings: list[str] = []
    tried_above: int | None = None
    while True:
        m, info = None, None
        if use_snapshots:
            cap = until if tried_above is None else (tried_above - 1 if until is None else min(until, tried_above - 1))
            m, info, bad = store.newest_valid(snapshot_dir(directory), max_seq=cap)
            refused += bad
        if m is None:
            m = Matcher(**_config(directory))
        start = m.last_seq + 1
        n = 0
        t_replay = time.perf_counter()
        next_report = 1 << 20
        for cmds in reader.commands(start, until):
            m.process_into(cmds, stamp=False)
            n += len(cmds)
            if progress is not None and n >= next_report:
                progress(m.last_seq, n)
                next_report += 1 << 20
        end = reader.end
        replay_s = time.perf_counter() - t_replay
        if info is not None and end.last_seq < info.seq:
            # the intact log does not reach this snapshot: refuse it, try an older one
            refused.append(CorruptRecord(info.path, 16, info.seq,
                                         f"snapshot is at seq {info.seq} but the intact log ends at seq {end.last_seq}"
                                         + (f" ({end.damage})" if end.damage else "")))
            tried_above = info.seq
            reader = WalReader(directory)
            continue
        break
    if end.segments == 0:
        findings.append("the log has no segments")
    elif m.last_seq == 0:
        findings.append("the log holds no commands")
    mismatch = _check_snapshot_marks(m, end)
    return Recovered(matcher=m, last_seq=m.last_seq, records=n, snapshot=info, damage=end.damage,
                     refused=refused, findings=findings, mismatch=mismatch,
                     seconds=time.perf_counter() - t0, replay_seconds=replay_s, end=end)


def _config(directory) -> dict:
    doc = M.read(directory)
    runs = doc["runs"] if doc else []
    for run in reversed(runs):
        if isinstance(run.get("config"), dict):
            return run["config"]
    raise CannotOpen(f"{directory}: no usable snapshot and no matcher config in {L.MANIFEST}: nothing to start from")


def _check_snapshot_marks(m, end: ScanEnd) -> list[str]:
    """A SNAPSHOT_TAKEN record at the final seq must carry the state hash we rebuilt."""
    out = []
    for c in end.controls:
        if c.kind == L.REC_SNAPSHOT and c.last_seq == m.last_seq and c.state_hash:
            got = m.state_hash()
            if got != c.state_hash:
                out.append(f"{c.path} at offset {c.offset}: the live engine logged state_hash "
                           f"{c.state_hash} at seq {c.last_seq}, replay gives {got}")
    return out


# ---- shmex replay -------------------------------------------------------------------------

def main(args) -> int:
    """``shmex replay DIR [--until SEQ] [--json PATH]``: 0 ok, 1 log damaged, 2 cannot open."""
    def progress(seq, n):
        print(f"replay: {n:,} commands, at seq {seq:,}", file=sys.stderr, flush=True)

    try:
        r = recover(args.dir, until=args.until, progress=progress)
    except CannotOpen as e:
        print(f"replay: cannot open: {e}", file=sys.stderr)
        return 2
    except ShmexError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 1
    m = r.matcher
    rate = r.records / r.replay_seconds if r.replay_seconds > 0 else 0.0
    src = f"snapshot {r.snapshot.path} (seq {r.snapshot.seq})" if r.snapshot else "an empty book"
    speed = (f"{r.replay_seconds:.3f} s of replay ({rate / 1e6:.2f}M commands/s)" if r.records
             else "nothing to replay after it")
    print(f"replayed {r.records:,} commands from {src} to seq {r.last_seq:,}: "
          f"{speed}, {r.seconds:.3f} s in all")
    print(f"state_hash {m.state_hash()}")
    for e in r.refused:
        print(f"refused snapshot: {e}")
    if r.damage:
        print(f"log damaged: {r.damage} -- stopped at seq {r.last_seq}")
    for f in r.mismatch:
        print(f"MISMATCH: {f}")
    for f in r.findings:
        print(f"note: {f}")
    tops = []
    for sym in range(m.config["symbols"]):
        bid, ask = m.best_bid(sym), m.best_ask(sym)
        tops.append({"symbol": sym, "best_bid": bid, "best_ask": ask})
        if sym < 20:
            print(f"  symbol {sym}: bid {bid if bid is not None else '-'}  ask {ask if ask is not None else '-'}")
    if len(tops) > 20:
        print(f"  ... {len(tops) - 20} more symbols (see --json)")
    if args.json:
        doc = {"last_seq": r.last_seq, "state_hash": m.state_hash(), "records": r.records,
               "records_per_s": rate, "seconds": r.seconds, "replay_seconds": r.replay_seconds,
               "snapshot": r.snapshot.path if r.snapshot else None,
               "snapshot_seq": r.snapshot.seq if r.snapshot else None,
               "damage": str(r.damage) if r.damage else None,
               "refused": [str(e) for e in r.refused], "mismatch": r.mismatch,
               "findings": r.findings, "top": tops}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 1 if (r.damage or r.refused or r.mismatch) else 0

"""Recovery: the newest valid snapshot + the WAL after it -> the matcher a never-crashed
engine would hold (what ``shmex replay``, `shmex.commands.replay`, runs).

A snapshot is used only if the intact log reaches its seq: a snapshot ahead of the log
would hold commands that were never durable (never acknowledged).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field

from shmex.errors import CannotOpen, CorruptRecord
from shmex.snapshot import store
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.wal.reader import ScanEnd, WalReader, intact_after


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
    return os.path.join(str(directory), wal_layout.SNAPSHOT_DIR)


def recover(directory, *, until: int | None = None, use_snapshots: bool = True,
            progress=None) -> Recovered:
    """Rebuild the book from ``directory`` (a WAL dir with its ``snapshots/``).

    Stops at a torn tail (reported in ``damage``; nothing after it is applied) or at
    ``until``; damage followed by intact records raises CorruptRecord. Raises CannotOpen
    when the directory is missing, or when there is neither a snapshot nor a matcher
    config in the manifest to start from.
    ``progress(seq, records)`` is called about every million commands.
    """
    from shmex.matcher import Matcher

    t0 = time.perf_counter()
    reader = WalReader(directory)  # CannotOpen if missing
    refused: list[CorruptRecord] = []
    findings: list[str] = []
    doc = _manifest(directory)
    trusted = manifest.halted_at(doc)
    if trusted is not None and (until is None or until > trusted):
        # the last run halted on a failed sync: what it wrote after its last good sync was
        # never acknowledged and is not trusted (the next writer cuts it)
        findings.append(f"the last run halted on a durability fault at durable seq {trusted}: "
                        f"the records after it are not trusted and not replayed")
        until = trusted
    tried_above: int | None = None
    while True:
        m, info = None, None
        if use_snapshots:
            cap = until if tried_above is None else (tried_above - 1 if until is None else min(until, tried_above - 1))
            m, info, bad = store.newest_valid(snapshot_dir(directory), max_seq=cap)
            refused += bad
        if m is None:
            m = Matcher(**matcher_config(directory))
        start = m.last_seq + 1
        _refuse_retired(directory, (doc or {}).get("retention"), start, until, refused)
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
        _refuse_corruption(directory, reader)
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


def _refuse_corruption(directory, reader: WalReader) -> None:
    """Damage followed by records in good order is not a torn tail but damage inside
    acknowledged records: raise CorruptRecord naming it instead of stopping quietly there."""
    dmg = reader.end.damage
    intact = intact_after(reader.end, reader.segments) if dmg is not None else None
    if intact is not None:
        raise CorruptRecord(dmg.path, dmg.offset, dmg.seq, f"{dmg.what}; {intact}: damage inside the log, "
                            f"not a torn tail: recovery refuses it (`shmex repair {directory}` cuts it)")


def _manifest(directory) -> dict | None:
    try:
        return manifest.read(directory)
    except CorruptRecord:
        return None      # a damaged manifest: `_config` (if it is needed) and verify name it


def _refuse_retired(directory, retention: dict | None, start: int, until: int | None, refused: list) -> None:
    """Retention removed the segments in front of the log's first seq F: a rebuild must
    start from a snapshot at F - 1 or later. CannotOpen, saying so, when it would start
    before (``until`` below what is kept, or no kept snapshot loads)."""
    if not retention or start >= retention["first_seq"]:
        return
    first = retention["first_seq"]
    kept = [s for s, _ in store.list_snapshots(snapshot_dir(directory)) if s >= first - 1]
    asked = f"seq {until}" if until is not None else "the log's end"
    hint = (f"; the oldest snapshot kept is at seq {min(kept)}: the oldest state it can rebuild"
            + (f" ({len(refused)} newer snapshot(s) refused: {refused[0]})" if refused else "")
            if kept else "; no snapshot it keeps loads" + (f": {refused[0]}" if refused else ""))
    raise CannotOpen(f"{directory}: cannot rebuild {asked}: seqs {start}..{first - 1} were removed by retention "
                     f"(the log starts at seq {first}, segment {retention['first_segment']}){hint}")


def logged_configs(directory) -> dict:
    """{run id: its REC_RUN_CONFIG control} of the runs that began where the log begins
    (the controls ahead of the log's first command)."""
    r = WalReader(directory)
    try:
        first = r.first_seq()
    except CorruptRecord:
        return {}        # the replay's scan meets the damaged header and names it
    if first is None:
        return {}
    for _ in r.commands(first, first - 1):
        pass
    return {c.run_id: c for c in r.end.controls if c.kind == wal_layout.REC_RUN_CONFIG}


def matcher_config(directory) -> dict:
    """The matcher config of the run that made the book: the last run that began where
    the log begins (earlier ones left nothing durable; later ones continued its book,
    which kept its hash key, whatever key their own config drew)."""
    from shmex.recovery.verify import config_difference

    doc = manifest.read(directory)
    logged = logged_configs(directory)
    runs = [r for r in (doc["runs"] if doc else []) if isinstance(r.get("config"), dict)]
    if runs:
        first = min(r["first_seq"] for r in runs)
        run = [r for r in runs if r["first_seq"] == first][-1]
        c = logged.get(str(run["run_id"]))
        if c is not None and config_difference(run["config"], c):
            raise CorruptRecord(c.path, c.offset, c.seq, f"run {run['run_id']}: {config_difference(run['config'], c)}: "
                                f"recovery refuses to guess which is right")
        return run["config"]
    if doc is None and logged:
        return list(logged.values())[-1].config     # no manifest: the log says how its book was made
    raise CannotOpen(f"{directory}: no usable snapshot and no matcher config in {wal_layout.MANIFEST}: nothing to start from")


def _check_snapshot_marks(m, end: ScanEnd) -> list[str]:
    """A SNAPSHOT_TAKEN record at the final seq must carry the state hash we rebuilt."""
    out = []
    for c in end.controls:
        if c.kind == wal_layout.REC_SNAPSHOT and c.last_seq == m.last_seq and c.state_hash:
            got = m.state_hash()
            if got != c.state_hash:
                out.append(f"{c.path} at offset {c.offset}: the live engine logged state_hash "
                           f"{c.state_hash} at seq {c.last_seq}, replay gives {got}")
    return out


# ---- shmex replay -------------------------------------------------------------------------


def remove_log(data_dir: str) -> None:
    """Remove a previous log from data_dir (only files shmex writes there), holding the WAL
    writer's lock: CannotOpen, and nothing removed, while an engine writes that log."""
    from shmex.net.feedfile import FEED_DIR
    from shmex.wal.writer import lock_directory

    if not os.path.isdir(data_dir):
        return
    fd = lock_directory(data_dir, "a running engine's WAL writer holds")
    try:
        for name in os.listdir(data_dir):
            if wal_layout.parse_segment_name(name) is not None or name in (wal_layout.MANIFEST, wal_layout.SPARE_NAME):
                os.unlink(os.path.join(data_dir, name))
        shutil.rmtree(os.path.join(data_dir, wal_layout.SNAPSHOT_DIR), ignore_errors=True)
        shutil.rmtree(os.path.join(data_dir, FEED_DIR), ignore_errors=True)     # derived from the log
    finally:
        os.close(fd)     # releases the lock

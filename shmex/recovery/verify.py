"""Check a run directory's WAL, manifest and snapshots (what ``shmex verify``,
`shmex.commands.verify`, runs).

Checks every record CRC and seq, segment headers and continuity, that each manifest run
matches its RUN_START / RUN_SEALED records (last seq, record count, digest), and every
snapshot's checksum and state hash. Whatever the bytes, it answers with findings
(``corrupt`` ones mean exit 1), never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shmex.errors import CannotOpen, CorruptRecord
from shmex.wal import layout as wal_layout
from shmex.wal import manifest
from shmex.wal.reader import WalReader, intact_after

# Errors that bytes from a damaged file could still provoke deep in a decoder; verify turns
# them into a finding instead of a traceback (never a bare except: a bug elsewhere still shows).
DECODE_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, MemoryError, EOFError)


@dataclass
class Finding:
    level: str        # "corrupt" (exit 1) or "note"
    path: str
    offset: int | None
    seq: int | None
    what: str

    def __str__(self) -> str:
        where = self.path + (f" at offset {self.offset}" if self.offset is not None else "")
        where += f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.level.upper()}: {where}: {self.what}"


@dataclass
class Report:
    directory: str
    findings: list
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    segments: int = 0
    runs: int = 0
    snapshots: int = 0

    @property
    def corrupt(self) -> bool:
        return any(f.level == "corrupt" for f in self.findings)


def _corrupt(e: CorruptRecord) -> Finding:
    return Finding("corrupt", str(e.path), e.offset, e.seq, e.what)


def verify(directory) -> Report:
    """Check ``directory``; raise CannotOpen if it is missing or not a shmex log directory."""
    directory = str(directory)
    if not os.path.isdir(directory):
        raise CannotOpen(f"{directory}: no such directory")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise CannotOpen(f"{directory}: not readable")
    rep = Report(directory=directory, findings=[])
    reader = WalReader(directory)
    try:
        doc = manifest.read(directory)
    except CorruptRecord as e:
        rep.findings.append(_corrupt(e))
        doc = None
    snaps_dir = os.path.join(directory, wal_layout.SNAPSHOT_DIR)
    if doc is None and not reader.segments and not os.path.isdir(snaps_dir):
        if not rep.findings:
            raise CannotOpen(f"{directory}: not a shmex log directory (no {wal_layout.MANIFEST}, no segments)")
    if doc is None and reader.segments and not rep.findings:
        rep.findings.append(Finding("corrupt", manifest.path_of(directory), None, None, "manifest is missing"))
    _check_log(reader, rep)
    _check_start(doc, reader, rep)
    _check_runs(doc, reader, rep)
    _check_snapshots(snaps_dir, reader, rep, manifest.halted_at(doc) is not None)
    return rep


def _check_log(reader: WalReader, rep: Report) -> None:
    for cmds in reader.commands():
        if rep.first_seq is None:
            rep.first_seq = int(cmds[0]["seq"])
        rep.records += len(cmds)
    end = reader.end
    rep.segments = len(reader.segments)
    rep.last_seq = end.last_seq if reader.segments else None
    if end.damage is not None:
        intact = intact_after(end, reader.segments)
        f = _corrupt(end.damage)
        if intact is not None:
            f.what += (f"; {intact}: damage inside the log, not a torn tail "
                       f"(`shmex repair {reader.directory}` cuts it)")
        rep.findings.append(f)
        rep.findings.append(Finding("note", end.damage.path, None, None,
                                    f"records up to seq {end.last_seq} are intact; " +
                                    ("recovery refuses the records after them" if intact else
                                     "recovery stops there (a torn tail: the next writer cuts it)")))
    for name in sorted(os.listdir(reader.directory)):
        if name == wal_layout.SPARE_NAME or name.endswith(".tmp"):
            rep.findings.append(Finding("note", os.path.join(reader.directory, name), None, None,
                                        "leftover temporary file (a writer was running or crashed)"))


def _kept_from(doc) -> int:
    """The first segment the log keeps: where retention left it, else 0."""
    return int(((doc or {}).get("retention") or {}).get("first_segment", 0))


def _check_start(doc, reader: WalReader, rep: Report) -> None:
    """The log starts where the manifest says retention left it (segment 0 without it)."""
    if not reader.segments:
        return
    want, first = _kept_from(doc), reader.segments[0][0]
    path = os.path.join(reader.directory, wal_layout.segment_name(want))
    if first > want:
        rep.findings.append(Finding("corrupt", path, None, None, f"segments {want}..{first - 1} are missing "
                                    f"(the manifest keeps the log from segment {want})"))
    elif first < want:
        rep.findings.append(Finding("note", reader.segments[0][1], None, None, f"segments {first}..{want - 1} "
                                    f"are still there though retention gave them up (an interrupted removal)"))
    ret = (doc or {}).get("retention")
    if ret:
        rep.findings.append(Finding("note", path, None, ret["first_seq"], f"retention removed {ret['removed_segments']} "
                                    f"segments ({ret['removed_bytes']:,} bytes) before this one: the log keeps seqs "
                                    f"from {ret['first_seq']}"))


def config_difference(config, logged) -> str:
    """What differs between a manifest run's matcher config and the one its log recorded
    (a REC_RUN_CONFIG control), or ''."""
    if not isinstance(config, dict):
        return f"the manifest has no matcher config; the log has {logged.config}"
    diff = [f"{k} {logged.config[k]} in the log, {config.get(k)} in the manifest"
            for k in wal_layout.CONFIG_KEYS if config.get(k) != logged.config[k]]
    return "matcher config: " + "; ".join(diff) if diff else ""


def _check_runs(doc, reader: WalReader, rep: Report) -> None:
    if doc is None:
        return
    retired = _kept_from(doc)   # runs that started before it: their records may be gone
    mpath = manifest.path_of(reader.directory)
    starts = {c.run_id: c for c in reader.end.controls if c.kind == wal_layout.REC_RUN_START}
    seals = {c.run_id: c for c in reader.end.controls if c.kind == wal_layout.REC_RUN_SEALED}
    configs = {c.run_id: c for c in reader.end.controls if c.kind == wal_layout.REC_RUN_CONFIG}
    for c in seals.values():
        if c.computed_digest is not None and c.computed_digest != c.digest:
            rep.findings.append(Finding("corrupt", c.path, c.offset, c.seq,
                                        f"run {c.run_id} digest {c.digest:08x} sealed, records give {c.computed_digest:08x}"))
    runs = doc["runs"]
    rep.runs = len(runs)
    damaged = reader.end.damage is not None
    known = set()
    for i, run in enumerate(runs):
        rid = str(run["run_id"])
        known.add(rid)
        start = starts.get(rid)
        if start is None:
            if not damaged and run["first_segment"] >= retired:
                rep.findings.append(Finding("corrupt", mpath, None, run["first_seq"],
                                            f"run {rid} is in the manifest but the log has no RUN_START for it"))
            continue
        if start.first_seq != run["first_seq"] or start.seq != run["first_seq"] - 1:
            rep.findings.append(Finding("corrupt", start.path, start.offset, start.seq,
                                        f"run {rid}: RUN_START says first seq {start.first_seq}, manifest {run['first_seq']}"))
        logged = configs.get(rid)
        if logged is not None and config_difference(run.get("config"), logged):
            rep.findings.append(Finding("corrupt", logged.path, logged.offset, logged.seq,
                                        f"run {rid}: {config_difference(run.get('config'), logged)}"))
        seal = seals.get(rid)
        if run["sealed"]:
            if seal is None:
                if not damaged and run["first_segment"] >= retired:
                    rep.findings.append(Finding("corrupt", mpath, None, run["last_seq"],
                                                f"run {rid} is sealed in the manifest but the log has no RUN_SEALED for it"))
                continue
            for key, logged in (("last_seq", seal.last_seq), ("records", seal.records)):
                if logged != run[key]:
                    rep.findings.append(Finding("corrupt", seal.path, seal.offset, seal.seq,
                                                f"run {rid}: {key} {logged} in the log, {run[key]} in the manifest"))
            if f"{seal.digest:08x}" != str(run["digest"]):
                rep.findings.append(Finding("corrupt", seal.path, seal.offset, seal.seq,
                                            f"run {rid}: digest {seal.digest:08x} in the log, {run['digest']} in the manifest"))
        elif seal is not None:
            rep.findings.append(Finding("note", mpath, None, seal.seq,
                                        f"run {rid} sealed in the log but not in the manifest (crash while sealing)"))
        elif isinstance(run.get("halted"), dict):
            d = run["halted"].get("durable_seq")
            then = ("the next run cut what it wrote after it" if i < len(runs) - 1 else
                    "what it wrote after it was never acknowledged and is not trusted: the next writer cuts it")
            rep.findings.append(Finding("note", mpath, None, d, f"run {rid} halted on a durability fault "
                                        f"({run['halted'].get('reason')}); it was durable up to seq {d}: {then}"))
        elif i < len(runs) - 1:
            rep.findings.append(Finding("note", mpath, None, run["first_seq"],
                                        f"run {rid} was not sealed: it crashed; the next run recovered from it"))
        else:
            rep.findings.append(Finding("note", mpath, None, run["first_seq"],
                                        f"run {rid} is not sealed: it crashed or is still running"))
    for rid, start in starts.items():
        if rid not in known:
            rep.findings.append(Finding("note", start.path, start.offset, start.seq,
                                        f"run {rid} has a RUN_START but no manifest entry (crash while starting)"))


def _check_snapshots(snaps_dir, reader: WalReader, rep: Report, halted: bool) -> None:
    from shmex.snapshot import store

    logged = {c.last_seq: c for c in reader.end.controls if c.kind == wal_layout.REC_SNAPSHOT}
    for seq, path in store.list_snapshots(snaps_dir):
        rep.snapshots += 1
        try:
            m, info = store.load_snapshot(path)
        except CorruptRecord as e:
            rep.findings.append(_corrupt(e))
            continue
        except CannotOpen as e:
            rep.findings.append(Finding("corrupt", path, None, seq, str(e)))
            continue
        if reader.segments and info.seq > reader.end.last_seq:
            if halted:
                rep.findings.append(Finding("note", path, None, info.seq,
                                            f"snapshot is beyond the end of the log (seq {reader.end.last_seq}) of a "
                                            f"run that halted on a durability fault: it was taken ahead of durability "
                                            f"and holds commands never acknowledged; the next launch removes it"))
            elif reader.end.damage is None:
                rep.findings.append(Finding("corrupt", path, 16, info.seq,
                                            f"snapshot is at seq {info.seq}, beyond the end of the log (seq {reader.end.last_seq}): it holds commands that were never durable"))
            else:
                rep.findings.append(Finding("note", path, None, info.seq,
                                            "snapshot lies past the damage: recovery from it does not need the damaged records (the log after it is not checked from here)"))
        first = rep.first_seq if rep.first_seq is not None else reader.end.last_seq + 1
        if reader.segments and info.seq < first - 1:
            rep.findings.append(Finding("note", path, None, info.seq, f"snapshot is older than the log kept "
                                        f"(from seq {first}): recovery cannot start from it"))
        mark = logged.get(info.seq)
        if mark is not None and mark.state_hash and mark.state_hash != info.state_hash:
            rep.findings.append(Finding("corrupt", path, 64, info.seq,
                                        f"state_hash {info.state_hash} differs from the one logged at {mark.path} offset {mark.offset}: {mark.state_hash}"))

"""The run manifest: one JSON file listing the runs that wrote a log directory.

Each run: ``run_id`` (32 hex), ``started_ns`` (UTC) and ``mono_ns`` (CLOCK_MONOTONIC,
the clock of the engine's stamps) read together at its start, ``config`` (the matcher
config), ``first_seq``, ``first_segment``, ``sealed``; a sealed run adds ``last_seq``,
``records`` (commands it wrote), ``digest`` (CRC32C chain over its command records,
hex) and ``sealed_ns``. An unsealed run that is not the live one crashed; one that halted
on a durability fault says so in ``halted`` (its durable seq and the reason).
A follower's directory holds another engine's journal: ``journal_runs`` lists the runs of
the engine that sequenced it (``FEED_KEYS`` of each, as its replicator published them),
which the feed's session and time stamps come from; ``runs`` stays the list of the
writers of this directory. An engine that takes over such a directory adds its own runs
to both.
Every update is atomic: temp file, fsync, rename, directory fsync. The file carries
``crc32c``: the CRC32C of the rest of the document in its canonical form (sorted keys, no
spaces); a manifest whose checksum does not match is corrupt, not trusted.
"""

from __future__ import annotations

import json
import os

from shmex.crc import crc32c
from shmex.errors import CannotOpen, CorruptRecord
from shmex.wal.layout import MANIFEST
from shmex.files import replace_durably

FORMAT = 1
_RUN_KEYS = ("run_id", "started_ns", "config", "first_seq", "first_segment", "sealed")
SEALED_KEYS = ("last_seq", "records", "digest", "sealed_ns")
FEED_KEYS = ("run_id", "first_seq", "started_ns", "mono_ns", "sealed", "last_seq")


def path_of(directory) -> str:
    return os.path.join(directory, MANIFEST)


def read(directory) -> dict | None:
    """The manifest, or None when the directory has none. Raises CorruptRecord if malformed."""
    p = path_of(directory)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CannotOpen(f"{p}: cannot read manifest: {e.strerror}") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRecord(p, getattr(e, "pos", 0), None, f"manifest is not valid JSON: {e}") from e
    _check(p, doc)
    want = _checksum(doc)
    if doc.get("crc32c") != want:
        raise CorruptRecord(p, 0, None, f"manifest checksum {doc.get('crc32c')!r}, its content gives "
                            f"{want!r}: edited or damaged")
    del doc["crc32c"]
    return doc


def _checksum(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "crc32c"}
    return f"{crc32c(json.dumps(body, sort_keys=True, separators=(',', ':')).encode()):08x}"


def _check(p, doc) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("runs"), list):
        raise CorruptRecord(p, 0, None, f"manifest must be an object with format {FORMAT} and a runs list")
    for i, run in enumerate(doc["runs"]):
        if not isinstance(run, dict):
            raise CorruptRecord(p, 0, None, f"manifest run {i} is not an object")
        missing = [k for k in _RUN_KEYS if k not in run]
        if run.get("sealed"):
            missing += [k for k in SEALED_KEYS if k not in run]
        if missing:
            raise CorruptRecord(p, 0, None, f"manifest run {i} lacks {', '.join(missing)}")
        for k in ("first_seq", "first_segment") + (("last_seq", "records") if run["sealed"] else ()):
            if not isinstance(run[k], int) or isinstance(run[k], bool):
                raise CorruptRecord(p, 0, None, f"manifest run {i}: {k} is {run[k]!r}, not an integer")
    if "journal_runs" in doc:
        check_journal_runs(p, doc["journal_runs"])


def check_journal_runs(p, runs) -> None:
    if not isinstance(runs, list):
        raise CorruptRecord(p, 0, None, "manifest journal_runs is not a list")
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or any(not isinstance(run.get(k), int) or isinstance(run.get(k), bool)
                                            for k in ("first_seq", "started_ns")) \
                or not isinstance(run.get("run_id"), str):
            raise CorruptRecord(p, 0, None, f"manifest journal run {i}: want run_id, and integer first_seq "
                                f"and started_ns, got {run!r}")


def journal_runs(doc: dict | None) -> list[dict]:
    """The runs of the engine that sequenced the log: ``journal_runs`` in a follower's
    directory, else the directory's own ``runs``."""
    if not doc:
        return []
    return doc["journal_runs"] if "journal_runs" in doc else doc["runs"]


def feed_runs(doc: dict | None) -> list[dict]:
    """`journal_runs` with only what the feed needs of each (`FEED_KEYS`): what a
    replicator publishes for its followers."""
    return [{k: r[k] for k in FEED_KEYS if k in r} for r in journal_runs(doc)]


def write(directory, doc: dict) -> None:
    body = {k: v for k, v in doc.items() if k != "crc32c"}
    replace_durably(path_of(directory), json.dumps(dict(body, crc32c=_checksum(body)), indent=1,
                                                   sort_keys=True).encode())


def stat_key(directory) -> tuple | None:
    """(mtime, size, inode) of the manifest, None when there is none: a reader that kept
    the key of its last read re-reads only when this changes (every write renames a new
    file over it)."""
    try:
        st = os.stat(path_of(directory))
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def halted_at(doc: dict | None) -> int | None:
    """The durable seq of the log's last run if that run halted on a durability fault (its
    ``halted`` entry): what it wrote after that seq is not trusted. None otherwise."""
    if not doc or not doc["runs"]:
        return None
    halted = doc["runs"][-1].get("halted")
    return None if not isinstance(halted, dict) else halted.get("durable_seq")


def new() -> dict:
    return {"format": FORMAT, "runs": []}

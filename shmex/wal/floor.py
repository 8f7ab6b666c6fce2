"""The disk's floor for group commit: what no WAL writer on this filesystem can beat.

A sync trace is a plain loop of small writes (``WRITE_BYTES`` each, into a pre-zeroed file,
so no write extends it) each followed by fdatasync, for a while, recording when each sync
started and ended. Open-loop arrivals at a fixed rate are then replayed against that trace:
an arrival is durable at the end of the first sync that starts after it (a group commit
that syncs back to back, with no engine in the way). The arrivals' latencies are the floor:
the disk's own stalls fall into it as they fall into the engine's ``to_durable``.

`record(fs_path, result)` keeps the newest floor of each filesystem (by device number) in
the user's cache, so that ``shmex launch`` can print it beside its ``to_durable`` without
measuring at every start.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

WRITE_BYTES = 1024                 # a group's records at 100K/s and ~200 us per sync: ~1.6 KB
FILE_BYTES = 64 << 20              # the trace's file, written round and round
STALL_NS = 50_000_000              # a sync longer than this is counted as a stall
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def sync_trace(directory: str, seconds: float, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Write + fdatasync back to back for `seconds` in a scratch file of `directory` ->
    (start_ns, end_ns) of every sync, CLOCK_MONOTONIC. The file is zeroed and synced
    first, and removed after."""
    fd, path = tempfile.mkstemp(prefix=".shmex-floor-", dir=directory)
    try:
        block = b"\0" * (1 << 20)
        for _ in range(FILE_BYTES // len(block)):
            os.write(fd, block)
        os.fsync(fd)
        payload = os.urandom(WRITE_BYTES)
        starts, ends = [], []
        off, t_end, said = 0, time.monotonic() + seconds, time.monotonic()
        while True:
            t0 = time.monotonic_ns()
            if t0 / 1e9 >= t_end:
                break
            os.pwrite(fd, payload, off)
            os.fdatasync(fd)
            starts.append(t0)
            ends.append(time.monotonic_ns())
            off = (off + WRITE_BYTES) % FILE_BYTES
            if progress is not None and time.monotonic() - said >= 5.0:
                said = time.monotonic()
                progress(f"disk floor: {len(starts):,} syncs, {max(0.0, t_end - said):.0f} s left")
    finally:
        os.close(fd)
        os.unlink(path)
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def replay_arrivals(starts: np.ndarray, ends: np.ndarray, rate: float) -> np.ndarray:
    """Latency (ns) of open-loop arrivals at `rate` per second over the trace: each is
    durable at the end of the first sync starting at or after it. Arrivals after the last
    sync's start are left out (nothing in the trace makes them durable)."""
    period = 1e9 / rate
    n = int((starts[-1] - starts[0]) / period)
    arrivals = starts[0] + (np.arange(n, dtype=np.float64) * period).astype(np.int64)
    i = np.searchsorted(starts, arrivals, side="left")
    keep = i < len(starts)
    return ends[i[keep]] - arrivals[keep]


def measure(directory: str, seconds: float = 60.0, rate: float = 100_000.0, progress=None) -> dict:
    """The floor of `directory`'s filesystem: the sync trace's own figures and the
    arrivals' latencies (ns)."""
    starts, ends = sync_trace(directory, seconds, progress)
    if len(starts) < 2:
        raise RuntimeError(f"disk floor: only {len(starts)} sync(s) in {seconds} s in {directory}")
    sync = ends - starts
    lat = replay_arrivals(starts, ends, rate)
    return {
        "directory": os.path.abspath(directory), "device": os.stat(directory).st_dev,
        "measured_at": time.time(), "seconds": seconds, "rate": rate, "write_bytes": WRITE_BYTES,
        "syncs": int(len(sync)), "stalls_over_50ms": int((sync > STALL_NS).sum()),
        "sync_ns": _pcts(sync), "floor_ns": _pcts(lat),
    }


def _pcts(x: np.ndarray) -> dict:
    out = {f"p{p:g}".replace(".", ""): int(np.percentile(x, p)) for p in PERCENTILES}
    out["max"] = int(x.max())
    return out


def describe(f: dict) -> str:
    """One line: the floor's percentiles and what it was measured on."""
    us = {k: v / 1e3 for k, v in f["floor_ns"].items()}
    age = (time.time() - f["measured_at"]) / 86400
    return (f"p50 {us['p50']:,.1f} us, p99 {us['p99']:,.1f} us, p99.9 {us['p999']:,.1f} us, "
            f"max {us['max']:,.1f} us ({f['rate']:,.0f}/s against {f['seconds']:.0f} s of syncs, "
            f"{f['stalls_over_50ms']} over 50 ms; measured in {f['directory']} "
            f"{'today' if age < 1 else f'{age:.0f} days ago'})")


def _cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shmex", "disk-floor.json")


def record(result: dict) -> str:
    """Keep `result` as its filesystem's newest floor -> the cache file's path."""
    path = _cache_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    known = _read_cache(path)
    known[str(result["device"])] = result
    tmp = path + f".{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(known, f, indent=1)
    os.replace(tmp, path)
    return path


def recorded(directory: str) -> dict | None:
    """The newest floor measured on `directory`'s filesystem, or None."""
    try:
        dev = os.stat(directory).st_dev
    except OSError:
        return None
    return _read_cache(_cache_path()).get(str(dev))


def _read_cache(path: str) -> dict:
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}      # no floor yet, or a damaged cache: measured again by the next bench

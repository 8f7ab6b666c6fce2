"""WAL benchmark: appends per durability mode, commit latency, sqlite3, replay, recovery.

Topology (one process; the WAL writer's duty cycle driven in a loop)::

    pre-sequenced COMMAND batches --append--> WalWriter --pwrite+fdatasync--> wal-*.seg
                                                  |                              |
                                     commit latency: append -> durable_seq      |
    WalReader (mmap, CRC32C) --apply--> Matcher  <---------------------------------+
    snapshot + tail                 --> recovery time

First, the disk's floor for group commit (`shmex.wal.floor`): a sync trace of the
directory's filesystem with open-loop arrivals replayed against it, recorded for that
filesystem so that ``shmex launch`` shows it beside its ``to_durable``.

Baseline in the same run: sqlite3 in WAL mode, one INSERT of a 64-byte blob per command,
batched transactions, synchronous NORMAL and FULL.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

import numpy as np

from shmex.engine.machine import banner, machine
from shmex.schema import BUY, COMMAND, GTC, IOC, K_CANCEL, K_NEW, K_REPLACE, LIMIT, SELL
from shmex.wal import floor

RUNS = 3   # each append measurement is repeated into a fresh directory; the median is reported

CONFIG = dict(symbols=4, price_lo=1000, price_hi=1200, capacity=1 << 20)


def workload(n: int, seed: int = 1, *, symbols: int = 4, band: tuple[int, int] = (1000, 1200),
             producers: int = 4, first_seq: int = 1) -> np.ndarray:
    """n sequenced commands: resting limits near a mid, crossing IOCs, cancels and replaces of
    earlier orders. seq is stamped first_seq, first_seq + 1, ...; engine_ns is seq."""
    rng = np.random.default_rng(seed)
    c = np.zeros(n, dtype=COMMAND)
    lo, hi = band
    mid = (lo + hi) // 2
    r = rng.random(n)
    kind = np.where(r < 0.70, K_NEW, np.where(r < 0.92, K_CANCEL, K_REPLACE))
    side = rng.integers(BUY, SELL + 1, n)
    ioc = rng.random(n) < 0.12
    off = rng.integers(1, 12, n)
    # resting orders sit on their own side of the mid; IOCs cross it
    price = np.where(side == BUY, mid - off, mid + off)
    price = np.where(ioc, np.where(side == BUY, mid + off, mid - off), price)
    idx = np.arange(n)
    prod = (idx % producers).astype(np.uint16)
    sym = rng.integers(0, symbols, n).astype(np.uint32)
    cid = idx.astype(np.uint64) + 1
    # cancels/replaces name an earlier command's order (unknown if that was not a NEW)
    back = np.maximum(0, idx - rng.integers(1, 2000, n))
    ref = kind != K_NEW
    cid = np.where(ref, cid[back], cid)
    prod = np.where(ref, prod[back], prod)
    sym = np.where(ref, sym[back], sym)
    c["kind"] = kind
    c["side"] = side
    c["order_type"] = LIMIT
    c["tif"] = np.where(ioc & (kind == K_NEW), IOC, GTC)
    c["producer"] = prod
    c["symbol"] = sym
    c["client_id"] = cid
    c["price"] = np.clip(price, lo, hi)
    c["qty"] = rng.integers(1, 100, n)
    c["pseq"] = idx // producers + 1
    c["sent_ns"] = idx
    c["seq"] = idx + first_seq
    c["engine_ns"] = idx + first_seq
    return c


# ---- measuring ----------------------------------------------------------------------------

def _pct(ns: list[int]) -> dict:
    a = np.asarray(ns, dtype=np.int64)
    return {"p50": int(np.percentile(a, 50)), "p99": int(np.percentile(a, 99)), "max": int(a.max())}


def _progress(msg: str) -> None:
    print(f"bench wal: {msg}", file=sys.stderr, flush=True)


def _crc_kernels(cmds: np.ndarray) -> dict:
    """Append + CRC32C into RAM: the SSE4.2 instruction and the table twin."""
    from shmex.wal import _kernels as wal_kernels
    src = cmds.view(np.uint64).reshape(len(cmds), 8)
    dst = np.zeros(len(cmds) * 10, dtype=np.uint64)
    out = {}
    for name, hw in (("sse42", True), ("table", False)):
        wal_kernels._encode_commands(src[:8], dst, 0, 8, 1, np.uint64(0), hw)
        best = min(_timed(lambda: wal_kernels._encode_commands(src, dst, 0, len(cmds), 1, np.uint64(0), hw))
                   for _ in range(3))
        out[name] = len(cmds) / best
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _append_run(d, cmds, mode: str, batch: int, segment_bytes: int) -> tuple[float, list[int]]:
    """Append everything in batches, committing each (the writer's duty cycle at this drain
    size). Returns (records/s, per-batch latency append -> durable, ns)."""
    from shmex.wal.writer import WalWriter
    shutil.rmtree(d, ignore_errors=True)
    w = WalWriter(d, mode=mode, group_records=max(batch, 1), segment_bytes=segment_bytes, config=CONFIG)
    lat = []
    t0 = time.perf_counter()
    for i in range(0, len(cmds), batch):
        t = time.perf_counter_ns()
        b = cmds[i:i + batch]
        w.append(b)
        w.commit()
        assert w.durable_seq == int(b["seq"][-1]), "Invariant: durable_seq did not reach the batch"
        lat.append(time.perf_counter_ns() - t)
        w.poll()  # idle part of the duty cycle: prepares the next segment
    dt = time.perf_counter() - t0
    w.close()
    return len(cmds) / dt, lat


def _median_run(d, cmds, mode: str, batch: int, segment_bytes: int, runs: int = RUNS) -> tuple[float, list[int], list[float]]:
    """`_append_run` `runs` times, each into a fresh log directory (the first is often
    slower: the page cache reclaims the previous run's pages). -> the median run's
    (records/s, latencies), and every run's records/s."""
    out = sorted((_append_run(d, cmds, mode, batch, segment_bytes) for _ in range(runs)), key=lambda r: r[0])
    rate, lat = out[len(out) // 2]
    return rate, lat, [r[0] for r in out]


def _sqlite(path, rows: np.ndarray, sync: str, batch: int) -> float:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute("CREATE TABLE wal (seq INTEGER PRIMARY KEY, rec BLOB NOT NULL)")
    recs = [(int(s), r.tobytes()) for s, r in zip(rows["seq"], rows)]
    t = time.perf_counter()
    for i in range(0, len(recs), batch):
        db.execute("BEGIN")
        db.executemany("INSERT INTO wal VALUES (?, ?)", recs[i:i + batch])
        db.execute("COMMIT")
    dt = time.perf_counter() - t
    db.close()
    return len(recs) / dt


def _recovery(d, n: int) -> dict:
    """A log of n commands through a matcher, snapshots near the end; replay and recovery."""
    from shmex.matcher import Matcher
    from shmex.snapshot import store
    from shmex.recovery.recover import recover, snapshot_dir
    from shmex.wal.reader import WalReader
    from shmex.wal.writer import WalWriter
    shutil.rmtree(d, ignore_errors=True)
    cmds = workload(n, seed=2)
    warm = Matcher(**CONFIG)
    warm.apply(cmds[:1000])  # JIT / cache load, excluded
    m = Matcher(**CONFIG)
    w = WalWriter(d, mode="none", config=CONFIG)
    snap_at = {n // 2, n - n // 20}
    out = {}
    for i in range(0, n, 10_000):
        b = cmds[i:i + 10_000]
        m.apply(b)
        w.append(b)
        if m.last_seq in snap_at:
            t = time.perf_counter()
            state = m.export_state()
            out["snapshot_pause_s"] = time.perf_counter() - t
            t = time.perf_counter()
            info = store.write_state(snapshot_dir(d), state, m.last_seq, m.state_hash())
            out["snapshot_write_s"] = time.perf_counter() - t
            out["snapshot_bytes"] = info.payload_bytes
            w.note_snapshot(info.seq, info.state_hash)
    w.close()
    live_hash = m.state_hash()
    for _ in WalReader(d).commands(until=10):  # kernel cache load, excluded
        pass
    r = WalReader(d)
    t = time.perf_counter()
    k = sum(len(b) for b in r.commands())
    out["scan_per_s"] = k / (time.perf_counter() - t)
    recover(d, until=1000, use_snapshots=False)  # warm the replay path
    full = recover(d, use_snapshots=False)
    assert full.matcher.state_hash() == live_hash, "replay disagrees with the live matcher"
    snap = recover(d)
    assert snap.matcher.state_hash() == live_hash, "snapshot + tail disagrees with the live matcher"
    out["replay_per_s"] = full.records / full.replay_seconds
    out["recovery_s"] = {"no_snapshot": full.seconds, "snapshot": snap.seconds}
    out["recovery_tail_records"] = snap.records
    fresh = Matcher(**CONFIG)
    out["live_apply_per_s"] = n / _timed(lambda: [fresh.process_into(cmds[i:i + 65536], stamp=False)
                                                  for i in range(0, n, 65536)])
    return out


def main(args) -> int:
    bad = (f"--floor-rate {args.floor_rate:g}: must be > 0" if args.floor_rate <= 0 else
           f"--floor-seconds {args.floor_seconds:g}: must be >= 0" if args.floor_seconds < 0 else
           "--floor-only with --floor-seconds 0: nothing to measure" if args.floor_only and not args.floor_seconds
           else None)
    if bad:
        print(f"bench wal: {bad}", file=sys.stderr)
        return 2
    n = int(args.records)
    base = args.dir or tempfile.mkdtemp(prefix="shmex-walbench-")
    os.makedirs(base, exist_ok=True)
    mach = machine()
    print(banner(f"shmex bench wal --records {n}", mach) + f"; dir {base}")
    res: dict = {"machine": mach, "records": n, "command": " ".join(sys.argv)}
    if args.floor_seconds > 0:
        _progress(f"disk floor: {args.floor_seconds:.0f} s of write + fdatasync in {base}")
        res["disk_floor"] = floor.measure(base, args.floor_seconds, args.floor_rate, progress=_progress)
        res["disk_floor_recorded_in"] = floor.record(res["disk_floor"])
    if args.floor_only:
        _report_floor(res)
        return _finish(res, args, base)
    cmds = workload(n, seed=1)
    _progress("CRC kernels")
    res["append_crc_ram_per_s"] = _crc_kernels(cmds)
    seg = 64 << 20
    res["append_per_s"], res["commit_latency_ns"], res["group_batches"] = {}, {}, {}
    _progress("mode none")
    rate, lat, runs = _median_run(os.path.join(base, "none"), cmds, "none", 4096, seg)
    res["append_per_s"]["none"], res["commit_latency_ns"]["none"] = rate, _pct(lat)
    res["append_runs_per_s"] = {"none": runs}
    for b in (64, 512, 4096, 16384):
        _progress(f"mode group, batch {b}")
        m = min(n, b * 400)
        rate, lat, runs = _median_run(os.path.join(base, "group"), cmds[:m], "group", b, seg)
        res["group_batches"][b] = {"per_s": rate, "latency_ns": _pct(lat), "runs_per_s": runs}
    best = max((b for b, v in res["group_batches"].items() if v["latency_ns"]["p99"] <= 1_000_000),
               key=lambda b: res["group_batches"][b]["per_s"], default=4096)
    res["group_batch_chosen"] = best
    res["append_per_s"]["group"] = res["group_batches"][best]["per_s"]
    res["commit_latency_ns"]["group"] = res["group_batches"][best]["latency_ns"]
    _progress("mode always")
    rate, lat = _append_run(os.path.join(base, "always"), cmds[:3000], "always", 1, seg)
    res["append_per_s"]["always"], res["commit_latency_ns"]["always"] = rate, _pct(lat)
    shutil.rmtree(os.path.join(base, "none"), ignore_errors=True)
    shutil.rmtree(os.path.join(base, "group"), ignore_errors=True)
    shutil.rmtree(os.path.join(base, "always"), ignore_errors=True)
    res["sqlite_per_s"] = {}
    rows = cmds[:min(n, 200_000)]
    for sync in ("NORMAL", "FULL"):
        for b in (64, 4096):
            _progress(f"sqlite3 WAL synchronous={sync}, {b} rows per transaction")
            res["sqlite_per_s"][f"wal_{sync.lower()}_b{b}"] = _sqlite(os.path.join(base, "bench.sqlite"), rows, sync, b)
    for suffix in ("", "-wal", "-shm"):
        p = os.path.join(base, "bench.sqlite" + suffix)
        if os.path.exists(p):
            os.unlink(p)
    _progress("replay and recovery of 1M commands")
    rec = _recovery(os.path.join(base, "recovery"), 1_000_000)
    shutil.rmtree(os.path.join(base, "recovery"), ignore_errors=True)
    res.update(rec)
    _report(res)
    _report_floor(res)
    return _finish(res, args, base)


def _finish(res: dict, args, base: str) -> int:
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _report_floor(r: dict) -> None:
    f = r.get("disk_floor")
    if f is None:
        return
    s = {k: v / 1e3 for k, v in f["sync_ns"].items()}
    print(f"disk floor for group commit ({f['seconds']:.0f} s of {f['write_bytes']}-byte write + fdatasync "
          f"in {f['directory']}):")
    print(f"  one sync        p50 {s['p50']:,.1f} us, p99 {s['p99']:,.1f} us, p99.9 {s['p999']:,.1f} us, "
          f"max {s['max']:,.1f} us; {f['syncs']:,} syncs, {f['stalls_over_50ms']} over 50 ms")
    print(f"  floor           {floor.describe(f)}")
    print("  (an arrival is durable at the end of the first sync starting after it: no group-commit "
          "WAL writer on this filesystem does better)")
    g = r.get("commit_latency_ns", {}).get("group")
    if g is not None:
        print(f"  the writer's own group commit above: p50 {g['p50'] / 1e3:,.1f} us, p99 {g['p99'] / 1e3:,.1f} us "
              f"per batch, records appended as fast as it takes them (closed loop)")
    print(f"  recorded for this filesystem in {r['disk_floor_recorded_in']}: `shmex launch` on it shows "
          f"the floor beside to_durable")


def _report(r: dict) -> None:
    M = 1e6
    best_sqlite_full = max(v for k, v in r["sqlite_per_s"].items() if "full" in k)
    print("append + CRC32C into RAM (80-byte slots): " + ", ".join(
        f"{k} {v / M:.1f}M/s" for k, v in r["append_crc_ram_per_s"].items()))
    print(f"{'mode':<8}{'records/s':>14}{'commit p50':>14}{'p99':>12}{'x sqlite FULL':>15}")
    for mode in ("none", "group", "always"):
        v, lat = r["append_per_s"][mode], r["commit_latency_ns"][mode]
        print(f"{mode:<8}{v / M:>13.2f}M{lat['p50'] / 1e3:>12.1f}us{lat['p99'] / 1e3:>10.1f}us"
              f"{v / best_sqlite_full:>14.1f}x")
    print(f"(each append figure: the median of {RUNS} runs; mode none runs: "
          + ", ".join(f"{v / M:.1f}" for v in r["append_runs_per_s"]["none"]) + "M/s)")
    print(f"group commit by batch (records per fdatasync); chosen: {r['group_batch_chosen']} "
          "(fastest with p99 <= 1 ms)")
    for b, v in r["group_batches"].items():
        print(f"  batch {b:>6}: {v['per_s'] / M:6.2f}M/s  p50 {v['latency_ns']['p50'] / 1e3:8.1f}us"
              f"  p99 {v['latency_ns']['p99'] / 1e3:8.1f}us")
    print("sqlite3 WAL mode, one 64-byte blob row per command:")
    for k, v in r["sqlite_per_s"].items():
        print(f"  {k:<18} {v / M:6.3f}M/s")
    print(f"scan + CRC32C (no matcher): {r['scan_per_s'] / M:.1f}M/s; replay into a matcher: "
          f"{r['replay_per_s'] / M:.2f}M/s (the matcher alone on the same batches: {r['live_apply_per_s'] / M:.2f}M/s)")
    rs = r["recovery_s"]
    print(f"recovery of 1M commands: {rs['no_snapshot']:.3f} s from the log alone, "
          f"{rs['snapshot']:.3f} s from a snapshot + {r['recovery_tail_records']:,}-command tail")
    print(f"snapshot: export pause {r['snapshot_pause_s'] * 1e3:.1f} ms, write {r['snapshot_write_s']:.3f} s, "
          f"{r['snapshot_bytes'] / 2**20:.1f} MiB")

"""matcher_throughput: one matcher, one core, the reference workload in batches.

    workload (numpy COMMAND records, generated before timing)
        │  batches of --batch commands
        ▼
    Matcher.process_into ──▶ REPORT records (the matcher's own buffer, reused)

The same commands then go through the PyPI order books (each through its own API, on a
prefix of the workload: they are slow), and each must give the same fills as shmex.
Compilation is warm-up: it is timed and reported, never counted in the rates.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import psutil

from shmex.bench import peer_venv, peers
from shmex.engine.machine import banner, machine
from shmex.bench.workload import book_config, reference_workload
from shmex.matcher import Matcher
from shmex.schema import K_NEW, R_FILL, TAKER

BATCH = 4096


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_shmex(cmds: np.ndarray, batch: int = BATCH, collect: bool = False):
    """One timed pass on a fresh matcher: (seconds, fill count, fills array or None, matcher)."""
    m = Matcher(**book_config())
    work = cmds.copy()
    chunks = []
    t0 = time.perf_counter()
    for i in range(0, len(work), batch):
        out = m.process_into(work[i:i + batch])
        if collect:
            chunks.append(peers.fills_of(out))
    seconds = time.perf_counter() - t0
    if collect:
        allf = np.concatenate(chunks) if chunks else np.zeros((0, 4), np.int64)
        return seconds, len(allf), allf, m
    return seconds, 0, None, m


PATH_TEXT = {
    "per_call": "Matcher.submit / cancel per command, its reports returned each time",
    "fresh_batch": "one Matcher.process of the whole prefix on a fresh matcher, reports returned",
}


def python_paths(cmds: np.ndarray, repeats: int = 3) -> dict:
    """commands/s of a Python user's two ways in, each on a fresh matcher (median of
    `repeats`): one call per command, and one `process` of the whole array."""
    cols = [cmds[k].tolist() for k in ("kind", "side", "price", "qty", "client_id")]
    per_call, batch = [], []
    for _ in range(repeats):
        m = Matcher(**book_config())
        submit, cancel = m.submit, m.cancel
        t0 = time.perf_counter()
        for kind, side, price, qty, cid in zip(*cols):
            if kind == K_NEW:
                submit(side, price, qty, client_id=cid)
            else:
                cancel(cid)
        per_call.append(len(cmds) / (time.perf_counter() - t0))
        m = Matcher(**book_config())
        work = cmds.copy()
        t0 = time.perf_counter()
        m.process(work)
        batch.append(len(cmds) / (time.perf_counter() - t0))
    return {"per_call": statistics.median(per_call), "fresh_batch": statistics.median(batch),
            "per_call_runs": per_call, "fresh_batch_runs": batch, "commands": len(cmds)}


def _peer_row(result: dict, rate: float, label: str, d: dict) -> None:
    """Print one peer's row (rate, ratio to shmex, check, interpreter) and keep it in `result`."""
    rate_p = d["commands_per_s"]
    print(f"  {label:<28}{d['version'] or '?':<12}{rate_p:>14,.0f}{rate / rate_p:>11,.0f}x"
          f"  {'same' if d['verified'] else 'DIFFERENT'}: {d['check']}; Python {d['python']}")
    result["peers"][label] = rate_p
    result["peer_details"][label] = d


def count_fills(cmds: np.ndarray) -> int:
    m = Matcher(**book_config())
    n = 0
    work = cmds.copy()
    for i in range(0, len(work), BATCH):
        out = m.process_into(work[i:i + BATCH])
        n += int(np.count_nonzero((out["kind"] == R_FILL) & (out["liquidity"] == TAKER)))
    return n


def memory_run(total: int, seed: int, batch: int) -> dict:
    """Resident memory while `total` commands run on one matcher after warm-up."""
    proc = psutil.Process()
    cmds = reference_workload(total, seed=seed)
    m = Matcher(**book_config())
    m.process_into(cmds[:batch])  # warm-up: buffers reach their working size
    rss0 = proc.memory_info().rss
    peak = rss0
    step = max(total // 10, batch)
    t0 = time.perf_counter()
    for i in range(batch, total, batch):
        m.process_into(cmds[i:i + batch])
        if i % step < batch:
            peak = max(peak, proc.memory_info().rss)
            _progress(f"  memory: {i:>11,} commands, rss {proc.memory_info().rss / 2**20:8.1f} MiB")
    seconds = time.perf_counter() - t0
    rss1 = proc.memory_info().rss
    return {"commands": total, "rss_start_bytes": rss0, "rss_end_bytes": rss1,
            "rss_peak_bytes": max(peak, rss1), "commands_per_s": (total - batch) / seconds}


def main(args) -> int:
    m_info = machine()
    print(banner("shmex bench matcher", m_info))
    n = args.commands
    print(f"workload: reference mix, 1 symbol, {n:,} commands, seed {args.seed}; "
          f"batches of {BATCH}; book {book_config()}")

    _progress("warm-up: loading the compiled matcher (the first run on a machine compiles it, "
              "about 1-2 minutes) ...")
    t0 = time.perf_counter()
    warm = Matcher(**book_config())
    warm.process(reference_workload(1000, seed=args.seed + 1))
    compile_s = time.perf_counter() - t0
    _progress(f"warm-up (JIT load or compile): {compile_s:.2f} s")

    t0 = time.perf_counter()
    cmds = reference_workload(n, seed=args.seed)
    gen_s = time.perf_counter() - t0
    kinds = np.bincount(cmds["kind"], minlength=4)
    print(f"generated in {gen_s:.2f} s: {kinds[1]:,} new, {kinds[2]:,} cancels")

    rates = []
    for r in range(args.repeats):
        seconds, _, _, _ = run_shmex(cmds)
        rates.append(n / seconds)
        _progress(f"  shmex run {r + 1}/{args.repeats}: {n / seconds / 1e6:6.2f} M commands/s")
    rate = statistics.median(rates)
    fills = count_fills(cmds)
    print(f"\nshmex          {rate / 1e6:8.2f} M commands/s  (median of {args.repeats}; "
          f"min {min(rates) / 1e6:.2f}, max {max(rates) / 1e6:.2f}); {fills:,} fills; "
          f"warm-up {compile_s:.2f} s")

    result = {"commands": n, "commands_per_s": rate, "runs_per_s": rates, "fills": fills,
              "warmup_s": compile_s, "machine": m_info, "peers": {}, "peer_details": {}}

    if not args.no_peers:
        k = min(args.peer_commands, n)
        prefix = cmds[:k]
        _, _, want_fills, mk = run_shmex(prefix, collect=True)
        want_rest = peers.resting_of(mk.resting())
        t0 = time.perf_counter()
        run_shmex(prefix)
        shmex_prefix_rate = k / (time.perf_counter() - t0)
        print(f"\npeers on the first {k:,} commands ({len(want_fills):,} fills), each on a fresh "
              f"book; ratios are to shmex's median above (shmex on this short prefix alone: "
              f"{shmex_prefix_rate / 1e6:.2f} M commands/s, first-touch page faults included)")
        print(f"  {'order book':<28}{'version':<12}{'commands/s':>14}{'shmex is':>12}  check")
        paths = python_paths(prefix)
        result["python_api"] = paths
        for name, text in (("per_call", "shmex, one call each"), ("fresh_batch", "shmex, one process()")):
            r = paths[name]
            print(f"  {text:<28}{'':<12}{r:>14,.0f}{rate / r:>11,.1f}x  {PATH_TEXT[name]}")
        for name, adapter in peers.PEERS.items():
            ok, why = adapter.available()
            if not ok:
                print(f"  {name:<28}{'-':<12}{'-':>14}{'-':>12}  not run: {why}")
                continue
            _progress(f"  running {name} ...")
            res = peers.measure(name, prefix, repeats=3)
            same, text = peers.verify(name, res["raw"], want_fills, want_rest)
            _peer_row(result, rate, name, {"version": res["version"], "commands_per_s": res["commands_per_s"],
                                           "verified": same, "check": text,
                                           "python": ".".join(map(str, sys.version_info[:3]))})
        if not getattr(args, "no_peer_venvs", False):
            for name, (need, spec) in peer_venv.ELSEWHERE.items():
                if sys.version_info[:2] >= need:
                    continue                  # this interpreter ran it above
                _progress(f"  running {name} ({spec}) on Python {need[0]}.{need[1]} ...")
                r = peer_venv.run(name, prefix, want_fills, want_rest, progress=_progress)
                label = f"{name} py{need[0]}.{need[1]}"
                if "skipped" in r:
                    print(f"  {label:<28}{'-':<12}{'-':>14}{'-':>12}  not run: {r['skipped']}")
                    continue
                _peer_row(result, rate, label, r)
        if result["peers"]:
            best = max(result["peers"], key=result["peers"].get)
            print(f"\n  fastest peer: {best} at {result['peers'][best]:,.0f} commands/s; "
                  f"shmex is {rate / result['peers'][best]:,.1f}x faster")

    if args.memory:
        _progress("memory run: 10M commands after warm-up ...")
        mem = memory_run(10_000_000, args.seed + 2, BATCH)
        result["memory"] = mem
        print(f"\nmemory: {mem['commands']:,} commands after warm-up at "
              f"{mem['commands_per_s'] / 1e6:.2f} M/s; rss {mem['rss_start_bytes'] / 2**20:.1f} MiB "
              f"-> {mem['rss_end_bytes'] / 2**20:.1f} MiB (peak {mem['rss_peak_bytes'] / 2**20:.1f})")

    print(f"\nsummary: shmex {rate / 1e6:.2f} M commands/s on one core, {fills:,} fills "
          f"from {n:,} commands; target >= 10 M commands/s: "
          f"{'met' if rate >= 10e6 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"json: {args.json}")
    return 0

"""``shmex launch``: start the engine on this machine, run the built-in load, summarize.

    shmex launch                                  # demo: 2 producers, 1M orders, ./shmex-data
    shmex launch --producers 2 --duration 10 --rate 100000 --durability group \\
                 --json run.json --hgrm run.hgrm --plot run.png

Exit status: 0 the load ran and every check passed; 130 stopped by SIGINT, 143 by
SIGTERM (a clean stop in both cases: rings drained, WAL sealed, final snapshot, no
segment left); 1 a process died or a check failed (the message names it); 2 bad usage
or the data directory cannot be used.

The data directory keeps its log across launches: a launch on a directory with a log
recovers the book from its newest snapshot and WAL and continues the sequence
(``--fresh`` starts an empty log instead). ``shmex replay DIR`` prints the same
state_hash as the summary; ``shmex verify DIR`` checks the log and snapshots.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np

from shmex.bench.machine import describe
from shmex.errors import UsageError
from shmex.procs import layout as L
from shmex.procs.latency import (STAGE_TEXT, STAGES, percentile_of_counts, stage_counts, summary, to_hdr,
                                 write_hgrm, write_plot)
from shmex.procs.loadgen import book_config
from shmex.ring.wait import resolve as resolve_wait
from shmex.shm.names import check_run_id, new_run_id

from shmex.procs.launch_args import DEFAULT_DIR, DEMO_ORDERS


def build_config(args) -> dict:
    producers = int(args.producers)
    if producers < 0 or args.clients < 0 or producers + args.clients < 1:
        raise ValueError("--producers and --clients: at least one producer slot is needed")
    if args.symbols < 1:
        raise ValueError(f"--symbols {args.symbols}: must be >= 1")
    orders, duration = args.orders, args.duration
    if orders is None and duration is None and producers > 0:
        orders = DEMO_ORDERS
    if orders is not None and orders < 0:
        raise ValueError(f"--orders {orders}: must be >= 0")
    if args.rate is not None and args.rate <= 0:
        raise ValueError(f"--rate {args.rate}: must be > 0 orders/s")
    per = [-1] * producers
    if orders is not None:
        per = [orders // producers + (1 if k < orders % producers else 0) for k in range(producers)]
    run_id = check_run_id(args.name) if args.name else new_run_id()
    data_dir = os.path.abspath(args.data_dir or DEFAULT_DIR)
    # walwriter 'hybrid': it yields between journal polls while commands keep coming (no
    # semaphore wake-up per batch: 100K/s, mode none, p50 to_durable 29 -> 18 us, median
    # of 3) and blocks once the journal stayed empty for 0.5 ms (in mode none the numba
    # duty cycle, wal_duty, runs the spin and yield phases; 'block' there: 100K/s t2t p50
    # 6 -> 18-29 us, 2 runs)
    wait = {"matcher": "block", "walwriter": "hybrid", "publisher": "block", "producer": "block"}
    for item in (args.wait or "").split(","):
        if item:
            role, _, strat = item.partition("=")
            if role not in wait or not strat:
                raise ValueError(f"--wait {item!r}: want ROLE=STRATEGY, ROLE one of {', '.join(wait)}")
            try:                     # a bad name stops the launch here, not a child later
                resolve_wait(strat)
            except UsageError as e:
                raise ValueError(f"--wait {item!r}: {e}") from None
            wait[role] = strat
    return {
        "run_id": run_id, "producers": producers, "clients": int(args.clients),
        "symbols": int(args.symbols), "book": book_config(int(args.symbols), int(args.capacity)),
        "orders_per_producer": per, "orders": orders, "duration": duration, "rate": args.rate,
        "durability": args.durability, "data_dir": data_dir, "seed": int(args.seed),
        "snapshot_every": int(args.snapshot_every), "publisher_inline": args.publisher == "inline",
        "ring_in": 1 << 16, "ring_rep": 1 << 16, "ring_journal": 1 << 17, "ring_out": 1 << 18,
        "cid_base": (int(time.time()) & 0xFFFFFFF) << 32, "wait": wait,
        "max_restarts": int(getattr(args, "restarts", 5)),
        "restart_window_s": float(getattr(args, "restart_window", 60.0)),
        "segment_bytes": getattr(args, "segment_bytes", None),
        "standby": not getattr(args, "no_standby", False),
    }


def _fresh(data_dir: str) -> None:
    """Remove a previous log from data_dir (only files shmex writes there)."""
    from shmex.wal import layout as WL

    if not os.path.isdir(data_dir):
        return
    for name in os.listdir(data_dir):
        if WL.parse_segment_name(name) is not None or name in (WL.MANIFEST, WL.SPARE_NAME):
            os.unlink(os.path.join(data_dir, name))
    shutil.rmtree(os.path.join(data_dir, WL.SNAPSHOT_DIR), ignore_errors=True)


def _totals(ctl: np.ndarray, cfg: dict, only_load: bool = False) -> dict:
    P = cfg["producers"] + cfg["clients"]
    ks = range(cfg["producers"]) if only_load else range(P)
    blocks = np.array([ctl[L.prod_base(P, k):L.prod_base(P, k) + L.PROD_CELLS] for k in ks]).reshape(-1, L.PROD_CELLS)
    s = blocks.sum(axis=0)
    t = {name: int(s[i]) for name, i in (
        ("orders", L.C_SENT), ("answered", L.C_ANSWERED), ("reports", L.C_REPORTS), ("acks", L.C_ACKS),
        ("fills", L.C_FILLS_TAKER), ("maker_fills", L.C_FILLS_MAKER), ("qty_taker", L.C_QTY_TAKER),
        ("qty_maker", L.C_QTY_MAKER), ("rejects", L.C_REJECTS), ("canceled", L.C_CANCELED),
        ("expired", L.C_EXPIRED))}
    sent = blocks[:, L.C_FIRST_SENT_NS]
    ans = blocks[:, L.C_LAST_ANSWER_NS]
    active = sent > 0
    t["seconds"] = float((ans[active].max() - sent[active].min()) / 1e9) if active.any() and ans[active].max() > 0 else 0.0
    return t


def _progress(sup, elapsed: float) -> None:
    ctl, cfg = sup.ctl, sup.cfg
    t = _totals(ctl, cfg)
    prev = getattr(sup, "_prev", None)
    hist = sup.hist.sum(axis=0)
    if prev is None:
        d_orders, d_hist, dt = t["orders"], hist, max(elapsed, 1e-9)
    else:
        d_orders, d_hist, dt = t["orders"] - prev[0], hist - prev[1], max(elapsed - prev[2], 1e-9)
    sup._prev = (t["orders"], hist.copy(), elapsed)
    p99 = percentile_of_counts(d_hist, 99.0)
    phase = {0: "starting", 1: "running", 2: "stopping", 3: "aborting"}.get(int(ctl[L.PHASE]), "?")
    print(f"[{elapsed:6.1f}s] {phase}: orders {t['orders']:,}  reports {t['reports']:,}  "
          f"{d_orders / dt / 1e3:,.0f}K orders/s  p99 {p99 / 1e3:,.1f} us  "
          f"seq {int(ctl[L.MATCHER_SEQ]):,} durable {int(ctl[L.DURABLE_SEQ]):,}",
          file=sys.stderr, flush=True)


def result_doc(cfg: dict, out) -> dict:
    from shmex.procs.matcher_proc import load_hash

    ctl = out.ctl
    t = _totals(ctl, cfg)
    h = to_hdr(out.hist)
    lat = summary(h)
    procs = []
    for ch in out.children:
        cpu = int(ctl[L.proc_cell(ch.slot, L.P_CPU_NS)])
        wall = int(ctl[L.proc_cell(ch.slot, L.P_WALL_NS)])
        rss = int(ctl[L.proc_cell(ch.slot, L.P_RSS)]) or ch.peak_rss
        rq = ch.runq_wait
        procs.append({"name": ch.name, "pid": ch.pid, "core": ch.core,
                      "runq_wait_ms": round(rq[0], 1) if rq else None,
                      "runq_wait_window_s": round(rq[1], 2) if rq else None,
                      "cpu_percent": round(100.0 * cpu / wall, 1) if wall else None,
                      "rss_bytes": rss, "rss_first_sample_bytes": ch.rss_first, "rss_last_sample_bytes": ch.rss,
                      "exit": ch.popen.returncode if ch.popen else None})
    load = _totals(ctl, cfg, only_load=True)
    checks = {
        "every_command_answered": load["answered"] == load["orders"],
        # a client may leave before reading its makers' fills: the balance is exact only
        # when every report was read (no client traffic, nothing dropped)
        "fills_balance": (t["qty_taker"] == t["qty_maker"] and t["fills"] == t["maker_fills"])
        if t["orders"] == load["orders"] and int(ctl[L.DROPPED]) == 0 else True,
        "durable_is_last_seq": int(ctl[L.DURABLE_SEQ]) == int(ctl[L.MATCHER_SEQ]),
        "wal_sealed": int(ctl[L.WAL_DONE]) == 1,
        "no_segment_left": not out.leaked,
    }
    seconds = t["seconds"]
    stages = {}
    if out.stages is not None:
        for name, counts in stage_counts(out.stages, cfg["producers"] + cfg["clients"]).items():
            sm = summary(to_hdr(counts))
            stages[name] = {"what": STAGE_TEXT[name], "samples": sm["count"],
                            **{k: sm[k] for k in ("p50", "p90", "p99", "p999", "p9999", "max")}}
    return {
        "status": out.status, "reason": out.reason, "exit_code": out.exit_code,
        "run_id": cfg["run_id"], "machine": describe(), "placement": out.placement,
        "producers": cfg["producers"], "symbols": cfg["symbols"], "rate": cfg["rate"],
        "durability": cfg["durability"], "publisher": "inline" if cfg["publisher_inline"] else "process",
        "orders": t["orders"], "reports": t["reports"], "fills": t["fills"], "rejects": t["rejects"],
        "answered": t["answered"], "acks": t["acks"], "canceled": t["canceled"], "expired": t["expired"],
        "fill_qty": t["qty_taker"], "seconds": seconds,
        "orders_per_s": t["orders"] / seconds if seconds > 0 else 0.0,
        "latency_ns": {k: lat[k] for k in ("p50", "p90", "p99", "p999", "p9999", "max")},
        "latency_samples": lat["count"],
        "stages": stages,
        "last_seq": int(ctl[L.MATCHER_SEQ]), "durable_seq": int(ctl[L.DURABLE_SEQ]),
        "state_hash": load_hash(ctl), "data_dir": cfg["data_dir"],
        "snapshots": int(ctl[L.SNAPSHOTS]), "snapshot_pause_max_ns": int(ctl[L.SNAP_PAUSE_MAX_NS]),
        "matcher_batches": int(ctl[L.BATCHES]), "wal_commits": int(ctl[L.COMMITS]),
        "routed": int(ctl[L.ROUTED]), "dropped": int(ctl[L.DROPPED]),
        "warmup_s": round(out.warmup_s, 2), "processes": procs, "checks": checks,
        "segments_left": out.leaked, "dead_runs_cleaned": out.cleaned,
        "dead_runs_cleaned_ids": out.cleaned_runs,
        "restarts": [{k: v for k, v in e.items() if k not in ("died_s", "ready_s")} for e in out.restarts],
        "standby": out.standby,
        "verify": f"shmex verify {cfg['data_dir']}", "replay": f"shmex replay {cfg['data_dir']}",
    }, h


def print_summary(doc: dict) -> None:
    us = {k: v / 1e3 for k, v in doc["latency_ns"].items()}
    p = print
    p(f"shmex launch {doc['run_id']}: {doc['status']}" + (f" ({doc['reason']})" if doc["reason"] else ""))
    p(f"  machine     {doc['machine']}")
    p(f"  placement   {doc['placement']}  (publisher {doc['publisher']})")
    p(f"  load        {doc['producers']} producers, {doc['symbols']} symbols, "
      f"{'rate ' + format(int(doc['rate']), ',') + ' orders/s' if doc['rate'] else 'full speed'}, "
      f"durability {doc['durability']}")
    p(f"  orders      {doc['orders']:,} in {doc['seconds']:.3f} s = {doc['orders_per_s']:,.0f} orders/s "
      f"(warm-up {doc['warmup_s']} s, not counted)")
    p(f"  reports     {doc['reports']:,}: acks {doc['acks']:,}, fills {doc['fills']:,} "
      f"(qty {doc['fill_qty']:,}), canceled {doc['canceled']:,}, rejects {doc['rejects']:,}, "
      f"expired {doc['expired']:,}")
    p(f"  tick-to-trade (intended send -> first report read), {doc['latency_samples']:,} samples:")
    p("    " + "  ".join(f"{k} {us[k]:,.1f} us" for k in ("p50", "p90", "p99", "p999", "p9999", "max")))
    if doc.get("stages"):
        p("  where the time goes (per stage, us; CLOCK_MONOTONIC in every process):")
        p(f"    {'stage':<11} {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'max':>9}  samples  from -> to")
        for name in STAGES:
            st = doc["stages"].get(name)
            if st:
                p(f"    {name:<11} " + " ".join(f"{st[k] / 1e3:>9,.1f}" for k in ("p50", "p90", "p99", "p999", "max"))
                  + f"  {st['samples']:>7,}  {st['what']}")
    p(f"  {'process':<12} {'pid':>8} {'core':>5} {'cpu%':>6} {'peak rss':>10} {'runq wait':>14}  exit")
    for pr in doc["processes"]:
        cpu = f"{pr['cpu_percent']:.0f}" if pr["cpu_percent"] is not None else "-"
        rq = (f"{pr['runq_wait_ms'] / pr['runq_wait_window_s']:.1f} ms/s" if pr.get("runq_wait_window_s")
              else "-")
        p(f"  {pr['name']:<12} {pr['pid']:>8} {pr['core']:>5} {cpu:>6} {pr['rss_bytes'] / 2**20:>8.1f}MB "
          f"{rq:>14}  {pr['exit']}")
    p("  (runq wait: time a process was runnable but its core ran something else, under load."
      " A process alone on its core: time taken by other work, each ms delaying every order"
      " that arrives meanwhile; processes that yield to each other on a shared core count each"
      " other's turns too)")
    p(f"  final seq   {doc['last_seq']:,} (durable {doc['durable_seq']:,}); state_hash {doc['state_hash']}")
    p(f"  snapshots   {doc['snapshots']} (longest matching pause {doc['snapshot_pause_max_ns'] / 1e6:.2f} ms); "
      f"WAL commits {doc['wal_commits']:,}")
    p(f"  data        {doc['data_dir']} (WAL + snapshots/)")
    p(f"  verify      {doc['verify']}    replay: {doc['replay']}")
    bad = [k for k, v in doc["checks"].items() if not v]
    p(f"  checks      " + ("all passed (" + ", ".join(doc["checks"]) + ")" if not bad else "FAILED: " + ", ".join(bad)))
    if doc["segments_left"]:
        p(f"  LEAKED      {doc['segments_left']}")


def main(args) -> int:
    try:
        cfg = build_config(args)
    except Exception as e:  # noqa: BLE001 - usage errors name the flag
        print(f"launch: {e}", file=sys.stderr)
        return 2
    from shmex.procs.supervisor import Supervisor

    if args.fresh:
        _fresh(cfg["data_dir"])
    try:
        os.makedirs(cfg["data_dir"], exist_ok=True)
    except OSError as e:
        print(f"launch: cannot create data directory {cfg['data_dir']}: {e.strerror}", file=sys.stderr)
        return 2
    print(f"launch: run {cfg['run_id']}, data {cfg['data_dir']}; warming up "
          f"(numba kernels load from the cache; the first run ever compiles them)...",
          file=sys.stderr, flush=True)
    sup = Supervisor(cfg, progress=None if args.quiet else _progress)
    out = sup.run()
    if out.ctl is None:
        print(f"launch: {out.reason or 'failed before start'}", file=sys.stderr)
        return out.exit_code or 1
    doc, h = result_doc(cfg, out)
    if out.status == "failed":
        print(f"launch: {out.reason}", file=sys.stderr)
    elif out.status == "ok" and not all(doc["checks"].values()):
        doc["exit_code"] = out.exit_code = 1
    elif out.status != "ok":
        # a signal: the checks that need a finished load do not apply, the clean stop does
        need = ("durable_is_last_seq", "wal_sealed", "no_segment_left")
        if not all(doc["checks"][k] for k in need):
            doc["exit_code"] = out.exit_code = 1
    print_summary(doc)
    if args.hgrm:
        write_hgrm(h, args.hgrm)
        print(f"  hgrm        {args.hgrm}")
    if args.plot:
        write_plot(h, args.plot, f"shmex launch: {doc['producers']} producers, "
                   f"{'rate ' + str(int(doc['rate'])) if doc['rate'] else 'full speed'}, "
                   f"durability {doc['durability']}, {doc['orders']:,} orders; {doc['machine']}")
        print(f"  plot        {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return out.exit_code

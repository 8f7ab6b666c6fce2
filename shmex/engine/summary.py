"""A run's summary: totals from the control cells, the live progress line, the result
document (`--json`) and its printed form."""

from __future__ import annotations

import os
import sys

import numpy as np

from shmex.engine import cells
from shmex.engine.ctl import load_hash
from shmex.engine.latency import STAGE_TEXT, STAGES, percentile_of_counts, stage_counts, summary, to_hdr
from shmex.engine.machine import describe
from shmex.wal import floor

GROUP_COMMIT = ("group", "replicated")     # the modes the disk floor is the bound of


def totals(ctl: np.ndarray, cfg, only_load: bool = False) -> dict:
    P = cfg.producer_slots
    ks = range(cfg.producers) if only_load else range(P)
    S = int(ctl[cells.CFG_PROC_SLOTS])
    blocks = np.array([ctl[cells.prod_base(S, k):cells.prod_base(S, k) + cells.PROD_CELLS] for k in ks]).reshape(-1, cells.PROD_CELLS)
    s = blocks.sum(axis=0)
    t = {name: int(s[i]) for name, i in (
        ("orders", cells.C_SENT), ("answered", cells.C_ANSWERED), ("reports", cells.C_REPORTS), ("acks", cells.C_ACKS),
        ("fills", cells.C_FILLS_TAKER), ("maker_fills", cells.C_FILLS_MAKER), ("qty_taker", cells.C_QTY_TAKER),
        ("qty_maker", cells.C_QTY_MAKER), ("rejects", cells.C_REJECTS), ("canceled", cells.C_CANCELED),
        ("expired", cells.C_EXPIRED))}
    sent = blocks[:, cells.C_FIRST_SENT_NS]
    ans = blocks[:, cells.C_LAST_ANSWER_NS]
    active = sent > 0
    t["seconds"] = float((ans[active].max() - sent[active].min()) / 1e9) if active.any() and ans[active].max() > 0 else 0.0
    return t


def progress(sup, elapsed: float) -> None:
    ctl, cfg = sup.ctl, sup.cfg
    t = totals(ctl, cfg)
    prev = getattr(sup, "_prev", None)
    hist = sup.hist.sum(axis=0)
    if prev is None:
        d_orders, d_hist, dt = t["orders"], hist, max(elapsed, 1e-9)
    else:
        d_orders, d_hist, dt = t["orders"] - prev[0], hist - prev[1], max(elapsed - prev[2], 1e-9)
    sup._prev = (t["orders"], hist.copy(), elapsed)
    p99 = percentile_of_counts(d_hist, 99.0)
    phase = {0: "starting", 1: "running", 2: "stopping", 3: "aborting"}.get(int(ctl[cells.PHASE]), "?")
    print(f"[{elapsed:6.1f}s] {phase}: orders {t['orders']:,}  reports {t['reports']:,}  "
          f"{d_orders / dt / 1e3:,.0f}K orders/s  p99 {p99 / 1e3:,.1f} us  "
          f"seq {int(ctl[cells.MATCHER_SEQ]):,} durable {int(ctl[cells.DURABLE_SEQ]):,}"
          + _replicated(ctl, cfg), file=sys.stderr, flush=True)


def _replicated(ctl: np.ndarray, cfg) -> str:
    """The progress line's replication part: the replicated seq, and a lost quorum."""
    if not cfg.replicated:
        return ""
    from shmex.engine import registry

    base = cells.proc_cell(registry.slot_of(cfg, "replicator"), cells.P_ROLE)
    quorum = "" if ctl[base + cells.R_QUORUM] else "  NO QUORUM: release stalled" if cfg.durability == "replicated" \
        else "  NO QUORUM"
    return f" replicated {int(ctl[base + cells.R_REPLICATED_SEQ]):,}{quorum}"


def result_doc(cfg, out) -> dict:
    ctl = out.ctl
    t = totals(ctl, cfg)
    h = to_hdr(out.hist)
    lat = summary(h)
    procs = []
    for ch in out.children:
        cpu = int(ctl[cells.proc_cell(ch.slot, cells.P_CPU_NS)])
        wall = int(ctl[cells.proc_cell(ch.slot, cells.P_WALL_NS)])
        rss = int(ctl[cells.proc_cell(ch.slot, cells.P_RSS)]) or ch.peak_rss
        rq = ch.runq_wait
        procs.append({"name": ch.name, "pid": ch.pid, "core": ch.core,
                      "runq_wait_ms": round(rq[0], 1) if rq else None,
                      "runq_wait_window_s": round(rq[1], 2) if rq else None,
                      "cpu_percent": round(100.0 * cpu / wall, 1) if wall else None,
                      "rss_bytes": rss, "rss_first_sample_bytes": ch.rss_first, "rss_last_sample_bytes": ch.rss,
                      "exit": ch.popen.returncode if ch.popen else None})
    load = totals(ctl, cfg, only_load=True)
    checks = {
        "every_command_answered": load["answered"] == load["orders"],
        # a client may leave before reading its makers' fills: the balance is exact only
        # when every report was read (no client traffic, nothing dropped)
        "fills_balance": (t["qty_taker"] == t["qty_maker"] and t["fills"] == t["maker_fills"])
        if t["orders"] == load["orders"] and int(ctl[cells.DROPPED]) == 0 else True,
        "durable_is_last_seq": int(ctl[cells.DURABLE_SEQ]) == int(ctl[cells.MATCHER_SEQ]),
        "wal_sealed": int(ctl[cells.WAL_DONE]) == 1,
        "no_segment_left": not out.leaked,
    }
    roles = role_reports(cfg, ctl)
    for doc in roles.values():             # a role's own checks (`RoleSpec.reports`)
        checks.update(doc.get("checks", {}))
    seconds = t["seconds"]
    stages = {}
    if out.stages is not None:
        for name, counts in stage_counts(out.stages, cfg.producer_slots).items():
            sm = summary(to_hdr(counts))
            stages[name] = {"what": STAGE_TEXT[name], "samples": sm["count"],
                            **{k: sm[k] for k in ("p50", "p90", "p99", "p999", "p9999", "max")}}
    return {
        "status": out.status, "reason": out.reason, "exit_code": out.exit_code,
        "run_id": cfg.run_id, "machine": describe(), "placement": out.placement,
        "producers": cfg.producers, "via": cfg.via, "tcp_sessions": cfg.tcp_sessions,
        "symbols": cfg.symbols, "rate": cfg.rate,
        "durability": cfg.durability, "publisher": "inline" if cfg.publisher_inline else "process",
        "orders": t["orders"], "reports": t["reports"], "fills": t["fills"], "rejects": t["rejects"],
        "answered": t["answered"], "acks": t["acks"], "canceled": t["canceled"], "expired": t["expired"],
        "fill_qty": t["qty_taker"], "seconds": seconds,
        "orders_per_s": t["orders"] / seconds if seconds > 0 else 0.0,
        "latency_ns": {k: lat[k] for k in ("p50", "p90", "p99", "p999", "p9999", "max")},
        "latency_samples": lat["count"],
        "stages": stages,
        "last_seq": int(ctl[cells.MATCHER_SEQ]), "durable_seq": int(ctl[cells.DURABLE_SEQ]),
        "state_hash": load_hash(ctl), "data_dir": cfg.data_dir,
        "snapshots": int(ctl[cells.SNAPSHOTS]), "snapshot_pause_max_ns": int(ctl[cells.SNAP_PAUSE_MAX_NS]),
        "matcher_batches": int(ctl[cells.BATCHES]), "wal_commits": int(ctl[cells.COMMITS]),
        "routed": int(ctl[cells.ROUTED]), "dropped": int(ctl[cells.DROPPED]),
        "sessions_closed": int(ctl[cells.SESSIONS_CLOSED]), "sessions_evicted": int(ctl[cells.EVICTED]),
        "warmup_s": round(out.warmup_s, 2), "processes": procs, "checks": checks,
        "segments_left": out.leaked, "dead_runs_cleaned": out.cleaned,
        "dead_runs_cleaned_ids": out.cleaned_runs,
        "restarts": [{k: v for k, v in e.items() if k not in ("died_s", "ready_s")} for e in out.restarts],
        "standby": out.standby, "wal": wal_kept(cfg, ctl), "roles": roles,
        "disk_floor": floor.recorded(cfg.data_dir) if cfg.durability in GROUP_COMMIT else None,
        "verify": f"shmex verify {cfg.data_dir}", "replay": f"shmex replay {cfg.data_dir}",
    }, h


def role_reports(cfg, ctl: np.ndarray) -> dict:
    """{role: (its result document, its summary line)} of the roles that report (`RoleSpec.reports`)."""
    from shmex.engine import registry

    out = {}
    for p in registry.launched(cfg):
        if p.spec.reports and p.index == 0:
            doc, line = registry.module(p.spec).report(cfg, ctl, cells.proc_cell(p.slot, cells.P_ROLE))
            out[p.spec.name] = {**doc, "line": line}
    return out


def wal_kept(cfg, ctl: np.ndarray) -> dict:
    """The log the data directory keeps after the run, and what retention removed in it."""
    from shmex.errors import CannotOpen, CorruptRecord
    from shmex.wal.segment import list_segments, read_header

    try:
        segs = list_segments(cfg.data_dir)
        first = int(read_header(segs[0][1])["first_seq"]) if segs else None
        kept = sum(os.path.getsize(p) for _, p in segs)
    except (CannotOpen, CorruptRecord, OSError):
        segs, first, kept = [], None, 0      # verify names what is wrong with the directory
    return {"keep_snapshots": cfg.keep_snapshots if not cfg.whole_log else 0, "removed_segments": int(ctl[cells.WAL_RETIRED_SEGMENTS]),
            "removed_bytes": int(ctl[cells.WAL_RETIRED_BYTES]), "kept_segments": len(segs), "kept_bytes": kept,
            "first_seq": first}


def print_summary(doc: dict) -> None:
    us = {k: v / 1e3 for k, v in doc["latency_ns"].items()}
    p = print
    p(f"shmex launch {doc['run_id']}: {doc['status']}" + (f" ({doc['reason']})" if doc["reason"] else ""))
    p(f"  machine     {doc['machine']}")
    p(f"  placement   {doc['placement']}  (publisher {doc['publisher']})")
    who = (f"{doc['tcp_sessions']} members over TCP" if doc.get("via") == "tcp"
           else f"{doc['producers']} producers")
    p(f"  load        {who}, {doc['symbols']} symbols, "
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
    if doc["durability"] in GROUP_COMMIT:
        print_floor(doc)
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
    w = doc["wal"]
    keep = f"keep {w['keep_snapshots']} snapshots" if w["keep_snapshots"] else "off: the whole log is kept"
    p(f"  wal         kept {w['kept_segments']} segment(s) ({w['kept_bytes'] / 2**20:,.1f} MiB)"
      + (f" from seq {w['first_seq']:,}" if w["first_seq"] is not None else "")
      + f"; retention ({keep}) removed {w['removed_segments']} segment(s) "
        f"({w['removed_bytes'] / 2**20:,.1f} MiB) in this run")
    for name, r in doc.get("roles", {}).items():
        p(f"  {name:<11} {r['line']}")
    p(f"  verify      {doc['verify']}    replay: {doc['replay']}")
    bad = [k for k, v in doc["checks"].items() if not v]
    p("  checks      " + ("all passed (" + ", ".join(doc["checks"]) + ")" if not bad else "FAILED: " + ", ".join(bad)))
    if doc["segments_left"]:
        p(f"  LEAKED      {doc['segments_left']}")


def print_floor(doc: dict) -> None:
    """The disk's floor for group commit beside to_durable: what is the disk, what the engine."""
    f, d = doc.get("disk_floor"), doc.get("stages", {}).get("to_durable")
    if f is None:
        print(f"  disk floor  not measured on this filesystem: `shmex bench wal --floor-only --dir "
              f"{doc['data_dir']}` (60 s) measures it, and later launches show it here")
        return
    print(f"  disk floor  {floor.describe(f)}")
    if d and doc["rate"]:
        fl = f["floor_ns"]
        print(f"    to_durable / floor: p50 {d['p50'] / fl['p50']:.2f}x, p99 {d['p99'] / fl['p99']:.2f}x "
              f"(this run {doc['rate']:,.0f}/s over {doc['seconds']:.0f} s; the floor {f['rate']:,.0f}/s "
              f"over {f['seconds']:.0f} s: runs shorter than a minute rarely see a stall)")

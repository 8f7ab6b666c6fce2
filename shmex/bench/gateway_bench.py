"""``shmex bench gateway``: the engine over TCP, as members see it.

1. Launches an engine whose only producer is the gateway (``--durability`` group by
   default) with bench users, and drives it with `roles.tcpload` sessions from this process:
   - throughput: ``--orders`` at full speed (each session keeps ``--window`` unanswered);
   - tick-to-trade: ``--rate`` orders/s offered, open loop, for ``--duration`` seconds;
     the engine's own per-stage figures (matcher, durable) come from its summary.
2. Runs the same full-speed load against SoupBinTCP servers written the way a Python
   user would (`soup_baselines`: a plain asyncio.Protocol and nasdaq-protocols'
   SoupServerSession, one message per callback, no book, no log) and prints the ratio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from shmex.engine.latency import summary, to_hdr
from shmex.engine.machine import describe, machine
from shmex.roles import tcpload

PRICE = 100 * 10_000          # $100.00 on SHMX (tick 0.01)
TARGET = [(tcpload.symbol_key("SHMX"), PRICE, 1)]


def _users_file(path: str, names: list[str]) -> None:
    from shmex.net.users import hash_password

    h = hash_password("bench", iterations=1000)
    with open(path, "w") as f:
        for i, n in enumerate(names):
            f.write(f"{n}, {1000 + i}, {h}\n")


def _lat(h) -> dict:
    s = summary(to_hdr(h))
    return {k: (v / 1000.0 if k != "count" else v) for k, v in s.items()}   # us


def _phase(addr, users, orders, rate, window) -> dict:
    per = max(1, orders // len(users))
    r = tcpload.run_sessions(addr, [(u, "bench") for u in users], per, rate=rate, window=window,
                             targets=TARGET)
    r["latency_us"] = _lat(r.pop("hist"))
    return r


def _baseline(kind: str, orders: int, sessions: int, window: int) -> dict:
    srv = subprocess.Popen([sys.executable, "-m", "shmex.bench.soup_baselines", kind],
                           stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline())
        users = [(f"b{i}", "x") for i in range(sessions)]
        r = tcpload.run_sessions(("127.0.0.1", port), users, max(1, orders // sessions), window=window,
                                 targets=TARGET)
        r["latency_us"] = _lat(r.pop("hist"))
        return r
    finally:
        srv.kill()
        srv.wait()


def _launch(tmp: str, users_file: str, durability: str):
    from shmex.shm.names import new_run_id

    run_id = new_run_id()
    data = os.path.join(tmp, "data")
    err = open(os.path.join(tmp, "launch.err"), "w")
    p = subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", run_id, "--producers", "0",
                          "--clients", "0", "--gateway", "127.0.0.1:0", "--users-file", users_file,
                          "--durability", durability, "--quiet", "--data-dir", data,
                          "--json", os.path.join(tmp, "run.json"), "--gateway-max-open", "1000000",
                          "--gateway-orders", str(1 << 18)],
                         stdout=subprocess.DEVNULL, stderr=err)
    from shmex.roles.gateway import wait_address

    try:
        return p, wait_address(data, run_id, p, timeout_s=900)
    except (RuntimeError, TimeoutError) as e:
        raise RuntimeError(f"{e}: {open(err.name).read()[-2000:]}") from None


def _print_phase(name: str, r: dict) -> None:
    lat = r["latency_us"]
    print(f"  {name:<22} {r['orders']:>10,} orders  {r['orders_per_s']:>12,.0f} orders/s  "
          f"p50 {lat['p50']:>9,.1f} us  p99 {lat['p99']:>10,.1f} us  p99.9 {lat['p999']:>10,.1f} us  "
          f"max {lat['max']:>10,.1f} us")


def main(args) -> int:
    res: dict = {"machine": machine(), "command": " ".join(["shmex"] + sys.argv[1:]),
                 "durability": args.durability, "sessions": args.sessions}
    print(f"shmex bench gateway: OUCH 5.0 over SoupBinTCP on loopback, {args.sessions} sessions, "
          f"durability {args.durability}")
    print(f"  {describe(res['machine'])}")
    print(f"  command: {res['command']}")
    tcpload.warm()
    with tempfile.TemporaryDirectory(prefix="shmex-bench-gw-") as tmp:
        names = [f"t{i}" for i in range(args.sessions)] + [f"l{i}" for i in range(args.sessions)]
        users_file = os.path.join(tmp, "users.csv")
        _users_file(users_file, names)
        proc, addr = _launch(tmp, users_file, args.durability)
        try:
            tp = _phase(addr, names[:args.sessions], args.orders, None, args.window)
            res["throughput"] = tp
            _print_phase("full speed", tp)
            if args.duration > 0:
                lat = _phase(addr, names[args.sessions:], int(args.rate * args.duration), args.rate, args.window)
                res["tick_to_trade"] = lat
                res["tick_to_trade"]["offered_per_s"] = args.rate
                _print_phase(f"open loop {args.rate:,.0f}/s", lat)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            with open(os.path.join(tmp, "run.json")) as f:
                run = json.load(f)
            res["engine_stages_us"] = run.get("stages")
            res["engine_checks"] = run.get("checks")
            res["engine_ok"] = bool(run.get("checks")) and all(run["checks"].values())
        except (OSError, ValueError):
            res["engine_ok"] = False
    if res.get("engine_stages_us"):
        print("  engine stages over both phases (us; to_durable: matcher stamp -> durable seq stored):")
        for name, st in res["engine_stages_us"].items():   # ns in the run's JSON
            if isinstance(st, dict) and st.get("samples"):
                print(f"    {name:<12} p50 {st['p50'] / 1e3:>9,.1f}  p99 {st['p99'] / 1e3:>10,.1f}  "
                      f"max {st['max'] / 1e3:>10,.1f}  ({st['samples']:,} samples)")
    if not args.no_baselines:
        res["baselines"] = {}
        for kind, label in (("plain", "asyncio.Protocol"), ("nasdaq", "nasdaq-protocols SoupServerSession")):
            b = _baseline(kind, args.baseline_orders, args.sessions, args.window)
            b["ratio"] = tp["orders_per_s"] / b["orders_per_s"]
            res["baselines"][kind] = b
            _print_phase(label, b)
            print(f"  {'':<22} the gateway's whole path is {b['ratio']:.1f}x its orders/s "
                  f"(it answers from the protocol alone: no book, no log)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
    return 0 if res.get("engine_ok") else 1

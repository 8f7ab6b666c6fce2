"""``shmex bench feed``: the ITCH 5.0 / MoldUDP64 feed, as its subscribers and the engine see it.

1. Matching with the feed on and off: ``--orders`` at full speed, ``--repeats`` runs of
   each, interleaved ABBA (off, on, on, off, ...), medians and their ratio.
2. Encoding: the commands and reports of the last feed-on run, encoded again in this
   process (`net.itch.encode`), alone, then with the feed file written, then with
   MoldUDP64 packets sent to loopback multicast (a subscriber process counts what it
   got); and the whole generator (WAL read + matcher replay + encoding), what a
   restarted feed and ``shmex feed`` run.
3. Engine to subscriber latency: an engine at ``--rate`` orders/s for ``--duration`` s
   with the feed on, in the default durability mode (group) and the fast one (none); a
   subscriber in this process takes each message's ITCH timestamp (the matcher's stamp
   of its command as a time of day) against its own clock when the packet was decoded.
4. Gap recovery: the feed leaves out every ``--drop-every``-th packet; the subscriber's
   time from detecting each gap to having it filled by re-requests.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from shmex.engine.machine import describe, machine

BENCH_GROUP = "239.192.77.9"


def _port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _launch(data: str, *extra) -> subprocess.Popen:
    from shmex.shm.names import new_run_id

    err = open(os.path.join(os.path.dirname(data), "launch.err"), "a")
    return subprocess.Popen([sys.executable, "-m", "shmex.cli", "launch", "--name", new_run_id(), "--quiet",
                             "--fresh", "--data-dir", data, "--json", data + ".json", *extra],
                            stdout=subprocess.DEVNULL, stderr=err)


def _run(data: str, *extra) -> dict:
    p = _launch(data, *extra)
    if p.wait() != 0:
        raise RuntimeError(f"shmex launch {' '.join(extra)} exited {p.returncode}: "
                           f"{open(os.path.join(os.path.dirname(data), 'launch.err')).read()[-2000:]}")
    with open(data + ".json") as f:
        return json.load(f)


def on_off(tmp: str, orders: int, repeats: int) -> dict:
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(repeats):
        # ABBA: on this kind of machine a run right after another can be slower, whatever
        # its mode, so neither mode always goes second
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            extra = ["--orders", str(orders)]
            if mode == "on":
                extra += ["--feed", f"{BENCH_GROUP}:{_port()}", "--feed-linger", "0"]
            doc = _run(os.path.join(tmp, f"onoff-{mode}"), *extra)
            rates[mode].append(doc["orders_per_s"])
            feed = doc.get("roles", {}).get("feed")
            print(f"  run {r + 1} feed {mode:<3}: {doc['orders_per_s']:>12,.0f} orders/s"
                  + (f"  ({feed['messages']:,} ITCH messages)" if feed else ""), flush=True)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {"orders": orders, "repeats": repeats, "off_orders_per_s": rates["off"], "on_orders_per_s": rates["on"],
            "median_off": off, "median_on": on, "ratio_on_off": on / off if off else None}


def _batches(data: str):
    """The log's commands in batches, and the reports the matcher gives for each."""
    from shmex.matcher.matcher import Matcher
    from shmex.recovery.recover import matcher_config
    from shmex.wal.reader import WalReader

    m = Matcher(**matcher_config(data))
    out = []
    for b in WalReader(data).commands(1):
        c = b.copy()
        out.append((c, m.apply(c)))
    return out


def _encode_pass(batches, symbols, sink=None) -> tuple[int, float]:
    from shmex.net import itch
    from shmex.recovery.feed import new_encoder

    e = new_encoder(symbols, 1 << 20)
    most = max(len(r) for _, r in batches)
    out = np.zeros((itch.MAX_MESSAGE + 2) * most, np.uint8)
    offs = np.zeros(most, np.int64)
    n = 0
    t = time.perf_counter()
    for cmds, reps in batches:
        e.g[itch.G_POS] = 0
        e.g[itch.G_MSGS] = 0
        itch.encode(e, cmds, len(cmds), reps, len(reps), out, offs)
        k = int(e.g[itch.G_MSGS])
        n += k
        if sink is not None:
            sink(out[:int(e.g[itch.G_POS])], offs[:k])
    return n, time.perf_counter() - t


def encoding(tmp: str, data: str, repeats: int) -> dict:
    from shmex.net import mold
    from shmex.net.feedfile import info_symbols, read_info
    from shmex.recovery import feed

    symbols = info_symbols(read_info(data))
    batches = _batches(data)
    res: dict = {"commands": int(sum(len(c) for c, _ in batches))}

    def best(label, sink_factory):
        rates = []
        for _ in range(repeats):
            sink, done = sink_factory()
            n, s = _encode_pass(batches, symbols, sink)
            done()
            rates.append(n / s)
        res[label] = {"messages": n, "messages_per_s": statistics.median(rates), "runs": rates}
        print(f"  {label:<28} {n:>10,} messages  {statistics.median(rates) / 1e6:>6.2f}M messages/s "
              f"(median of {repeats})", flush=True)

    best("encode", lambda: (None, lambda: None))

    def file_sink():
        fd = os.open(os.path.join(tmp, "encode.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

        def sink(block, offs):
            os.write(fd, block)
        return sink, lambda: os.close(fd)

    best("encode + file", file_sink)

    port = _port()
    group = (BENCH_GROUP, port)
    session = mold.session_name("BENCH")
    counts = []

    def mc_sink():
        rx = subprocess.Popen([sys.executable, "-m", "shmex.bench.feed_bench", "receive", BENCH_GROUP, str(port)],
                              stdout=subprocess.PIPE, text=True)
        rx.stdout.readline()                      # joined
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        seq = [1]

        def sink(block, offs):
            cuts = mold.cuts(offs, 0, len(offs), len(block))
            mv = memoryview(block)
            for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                end = int(offs[b]) if b < len(offs) else len(block)
                tx.sendmsg([mold.header(session, seq[0] + a, b - a), mv[int(offs[a]):end]], [], 0, group)
            seq[0] += len(offs)

        def done():
            for _ in range(5):
                tx.sendto(mold.header(session, seq[0], mold.END_OF_SESSION), group)
                time.sleep(0.05)
            tx.close()
            out, _ = rx.communicate(timeout=60)
            counts.append((int(out.split()[0]), seq[0] - 1))
        return sink, done

    best("encode + MoldUDP64 multicast", mc_sink)
    got = [g / s for g, s in counts]
    res["multicast_received_fraction"] = got
    print(f"  (the subscriber process received {min(got):.1%}..{max(got):.1%} of the messages sent)")

    rates = []
    for _ in range(repeats):
        with open(os.devnull, "wb") as f:
            t = time.perf_counter()
            n, _, _ = feed.regenerate(data, symbols, f)
            rates.append(n / (time.perf_counter() - t))
    res["generator"] = {"messages": n, "messages_per_s": statistics.median(rates), "runs": rates}
    print(f"  {'WAL + replay + encode':<28} {n:>10,} messages  {statistics.median(rates) / 1e6:>6.2f}M messages/s "
          f"(shmex feed DIR; median of {repeats})", flush=True)
    return res


def _offset(data: str) -> int:
    from shmex.wal import manifest

    r = manifest.read(data)["runs"][-1]
    return int(r["started_ns"]) - int(r["mono_ns"])


def subscribe(tmp: str, durability: str, rate: float, duration: float, drop_every: int = 0) -> dict:
    """An engine with the feed at `rate` for `duration` s; a subscriber here: latency of
    every message (ns) and the gaps' fill times."""
    from shmex.net import itch
    from shmex.net.subscriber import Subscriber

    data = os.path.join(tmp, f"sub-{durability}-{drop_every}")
    extra = ["--rate", str(rate), "--duration", str(duration), "--durability", durability,
             "--feed", f"{BENCH_GROUP}:{_port()}", "--feed-linger", "5"]
    if drop_every:
        extra += ["--feed-drop-every", str(drop_every)]
    p = _launch(data, *extra)
    info = os.path.join(data, "feed", "feed.json")
    while not os.path.exists(info):
        if p.poll() is not None:
            raise RuntimeError(f"shmex launch exited {p.returncode} before its feed started")
        time.sleep(0.05)
    time.sleep(0.2)
    from shmex.net.feedfile import read_info

    off = _offset(data)
    day = itch.DAY_NS
    opening = 3 + len(read_info(data)["symbols"])    # stamped with the run's start, not a command's
    lats = []
    worst: dict[int, int] = {}       # second of the run -> the worst latency in it (ns)
    t0 = time.monotonic_ns()
    with Subscriber.of_run(data, idle_timeout=120) as sub:
        for first, block, _ in sub.blocks():
            mono = time.monotonic_ns()
            now = (mono + off) % day
            ts = itch.timestamps(np.frombuffer(block, np.uint8))
            if first <= opening:
                ts = ts[opening - first + 1:]
            lat = (now - ts) % day
            lats.append(lat)
            if len(lat):
                s = (mono - t0) // 1_000_000_000
                worst[s] = max(worst.get(s, 0), int(lat.max()))
    p.wait()
    with open(data + ".json") as f:
        run = json.load(f)
    lat = np.concatenate(lats) if lats else np.zeros(0, np.int64)
    pct = {q: float(np.percentile(lat, q)) / 1e3 for q in (50, 90, 99, 99.9)} if len(lat) else {}
    fills = np.array(sub.stats.gap_fill_ns, np.int64)
    return {"durability": durability, "rate": rate, "duration_s": duration, "drop_every": drop_every,
            "messages": int(sub.stats.messages), "orders": run["orders"], "orders_per_s": run["orders_per_s"],
            "latency_us": {"p50": pct.get(50), "p90": pct.get(90), "p99": pct.get(99), "p999": pct.get(99.9),
                           "max": float(lat.max()) / 1e3 if len(lat) else None},
            "gaps": int(sub.stats.gaps), "rerequests": int(sub.stats.rerequests),
            "duplicates": int(sub.stats.duplicates),
            "gap_fill_ms": {"p50": float(np.percentile(fills, 50)) / 1e6, "p99": float(np.percentile(fills, 99)) / 1e6,
                            "max": float(fills.max()) / 1e6} if len(fills) else None,
            "worst_per_second_us": [worst.get(s, 0) / 1e3 for s in range(max(worst) + 1)] if worst else [],
            "engine_stages": run.get("stages"), "feed": run.get("roles", {}).get("feed")}


def _print_sub(name: str, r: dict) -> None:
    lat = r["latency_us"]
    line = (f"  {name:<26} {r['messages']:>10,} messages ({r['orders_per_s']:,.0f} orders/s): engine -> subscriber "
            f"p50 {lat['p50']:,.0f} us  p90 {lat['p90']:,.0f} us  p99 {lat['p99']:,.0f} us  "
            f"p99.9 {lat['p999']:,.0f} us  max {lat['max']:,.0f} us; {r['gaps']} gaps")
    if r["gap_fill_ms"]:
        g = r["gap_fill_ms"]
        line += f", filled in p50 {g['p50']:.2f} ms  p99 {g['p99']:.2f} ms  max {g['max']:.2f} ms"
    print(line, flush=True)


def add_arguments(b) -> None:
    b.add_argument("--orders", type=int, default=1_000_000, help="orders per full-speed run (feed on/off)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--rate", type=float, default=100_000.0, help="orders/s of the latency runs")
    b.add_argument("--duration", type=float, default=60.0, help="seconds of each latency run (0: skip)")
    b.add_argument("--drop-every", type=int, default=100, help="the gap run leaves out every K-th packet")
    b.add_argument("--gap-duration", type=float, default=20.0, help="seconds of the gap run (0: skip)")
    b.add_argument("--parts", default="onoff,encoding,latency,gaps",
                   help="which parts to run (default all: onoff,encoding,latency,gaps; encoding needs onoff)")
    b.add_argument("--json", metavar="PATH")


def main(args) -> int:
    res: dict = {"machine": machine(), "command": " ".join(["shmex"] + sys.argv[1:])}
    print("shmex bench feed: ITCH 5.0 over MoldUDP64 on loopback multicast")
    print(f"  {describe(res['machine'])}")
    print(f"  command: {res['command']}")
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="shmex-bench-feed-") as tmp:
        if parts & {"onoff", "encoding"}:
            print(f"matching with the feed off and on ({args.orders:,} orders at full speed, durability group, "
                  f"interleaved):")
            res["on_off"] = oo = on_off(tmp, args.orders, args.repeats)
            print(f"  median off {oo['median_off']:,.0f}  on {oo['median_on']:,.0f} orders/s: "
                  f"on/off {oo['ratio_on_off']:.3f}")
        if "encoding" in parts:
            print("encoding (the last feed-on run's journal, in this process):")
            res["encoding"] = encoding(tmp, os.path.join(tmp, "onoff-on"), args.repeats)
        if args.duration > 0 and "latency" in parts:
            print(f"engine -> subscriber ({args.rate:,.0f} orders/s for {args.duration:.0f} s):")
            res["latency"] = {}
            for d in ("group", "none"):
                r = res["latency"][d] = subscribe(tmp, d, args.rate, args.duration)
                _print_sub(f"durability {d}", r)
        if args.gap_duration > 0 and "gaps" in parts:
            print(f"gap recovery (every {args.drop_every}th packet left out, {args.rate / 2:,.0f} orders/s for "
                  f"{args.gap_duration:.0f} s):")
            r = res["gaps"] = subscribe(tmp, "none", args.rate / 2, args.gap_duration, args.drop_every)
            _print_sub(f"1/{args.drop_every} packets lost", r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def _receive(group: str, port: int) -> None:
    """The encoding bench's subscriber process: count messages until the end of session."""
    from shmex.net import mold

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((group, port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton("127.0.0.1"))
    print("joined", flush=True)
    buf = bytearray(65536)
    n = 0
    while True:
        k = s.recv_into(buf)
        _, _, count = mold.parse_header(buf[:k])
        if count == mold.END_OF_SESSION:
            break
        n += count
    print(n, flush=True)


if __name__ == "__main__":
    _receive(sys.argv[2], int(sys.argv[3]))

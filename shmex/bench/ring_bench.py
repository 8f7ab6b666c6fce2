"""`shmex bench ring`: the shm ring against the IPC a Python user would otherwise pick.

Topologies (each process pinned with psutil; records are 64 bytes)::

    one_to_one_throughput      producer[c0] ──ring──▶ consumer[c1]      unbatched: 1 record per
                                                                         cursor store; batched: 64
    pingpong_latency           pinger[c0] ──ring A──▶ ponger[c1]         one-way = RTT/2, and
                               pinger[c0] ◀──ring B── ponger[c1]         stamped (recv - sent)
    one_core                   the two above with both processes on c0 (spin-then-yield; and the
                               Python API with the default `block` wait)
    chain3_throughput          producer[c0] ─▶ relay[c1] ─▶ consumer[c0] (3 processes, 2 cores)
    baselines                  multiprocessing.Queue, multiprocessing.Pipe, faster-fifo, pyzmq
                               ipc:// PUSH/PULL: same placement, same 64-byte payloads

Every shmex run is verified (each record carries its sequence number and a check word);
a fast wrong run fails the benchmark (exit 1). JIT compilation happens in the parent
before the processes fork and is reported. Timings use CLOCK_MONOTONIC (system-wide).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np
import psutil
from numba import njit

from shmex.engine.machine import machine
from shmex.ring import Ring
from shmex.ring._kernels import _consume_batch, _publish_batch, _publish_range, _release_upto
from shmex.ring.atomics import cpu_relax
from shmex.ring.layout import L_POS
from shmex.schema import COMMAND
from shmex.shm.names import new_run_id

FORK = mp.get_context("fork")
CAPACITY = 4096
BATCH = 64
SPIN = -1             # yield_after: never yield
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_sched_yield = _libc.sched_yield
_sched_yield.argtypes, _sched_yield.restype = [], ctypes.c_int
_clock_gettime = _libc.clock_gettime
_clock_gettime.argtypes, _clock_gettime.restype = [ctypes.c_int, ctypes.c_void_p], ctypes.c_int


# --- kernels (not cached: they call libc through ctypes; compiled before fork) ------------

@njit(nogil=True)
def _now_ns(ts):
    _clock_gettime(1, ts.ctypes.data)  # CLOCK_MONOTONIC
    return ts[0] * 1_000_000_000 + ts[1]


@njit(nogil=True)
def _clock_cost(n):
    """ns per clock read, measured inside compiled code (part of every latency sample)."""
    ts = np.zeros(2, np.int64)
    t0 = _now_ns(ts)
    for _ in range(n):
        _now_ns(ts)
    return (_now_ns(ts) - t0) // (n + 1)


@njit(nogil=True)
def _idle(spins, yield_after):
    """No progress: pause; after `yield_after` pauses (SPIN: never) sched_yield."""
    if yield_after >= 0 and spins >= yield_after:
        _sched_yield()
        return 0
    cpu_relax()
    return spins + 1


@njit(nogil=True)
def _produce(slots, ctl, local, n, batch, yield_after):
    words = slots.shape[1]
    src = np.zeros((batch, words), np.uint64)
    seq, spins = 0, 0
    while seq < n:
        k = min(batch, n - seq)
        for i in range(k):
            src[i, 0] = seq + i
            src[i, words - 1] = ~np.uint64(seq + i)
        done = 0
        while done < k:
            d = _publish_range(slots, ctl, local, src, done, k, False)
            if d == 0:
                spins = _idle(spins, yield_after)
            else:
                spins, done = 0, done + d
        seq += k
    return seq


@njit(nogil=True)
def _consume(slots, ctl, local, n, batch, yield_after):
    words = slots.shape[1]
    dst = np.zeros((batch, words), np.uint64)
    seq, spins, bad = 0, 0, 0
    while seq < n:
        k = _consume_batch(slots, ctl, local, dst, True, False)
        if k == 0:
            spins = _idle(spins, yield_after)
            continue
        spins = 0
        for i in range(k):
            if dst[i, 0] != seq + i or dst[i, words - 1] != ~np.uint64(seq + i):
                bad += 1
        seq += k
    return bad


@njit(nogil=True)
def _relay(islots, ictl, ilocal, oslots, octl, olocal, n, batch, yield_after):
    buf = np.zeros((batch, islots.shape[1]), np.uint64)
    moved, spins = 0, 0
    while moved < n:
        k = _consume_batch(islots, ictl, ilocal, buf, False, False)  # read; release after forwarding
        if k == 0:
            spins = _idle(spins, yield_after)
            continue
        done = 0
        while done < k:
            d = _publish_range(oslots, octl, olocal, buf, done, k, False)
            if d == 0:
                spins = _idle(spins, yield_after)
            else:
                spins, done = 0, done + d
        _release_upto(ictl, ilocal, ilocal[L_POS], False)
        moved += k
    return moved


@njit(nogil=True)
def _ping(a, b, n, rtt, yield_after):
    (aslots, actl, aloc), (bslots, bctl, bloc) = a, b
    ts = np.zeros(2, np.int64)
    rec = np.zeros((1, aslots.shape[1]), np.uint64)
    back = np.zeros((1, aslots.shape[1]), np.uint64)
    bad, spins = 0, 0
    for i in range(n):
        t0 = _now_ns(ts)
        rec[0, 0] = i
        rec[0, 1] = t0
        while _publish_batch(aslots, actl, aloc, rec, False) == 0:
            spins = _idle(spins, yield_after)
        while _consume_batch(bslots, bctl, bloc, back, True, False) == 0:
            spins = _idle(spins, yield_after)
        rtt[i] = _now_ns(ts) - t0
        if back[0, 0] != i:
            bad += 1
    return bad


@njit(nogil=True)
def _pong(a, b, n, oneway, yield_after):
    (aslots, actl, aloc), (bslots, bctl, bloc) = a, b
    ts = np.zeros(2, np.int64)
    rec = np.zeros((1, aslots.shape[1]), np.uint64)
    spins = 0
    for i in range(n):
        while _consume_batch(aslots, actl, aloc, rec, True, False) == 0:
            spins = _idle(spins, yield_after)
        oneway[i] = _now_ns(ts) - np.int64(rec[0, 1])
        while _publish_batch(bslots, bctl, bloc, rec, False) == 0:
            spins = _idle(spins, yield_after)
    return 0


def _compile() -> float:
    """Compile every kernel on a private ring; -> seconds spent."""
    t0 = time.perf_counter()
    run = new_run_id()
    owner = Ring.create(run, "warm", 64, COMMAND)
    p = Ring.attach(owner.name, COMMAND, side="producer")
    c = Ring.attach(owner.name, COMMAND, side="consumer")
    pa, ca = p.arrays(), c.arrays()
    _produce(*pa, 10, 4, SPIN)
    _consume(*ca, 10, 4, SPIN)
    _relay(*ca, *pa, 0, 4, 0)
    _ping(pa, ca, 0, np.zeros(1, np.int64), 0)   # n=0: compile only
    _pong(ca, pa, 0, np.zeros(1, np.int64), 0)
    del pa, ca
    for h in (p, c, owner):
        h.close()
    owner.unlink()
    return time.perf_counter() - t0


# --- processes --------------------------------------------------------------------------

def _spawn(fn, core, *args):
    """Fork a child pinned to `core` that runs fn(*args) after the start barrier."""
    recv, send = FORK.Pipe(duplex=False)

    def body():
        code = 0
        try:
            psutil.Process().cpu_affinity([core])
            send.send(fn(*args))
        except BaseException as e:  # report any failure to the parent
            send.send({"error": f"{type(e).__name__}: {e}"})
            code = 1
        finally:
            send.close()
            os._exit(code)

    proc = FORK.Process(target=body, daemon=True)
    proc.start()
    send.close()
    return proc, recv


def _collect(children, timeout_s=300.0):
    out = []
    for proc, conn in children:
        if not conn.poll(timeout_s):
            proc.kill()
            raise RuntimeError(f"benchmark child {proc.pid} gave no result in {timeout_s} s")
        r = conn.recv()
        proc.join(30)
        if isinstance(r, dict) and "error" in r:
            raise RuntimeError(f"benchmark child failed: {r['error']}")
        out.append(r)
    return out


def _side(name, side, barrier, fn, *args):
    """Attach, meet at the barrier, run the kernel; -> (start_ns, end_ns, result)."""
    ring = Ring.attach(name, COMMAND, side=side, wait="spin")
    arrays = ring.arrays()
    barrier.wait()
    t0 = time.monotonic_ns()
    r = fn(*arrays, *args)
    t1 = time.monotonic_ns()
    del arrays
    ring.close()
    return t0, t1, r


def run_throughput(n, batch, cores, yield_after, capacity=CAPACITY, consumer_batch=None) -> dict:
    """producer publishes `batch` records per cursor store; the consumer takes up to
    `consumer_batch` (default: the same) of what is there per call."""
    run = new_run_id()
    owner = Ring.create(run, "tp", capacity, COMMAND)
    try:
        barrier = FORK.Barrier(2)
        cons = _spawn(_side, cores[1], owner.name, "consumer", barrier, _consume, n,
                      consumer_batch or batch, yield_after)
        prod = _spawn(_side, cores[0], owner.name, "producer", barrier, _produce, n, batch, yield_after)
        (c0, c1, bad), (p0, p1, sent) = _collect([cons, prod])
    finally:
        owner.close()
        owner.unlink()
    if bad or sent != n:
        raise RuntimeError(f"verification failed: {bad} bad records, {sent} of {n} sent")
    elapsed = max(c1, p1) - min(c0, p0)
    return {"msgs_per_s": int(n * 1_000_000_000 // elapsed), "elapsed_ns": elapsed}


def _chain_side(names, sides, barrier, fn, *args):
    rings = [Ring.attach(nm, COMMAND, side=sd, wait="spin") for nm, sd in zip(names, sides)]
    arrays = [a for r in rings for a in r.arrays()]
    barrier.wait()
    t0 = time.monotonic_ns()
    r = fn(*arrays, *args)
    t1 = time.monotonic_ns()
    del arrays
    for ring in rings:
        ring.close()
    return t0, t1, r


def run_chain(n, batch, cores, yield_after) -> dict:
    run = new_run_id()
    a = Ring.create(run, "a", CAPACITY, COMMAND)
    b = Ring.create(run, "b", CAPACITY, COMMAND)
    try:
        barrier = FORK.Barrier(3)
        kids = [
            _spawn(_chain_side, cores[2], [b.name], ["consumer"], barrier, _consume, n, batch, yield_after),
            _spawn(_chain_side, cores[1], [a.name, b.name], ["consumer", "producer"], barrier, _relay,
                   n, batch, yield_after),
            _spawn(_chain_side, cores[0], [a.name], ["producer"], barrier, _produce, n, batch, yield_after),
        ]
        (c0, c1, bad), (r0, r1, moved), (p0, p1, sent) = _collect(kids)
    finally:
        for r in (a, b):
            r.close()
            r.unlink()
    if bad or moved != n or sent != n:
        raise RuntimeError(f"chain verification failed: {bad} bad, moved {moved}, sent {sent} of {n}")
    elapsed = max(c1, r1, p1) - min(c0, r0, p0)
    return {"msgs_per_s": int(n * 1_000_000_000 // elapsed), "elapsed_ns": elapsed}


def _pp_side(names, sides, barrier, fn, n, yield_after):
    rings = [Ring.attach(nm, COMMAND, side=sd, wait="spin") for nm, sd in zip(names, sides)]
    arrays = [r.arrays() for r in rings]
    samples = np.zeros(n, np.int64)
    barrier.wait()
    bad = fn(arrays[0], arrays[1], n, samples, yield_after)
    del arrays
    for ring in rings:
        ring.close()
    return bad, samples


def run_pingpong(n, cores, yield_after, warmup) -> dict:
    run = new_run_id()
    a = Ring.create(run, "ping", 64, COMMAND)
    b = Ring.create(run, "pong", 64, COMMAND)
    try:
        barrier = FORK.Barrier(2)
        kids = [_spawn(_pp_side, cores[1], [a.name, b.name], ["consumer", "producer"], barrier, _pong, n, yield_after),
                _spawn(_pp_side, cores[0], [a.name, b.name], ["producer", "consumer"], barrier, _ping, n, yield_after)]
        (_, oneway), (bad, rtt) = _collect(kids)
    finally:
        for r in (a, b):
            r.close()
            r.unlink()
    if bad:
        raise RuntimeError(f"ping-pong verification failed: {bad} mismatched replies")
    return {"latency_ns": _pcts(rtt[warmup:] // 2), "stamped_ns": _pcts(oneway[warmup:])}


def _api_pingpong(name_a, name_b, sides, barrier, n, is_pinger):
    """Ping-pong through the public Python API with the default wait strategy (block)."""
    a = Ring.attach(name_a, COMMAND, side=sides[0])
    b = Ring.attach(name_b, COMMAND, side=sides[1])
    rec = np.zeros(1, COMMAND)
    rtt = np.zeros(n, np.int64)
    barrier.wait()
    for i in range(n):
        if is_pinger:
            t0 = time.monotonic_ns()
            rec["seq"] = i
            a.publish(rec)
            b.consume(rec, wait=True)
            rtt[i] = time.monotonic_ns() - t0
        else:
            a.consume(rec, wait=True)
            b.publish(rec)
    a.close()
    b.close()
    return rtt


def run_api_pingpong(n, cores, warmup) -> dict:
    run = new_run_id()
    a = Ring.create(run, "ping", 64, COMMAND)
    b = Ring.create(run, "pong", 64, COMMAND)
    try:
        barrier = FORK.Barrier(2)
        kids = [_spawn(_api_pingpong, cores[1], a.name, b.name, ["consumer", "producer"], barrier, n, False),
                _spawn(_api_pingpong, cores[0], a.name, b.name, ["producer", "consumer"], barrier, n, True)]
        _, rtt = _collect(kids)
    finally:
        for r in (a, b):
            r.close()
            r.unlink()
    return {"latency_ns": _pcts(rtt[warmup:] // 2)}


def _pcts(a: np.ndarray) -> dict:
    q = np.percentile(a, [50, 99, 99.9], method="inverted_cdf")
    return {"p50": int(q[0]), "p99": int(q[1]), "p999": int(q[2]), "max": int(a.max()), "samples": int(len(a))}


# --- baselines ----------------------------------------------------------------------------

def _bl_send(kind, chan, n, barrier):
    payload = bytes(64)
    barrier.wait()
    t0 = time.monotonic_ns()
    if kind == "pipe":
        for _ in range(n):
            chan.send_bytes(payload)
    elif kind == "zmq":
        import zmq
        sock = zmq.Context().socket(zmq.PUSH)
        sock.connect(chan)
        for _ in range(n):
            sock.send(payload)
        sock.close(linger=-1)
    else:
        for _ in range(n):
            chan.put(payload)
        if hasattr(chan, "join_thread"):  # multiprocessing.Queue: flush its feeder thread
            chan.close()
            chan.join_thread()
    return t0


def _bl_recv(kind, chan, n, barrier):
    got = 0
    if kind == "zmq":
        import zmq
        sock = zmq.Context().socket(zmq.PULL)
        sock.bind(chan)
    barrier.wait()
    if kind == "pipe":
        for _ in range(n):
            got += len(chan.recv_bytes())
    elif kind == "zmq":
        for _ in range(n):
            got += len(sock.recv())
    elif kind == "faster-fifo get_many":
        while got < 64 * n:
            got += sum(len(m) for m in chan.get_many(max_messages_to_get=1000))
    else:
        for _ in range(n):
            got += len(chan.get())
    if got != 64 * n:
        raise RuntimeError(f"{kind}: received {got} bytes, expected {64 * n}")
    return time.monotonic_ns()


def run_baseline(name, n, cores) -> dict | None:
    kind, chan = name, None
    if name == "multiprocessing.Queue":
        chan = FORK.Queue()
    elif name == "multiprocessing.Pipe":
        kind = "pipe"
        recv_end, send_end = FORK.Pipe(duplex=False)
    elif name.startswith("faster-fifo"):
        try:
            import faster_fifo
        except ImportError:
            return None
        chan = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)
        kind = "faster-fifo get_many" if "get_many" in name else "faster-fifo"
    elif name.startswith("pyzmq"):
        try:
            import zmq  # noqa: F401
        except ImportError:
            return None
        kind, chan = "zmq", f"ipc:///tmp/shmex-bench-{new_run_id()}"
    barrier = FORK.Barrier(2)
    if kind == "pipe":
        r = _spawn(_bl_recv, cores[1], kind, recv_end, n, barrier)
        s = _spawn(_bl_send, cores[0], kind, send_end, n, barrier)
    else:
        r = _spawn(_bl_recv, cores[1], kind, chan, n, barrier)
        s = _spawn(_bl_send, cores[0], kind, chan, n, barrier)
    t1, t0 = _collect([r, s])
    if kind == "zmq":
        try:
            os.unlink(chan[len("ipc://"):])
        except FileNotFoundError:
            pass
    return {"msgs_per_s": int(n * 1_000_000_000 // (t1 - t0))}


def _bl_pp(kind, ends, n, barrier, is_pinger):
    rx, tx = ends
    payload = bytes(64)
    rtt = np.zeros(n, np.int64)
    barrier.wait()
    for i in range(n):
        if is_pinger:
            t0 = time.monotonic_ns()
            tx.send_bytes(payload)
            rx.recv_bytes()
            rtt[i] = time.monotonic_ns() - t0
        else:
            tx.send_bytes(rx.recv_bytes())
    return rtt


def run_pipe_pingpong(n, cores, warmup) -> dict:
    a_rx, a_tx = FORK.Pipe(duplex=False)
    b_rx, b_tx = FORK.Pipe(duplex=False)
    barrier = FORK.Barrier(2)
    kids = [_spawn(_bl_pp, cores[1], "pipe", (a_rx, b_tx), n, barrier, False),
            _spawn(_bl_pp, cores[0], "pipe", (b_rx, a_tx), n, barrier, True)]
    _, rtt = _collect(kids)
    return {"latency_ns": _pcts(rtt[warmup:] // 2)}


# --- the report -------------------------------------------------------------------------

def _median(runs: list[dict], key="msgs_per_s") -> int:
    return int(statistics.median(r[key] for r in runs))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(args) -> int:
    n = int(args.messages)
    repeats = int(args.repeats)
    cpus = sorted(os.sched_getaffinity(0))
    two = [cpus[0], cpus[-1]]
    one = [cpus[0], cpus[0]]
    pings = max(1000, min(200_000, n // 50))
    warm = pings // 10
    bl_n = max(1000, min(200_000, n // 50))
    info = machine()
    _say("compiling kernels ...")
    compile_s = _compile()
    res: dict = {"machine": info, "command": " ".join(["shmex"] + sys.argv[1:]) if sys.argv else "",
                 "workload": {"messages": n, "record_bytes": COMMAND.itemsize, "capacity": CAPACITY,
                              "batch": BATCH, "repeats": repeats, "pings": pings, "baseline_messages": bl_n},
                 "placement": {"producer": two[0], "consumer": two[1], "one_core": one[0],
                               "chain": {"producer": two[0], "relay": two[1], "consumer": two[0]}},
                 "compile_s": round(compile_s, 3)}
    if len(set(two)) < 2:
        _say("note: one usable core; the 'separate cores' figures share it")

    _say(f"throughput unbatched x{repeats} ...")
    unb = [run_throughput(n, 1, two, SPIN) for _ in range(repeats)]
    _say(f"throughput batched ({BATCH}) x{repeats} ...")
    bat = [run_throughput(n, BATCH, two, SPIN) for _ in range(repeats)]
    res["msgs_per_s"] = _median(unb)
    res["msgs_per_s_batched"] = _median(bat)
    res["msgs_per_s_best"] = max(r["msgs_per_s"] for r in unb)
    res["msgs_per_s_batched_best"] = max(r["msgs_per_s"] for r in bat)
    res["runs"] = {"unbatched": [r["msgs_per_s"] for r in unb], "batched": [r["msgs_per_s"] for r in bat]}

    _say(f"ping-pong latency ({pings} round trips, spinning, separate cores) ...")
    pp = run_pingpong(pings, two, SPIN, warm)
    res["latency_ns"] = pp["latency_ns"]
    res["latency_stamped_ns"] = pp["stamped_ns"]
    res["clock_read_ns"] = int(_clock_cost(100_000))

    _say("one core: ping-pong (spin-then-yield kernels, and the Python API with `block`) ...")
    res["one_core"] = {
        "latency_ns": run_pingpong(max(1000, pings // 10), one, 0, warm // 10)["latency_ns"],
        "api_block_latency_ns": run_api_pingpong(max(1000, pings // 20), one, warm // 20)["latency_ns"],
        "msgs_per_s_batched": run_throughput(n, BATCH, one, 0)["msgs_per_s"],
    }
    res["separate_cores_api_block_latency_ns"] = run_api_pingpong(max(1000, pings // 20), two, warm // 20)["latency_ns"]

    _say("three-process chain (batched, spin then yield) ...")
    chain = [run_chain(n, BATCH, [two[0], two[1], two[0]], 200) for _ in range(repeats)]
    res["chain3_msgs_per_s_batched"] = _median(chain)

    _say(f"baselines ({bl_n} messages each) ...")
    res["baselines"], notes = {}, []
    for name in ("multiprocessing.Queue", "multiprocessing.Pipe", "faster-fifo", "faster-fifo get_many",
                 "pyzmq ipc PUSH/PULL"):
        r = run_baseline(name, bl_n, two)
        if r is None:
            notes.append(f"{name}: not installed (pip install 'shmex[bench]'); skipped")
            continue
        res["baselines"][name] = r["msgs_per_s"]
    res["baseline_latency_ns"] = {"multiprocessing.Pipe": run_pipe_pingpong(max(1000, pings // 20), two,
                                                                           warm // 20)["latency_ns"]}
    res["ratios"] = {k: round(res["msgs_per_s"] / v, 1) for k, v in res["baselines"].items()}
    res["ratios_batched"] = {k: round(res["msgs_per_s_batched"] / v, 1) for k, v in res["baselines"].items()}
    res["notes"] = notes
    _print(res)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        _say(f"wrote {args.json}")
    return 0


def _fmt(x: int) -> str:
    return f"{x / 1e6:8.2f}M/s"


def _print(r: dict) -> None:
    m = r["machine"]
    pl = r["placement"]
    print(f"shmex ring benchmark  (git {m['git_rev']}; {m['cpu_model']}, {m['cores']} cores, "
          f"kernel {m['kernel']}, numba {m['numba']}, load {m['load_avg_1m']})")
    w = r["workload"]
    print(f"workload: {w['messages']:,} records of {w['record_bytes']} B, ring capacity {w['capacity']}, "
          f"batch {w['batch']}, median of {w['repeats']}; JIT warm-up {r['compile_s']} s (excluded)")
    print(f"placement: producer cpu {pl['producer']}, consumer cpu {pl['consumer']}; one-core cases on cpu "
          f"{pl['one_core']}; chain producer/relay/consumer on cpus {pl['chain']['producer']}/"
          f"{pl['chain']['relay']}/{pl['chain']['consumer']}")
    runs = {k: " ".join(f"{x / 1e6:.1f}" for x in v) for k, v in r["runs"].items()}
    print(f"  shmex unbatched (spin)        {_fmt(r['msgs_per_s'])}   median; best {_fmt(r['msgs_per_s_best'])};"
          f" runs (M/s) {runs['unbatched']}")
    print(f"  shmex batched {w['batch']} (spin)       {_fmt(r['msgs_per_s_batched'])}   median; best "
          f"{_fmt(r['msgs_per_s_batched_best'])}; runs (M/s) {runs['batched']}")
    lat, st = r["latency_ns"], r["latency_stamped_ns"]
    print(f"  one-way latency RTT/2 (spin)  p50 {lat['p50']} ns  p99 {lat['p99']} ns  p99.9 {lat['p999']} ns"
          f"  (stamped one-way p50 {st['p50']} ns; clock read {r['clock_read_ns']} ns included)")
    a = r["separate_cores_api_block_latency_ns"]
    print(f"  Python API, wait=block        p50 {a['p50']} ns  p99 {a['p99']} ns  p99.9 {a['p999']} ns")
    oc = r["one_core"]
    print(f"  one core, kernels spin+yield  p50 {oc['latency_ns']['p50']} ns  p99 {oc['latency_ns']['p99']} ns"
          f"  p99.9 {oc['latency_ns']['p999']} ns")
    print(f"  one core, Python API block    p50 {oc['api_block_latency_ns']['p50']} ns  "
          f"p99 {oc['api_block_latency_ns']['p99']} ns")
    print(f"  one core, batched             {_fmt(oc['msgs_per_s_batched'])}")
    print(f"  chain of 3 on 2 cores, batched {_fmt(r['chain3_msgs_per_s_batched'])}")
    print("  (unbatched: one cursor store per record on both sides; figures move with the load"
          " other processes put on these 2 vCPUs: see load and the per-run figures)")
    print("baselines (same placement, 64-byte messages, one at a time):")
    for k, v in r["baselines"].items():
        print(f"  {k:28s}{_fmt(v)}   shmex unbatched is {r['ratios'][k]}x, batched {r['ratios_batched'][k]}x")
    bl = r["baseline_latency_ns"]["multiprocessing.Pipe"]
    print(f"  multiprocessing.Pipe one-way  p50 {bl['p50']} ns  p99 {bl['p99']} ns")
    for note in r["notes"]:
        print(f"  note: {note}")

"""``shmex follow``: a follower engine of a primary's NATS stream, in its own data directory.

    shmex follow --data-dir standby --nats nats://a:4222,nats://b:4222,nats://c:4222
    shmex follow --data-dir standby --nats ... --takeover --clients 2   # fail over automatically

It applies every command of the stream to its own matcher, writes its own WAL and
snapshots, checks its state hash at each checkpoint the primary publishes, and shows its
lag (seqs and ms). ``--takeover``: when the primary's lease lapses it takes the lease
(compare-and-set), applies the stream to its end and becomes the primary: an engine over
its data directory (`shmex launch`, the same seq continued) that accepts orders from
client slots or the gateway. ``--until-end``: stop after the primary's final checkpoint.

Exit status: 0 stopped cleanly (or the engine it became exited 0); 1 a check failed (a
gap in the stream, a state hash unequal to the primary's); 2 bad usage, or the cluster
cannot be reached.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def add_arguments(p) -> None:
    p.add_argument("--data-dir", metavar="DIR", required=True, help="the follower's WAL and snapshots")
    p.add_argument("--nats", metavar="URL,...", required=True, help="NATS servers of the primary's stream")
    p.add_argument("--stream", default="SHMEX", help="the primary's stream (default SHMEX)")
    p.add_argument("--bucket", default="shmex_lease", help="the lease bucket (default shmex_lease)")
    p.add_argument("--lease", type=float, default=2.0, metavar="S", help="lease TTL (default 2 s)")
    p.add_argument("--snapshot-every", type=int, default=1_000_000, metavar="N",
                   help="commands between the follower's snapshots (0: only at the stop)")
    p.add_argument("--takeover", action="store_true",
                   help="take the lease when it lapses and become the primary")
    p.add_argument("--until-end", action="store_true", help="stop after the primary's final checkpoint")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    g = p.add_argument_group("the engine it becomes on --takeover (`shmex launch` flags)")
    g.add_argument("--name", metavar="NAME", help="run id clients attach by")
    g.add_argument("--clients", type=int, default=1, help="client slots (default 1)")
    g.add_argument("--gateway", metavar="HOST:PORT")
    g.add_argument("--durability", choices=("group", "replicated"), default="replicated")


def progress(f, stream_seq: int, elapsed: float) -> None:
    o = f.out
    lag = o.lag_ms[-1] if o.lag_ms else 0.0
    print(f"[{elapsed:6.1f}s] follow: applied seq {o.applied_seq:,}  stream seq {stream_seq:,}  "
          f"lag {max(0, stream_seq - o.applied_seq):,} seqs {lag:,.1f} ms  checkpoints {o.checkpoints} ok",
          file=sys.stderr, flush=True)


def main(args) -> int:
    from shmex.repl import names
    from shmex.repl.follower import Follower

    servers = [u for u in args.nats.split(",") if u]
    if not names.valid(args.stream) or not names.valid(args.bucket):
        print(f"follow: --stream {args.stream!r} / --bucket {args.bucket!r}: {names.RULE}", file=sys.stderr)
        return 2
    said_ready = False

    def each_second(fol, stream_seq: int, elapsed: float) -> None:
        nonlocal said_ready
        if warm and not said_ready and all(sb.poll() == "ready" for sb in warm):
            said_ready = True
            print(f"follow: {len(warm)} warm standby process(es) ready: a takeover starts none cold",
                  file=sys.stderr, flush=True)
        if not args.quiet:
            progress(fol, stream_seq, elapsed)

    f = Follower(args.data_dir, servers, args.stream, args.bucket, lease_s=args.lease,
                 snapshot_every=args.snapshot_every, takeover=args.takeover, until_end=args.until_end,
                 promote=getattr(args, "promote", False), progress=each_second)

    def _stop(signum, frame):
        f.stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"follow: stream {args.stream} on {args.nats}, data {f.data_dir}", file=sys.stderr, flush=True)
    # --takeover waits for a lapse: time to warm the engine's processes (a promotion is now);
    # each_second, called only while following, says when they are ready
    takeover = getattr(args, "takeover", False) and not getattr(args, "promote", False)
    warm = _warm_engine(args, servers) if takeover else []
    try:
        return _follow_then(args, f, servers, warm)
    finally:
        for sb in warm:          # the ones the engine did not take (or all, if it never started)
            sb.kill()


def _follow_then(args, f, servers, warm) -> int:
    import asyncio

    from shmex.errors import CannotOpen, CorruptRecord, UsageError
    from shmex.repl import cluster
    from shmex.repl.follower import lag_percentiles

    try:
        out = asyncio.run(f.run())
    except (CannotOpen, UsageError) as e:
        print(f"follow: {e}", file=sys.stderr)
        return 2
    except CorruptRecord as e:
        print(f"follow: {e}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"follow: NATS {args.nats}: JetStream did not answer in {cluster.ANSWER_S:g} s (no quorum?)",
              file=sys.stderr)
        return 2
    lag = lag_percentiles(out.lag_ms)
    doc = {"status": out.status, "reason": out.reason, "applied_seq": out.applied_seq,
           "messages": out.messages, "commands": out.commands, "checkpoints": out.checkpoints,
           "unchecked": out.unchecked, "state_hash": out.final_hash, "lag_ms": lag,
           "took_over": out.took_over, "lease_revision": out.lease_revision, "takeover_ms": out.takeover_ms,
           "resubscribed": out.resubscribed, "subscribed_from": out.subscribed_from}
    print(f"shmex follow {args.stream}: {'ok' if out.status == 0 else 'FAILED: ' + out.reason}")
    print(f"  applied     seq {out.applied_seq:,}: {out.commands:,} commands in {out.messages:,} messages")
    print(f"  checked     {out.checkpoints} checkpoint(s) equal to the primary's"
          + (f", {out.unchecked} not checkable here" if out.unchecked else ""))
    if lag["p50"] is not None:
        print(f"  lag         p50 {lag['p50']:,.1f} ms  p99 {lag['p99']:,.1f} ms  max {lag['max']:,.1f} ms "
              f"(the primary's append -> applied here)")
    if out.resubscribed:
        print(f"  stalled     {out.resubscribed} time(s): subscribed again from the next stream sequence")
    print(f"  state_hash  {out.final_hash}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    if out.status or not out.took_over:
        return out.status
    f.m = f.wal = None                  # the follower's book and log: closed, not needed now
    return _become_primary(args, out, servers, warm)


def _launch_argv(args, servers, lease_revision: int, book: dict | None) -> list[str]:
    """`shmex launch` over the data directory: the engine continues the seq, its replicator
    adopts the lease revision just taken."""
    argv = ["--data-dir", os.path.abspath(args.data_dir), "--producers", "0",
            "--clients", str(args.clients), "--durability", args.durability, "--nats", ",".join(servers),
            "--stream", args.stream, "--bucket", args.bucket, "--lease", str(args.lease),
            "--lease-revision", str(lease_revision), "--snapshot-every", str(args.snapshot_every)]
    if book is not None:
        argv += _book_flags(book)
    if args.name:
        argv += ["--name", args.name]
    if args.gateway:
        argv += ["--gateway", args.gateway]
    if args.quiet:
        argv += ["--quiet"]
    return argv


def _launch_args(argv: list[str]):
    """`shmex launch`'s arguments parsed from argv, as its command line would be."""
    import argparse

    from shmex.commands import launch

    p = argparse.ArgumentParser(prog="shmex launch")
    launch.add_arguments(p)
    return p.parse_args(argv)


def _warm_engine(args, servers) -> list:
    """One warm standby per process of the engine a takeover starts, warming while this
    follows (at nice 19): at the takeover each role takes one instead of a cold Python
    process loading its numba kernels."""
    from shmex.engine import registry, standby
    from shmex.engine.config import EngineConfig
    from shmex.errors import UsageError

    try:
        cfg = EngineConfig.from_args(_launch_args(_launch_argv(args, servers, 0, None)))
    except (UsageError, SystemExit):
        return []                       # the launch itself says what is wrong, at the takeover
    procs = registry.launched(cfg)
    roles = tuple(sorted({p.spec.name for p in procs}))
    warm = []
    try:
        for _ in procs:
            warm.append(standby.Standby(standby.child_env(), roles))
    except OSError as e:
        print(f"follow: cannot start a warm standby ({e}); the takeover starts cold processes",
              file=sys.stderr, flush=True)
    return warm


def _become_primary(args, out, servers, warm) -> int:
    """`shmex launch` in this process, its roles taking the warm standbys."""
    from shmex.commands import launch

    print(f"follow: took over as the primary after {out.takeover_ms:,.0f} ms; starting the engine at seq "
          f"{out.applied_seq + 1:,}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return launch.main(_launch_args(_launch_argv(args, servers, out.lease_revision, out.book)), warm=warm)


def _book_flags(book: dict) -> list[str]:
    """--symbols/--capacity/--max-open-orders of the book the follower holds."""
    return ["--symbols", str(book["symbols"]), "--capacity", str(book["capacity"]),
            "--max-open-orders", str(book["max_open_orders"])]

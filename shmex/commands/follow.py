"""``shmex follow``: a follower engine of a primary's NATS stream, in its own data directory.

    shmex follow --data-dir standby --nats nats://a:4222,nats://b:4222,nats://c:4222
    shmex follow --data-dir standby --nats ... --takeover --clients 2   # fail over automatically

It applies every command of the stream to its own matcher, writes its own WAL and
snapshots, checks its state hash at each checkpoint the primary publishes, and shows its
lag (seqs and ms). ``--takeover``: when the primary's lease lapses it takes the lease
(compare-and-set), applies the stream to its end and becomes the primary: an engine over
its data directory (`shmex launch`, the same seq continued) that accepts orders from
client slots or the gateway. ``--until-end``: stop after the primary's final checkpoint.
``--feed``: serve the market-data feed read-only from the follower's own durable log, the
primary's feed byte for byte (same MoldUDP64 session, same messages, same time stamps):
a second feed beside the primary's (on its own group, or as the B side of an A/B pair);
on a takeover the engine it becomes goes on with the same feed file.

Exit status: 0 stopped cleanly (or the engine it became exited 0); 1 a check failed (a
gap in the stream, a state hash unequal to the primary's) or the feed failed; 2 bad
usage, or the cluster cannot be reached.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading


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
    from shmex.commands.launch import add_feed_arguments

    add_feed_arguments(p)
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

    from shmex.errors import UsageError

    try:
        feed = FollowerFeed(args, servers) if getattr(args, "feed", None) else None
    except UsageError as e:
        print(f"follow: {e}", file=sys.stderr)
        return 2
    f = Follower(args.data_dir, servers, args.stream, args.bucket, lease_s=args.lease,
                 snapshot_every=args.snapshot_every, takeover=args.takeover, until_end=args.until_end,
                 promote=getattr(args, "promote", False), progress=each_second,
                 on_commit=feed.committed if feed else None)
    if feed:
        feed.follower = f

    def _stop(signum, frame):
        f.stop = True
        if feed:
            feed.cut_linger()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"follow: stream {args.stream} on {args.nats}, data {f.data_dir}", file=sys.stderr, flush=True)
    # --takeover waits for a lapse: time to warm the engine's processes (a promotion is now);
    # each_second, called only while following, says when they are ready
    takeover = getattr(args, "takeover", False) and not getattr(args, "promote", False)
    warm = _warm_engine(args, servers) if takeover else []
    try:
        return _follow_then(args, f, servers, warm, feed)
    finally:
        if feed:
            feed.stop(end=False)
        for sb in warm:          # the ones the engine did not take (or all, if it never started)
            sb.kill()


class FollowerFeed:
    """The feed role's loop (`roles.feed`) in a thread of this process, over the follower's
    directory. Its control block is this process's (`Ctl.local`): DURABLE_SEQ is the
    follower's last commit, stored by `committed`. It starts at the first commit (the
    primary's book and instruments are known then) and never defers (the follower's
    matching is not the exchange's). `stop(end=True)`: the primary's last run is sealed
    and applied here, so the feed closes as the primary's did and sends end of session;
    otherwise it stops without (the primary's session goes on; on a takeover the engine
    this becomes continues the file)."""

    def __init__(self, args, servers):
        from shmex.engine.ctl import Ctl

        from shmex.errors import UsageError

        self.args, self.servers = args, servers
        try:
            probe = _engine_config(args, servers, 0, None)   # the feed flags' errors now, not at the first commit
        except SystemExit:
            raise UsageError("the feed's flags (see shmex launch --help)") from None
        if probe.feed_priority != "normal":
            raise UsageError(f"--feed-priority {probe.feed_priority}: a follower's feed is a thread of the "
                             f"follower, whose priority is the process's (start follow under nice instead)")
        self.follower = None
        self.ctl = Ctl.local()
        self.cfg = None
        self.thread: threading.Thread | None = None
        self.status: int | None = None
        self.error = ""

    def committed(self, durable_seq: int) -> None:
        from shmex.engine import cells

        self.ctl.store(cells.DURABLE_SEQ, durable_seq)   # ORDER: release: after the WAL's fdatasync
        if self.cfg is None and durable_seq > 0 and not self.status:
            try:
                self._start()
            except Exception as e:   # noqa: BLE001 - following goes on; the feed's failure is said
                self._failed(f"{type(e).__name__}: {e}")

    def _start(self) -> None:
        from shmex.engine.ctl import ProcessSlot
        from shmex.roles import feed
        from shmex.wal import manifest

        out = self.follower.out
        self.cfg = dataclasses.replace(
            _engine_config(self.args, self.servers, 0, out.book, out.symbols_path), feed_defer_above=0.0)
        if "journal_runs" not in (manifest.read(self.follower.data_dir) or {}):
            self._failed(f"{self.follower.data_dir}: the manifest has no journal_runs (no primary doc reached "
                         f"this follower before its commands): the primary's feed cannot be reproduced here")
            return
        me = ProcessSlot(self.ctl, 0)

        def main() -> None:
            try:
                self.status = feed.run(self.cfg, self.ctl, me)
                if self.status:
                    self._failed(f"the feed stopped with status {self.status}")
            except Exception as e:   # noqa: BLE001 - said, and the follow's status says it
                self._failed(f"{type(e).__name__}: {e}")

        self.thread = threading.Thread(target=main, name="feed", daemon=True)
        self.thread.start()

    def _failed(self, why: str) -> None:
        self.status, self.error = self.status or 1, why
        print(f"follow: feed FAILED: {why}", file=sys.stderr, flush=True)

    def stop(self, *, end: bool) -> None:
        from shmex.engine import cells

        if self.thread is None:
            return
        if end:
            self.ctl.store(cells.WAL_DONE, 1)           # the feed reads to DURABLE_SEQ, then closes
        else:
            self.ctl.store(cells.PHASE, cells.PH_ABORT)
        self.thread.join()
        self.thread = None

    def cut_linger(self) -> None:
        """A signal while the feed lingers after its end of session: stop answering now."""
        from shmex.engine import cells

        if self.cfg is not None and self.ctl.load(cells.proc_cell(0, cells.P_ROLE + cells.F_STATE)) == cells.FS_ENDED:
            self.ctl.store(cells.PHASE, cells.PH_ABORT)

    def report(self) -> tuple[dict, str]:
        from shmex.engine import cells
        from shmex.roles import feed

        if self.cfg is None:
            return {"status": self.status, "error": self.error}, f"none sent{': ' + self.error if self.error else ''}"
        doc, line = feed.report(self.cfg, self.ctl.a, cells.proc_cell(0, cells.P_ROLE))
        return {**doc, "status": self.status, "error": self.error}, (f"FAILED: {self.error}; " if self.error else "") + line


def _journal_ended(data_dir: str, applied_seq: int) -> bool:
    """The primary's last run is sealed (a clean stop) and applied here to its end."""
    from shmex.wal import manifest

    runs = manifest.journal_runs(manifest.read(data_dir))
    return bool(runs) and bool(runs[-1].get("sealed")) and runs[-1].get("last_seq") == applied_seq


def _follow_then(args, f, servers, warm, feed=None) -> int:
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
    if feed:
        feed.stop(end=out.status == 0 and not out.took_over and _journal_ended(f.data_dir, out.applied_seq))
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
    if feed:
        doc["feed"], line = feed.report()
        print(f"  feed        {line}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    if out.status or not out.took_over:
        return out.status or int(bool(feed and feed.status))
    f.m = f.wal = None                  # the follower's book and log: closed, not needed now
    return _become_primary(args, out, servers, warm)


def _launch_argv(args, servers, lease_revision: int, book: dict | None,
                 symbols_path: str | None = None) -> list[str]:
    """`shmex launch` over the data directory: the engine continues the seq, its replicator
    adopts the lease revision just taken; the primary's book, symbols file and this
    follower's feed flags."""
    argv = ["--data-dir", os.path.abspath(args.data_dir), "--producers", "0",
            "--clients", str(args.clients), "--durability", args.durability, "--nats", ",".join(servers),
            "--stream", args.stream, "--bucket", args.bucket, "--lease", str(args.lease),
            "--lease-revision", str(lease_revision), "--snapshot-every", str(args.snapshot_every)]
    if book is not None:
        argv += _book_flags(book)
    if symbols_path is not None:
        argv += ["--symbols-file", symbols_path]
    import argparse

    from shmex.commands.launch import add_feed_arguments

    for attr, flag in add_feed_arguments(argparse.ArgumentParser()):   # the ones this follow was given
        v = getattr(args, attr, None)
        if v is not None:
            argv += [flag, str(v)]
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


def _engine_config(args, servers, lease_revision: int, book: dict | None, symbols_path: str | None = None):
    """The EngineConfig of `_launch_argv`."""
    from shmex.engine.config import EngineConfig

    return EngineConfig.from_args(_launch_args(_launch_argv(args, servers, lease_revision, book, symbols_path)))


def _warm_engine(args, servers) -> list:
    """One warm standby per process of the engine a takeover starts, warming while this
    follows (at nice 19): at the takeover each role takes one instead of a cold Python
    process loading its numba kernels."""
    from shmex.engine import registry, standby
    from shmex.errors import UsageError

    try:
        cfg = _engine_config(args, servers, 0, None)
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
    return launch.main(_launch_args(_launch_argv(args, servers, out.lease_revision, out.book, out.symbols_path)),
                       warm=warm)


def _book_flags(book: dict) -> list[str]:
    """--symbols/--capacity/--max-open-orders of the book the follower holds."""
    return ["--symbols", str(book["symbols"]), "--capacity", str(book["capacity"]),
            "--max-open-orders", str(book["max_open_orders"])]

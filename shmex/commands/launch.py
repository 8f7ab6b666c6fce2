"""``shmex launch``: start the engine on this machine, run the built-in load, summarize.

    shmex launch                                  # demo: 2 producers, ./shmex-data; 1M orders at
                                                  # full speed, then 100K orders/s for 10 s
    shmex launch --producers 2 --duration 10 --rate 100000 --durability group \\
                 --json run.json --hgrm run.hgrm --plot run.png

Exit status: 0 the load ran and every check passed, or a stop asked for by SIGINT or
SIGTERM drained cleanly (rings drained, WAL sealed, final snapshot, no segment left; the
summary's status says "interrupted" or "terminated"); 1 a process died or a check failed
(the message names it), also when an asked-for stop did not drain cleanly; 2 bad usage or
the data directory cannot be used.

The data directory keeps its log across launches: a launch on a directory with a log
recovers the book from its newest snapshot and WAL and continues the sequence
(``--fresh`` starts an empty log instead). ``shmex replay DIR`` prints the same
state_hash as the summary; ``shmex verify DIR`` checks the log and snapshots.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_DIR = "shmex-data"


def add_arguments(p) -> None:
    from shmex.engine.config import DEMO_ORDERS, PRESETS

    def described(name):
        return ", ".join(f"{k.replace('_', '-')} {v}" for k, v in PRESETS[name].items())

    p.epilog = ("presets (an explicit flag wins over its preset):\n" + "\n".join(
        f"  {name:<11} {described(name)}" for name in PRESETS))
    p.add_argument("--preset", choices=tuple(PRESETS), help="latency | throughput | durable: set the "
                   "options below for that goal (listed at the end)")
    p.add_argument("--producers", type=int, help="load-generator processes (default 2)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--orders", type=int, help=f"orders in all (default {DEMO_ORDERS:,} when no --duration; a launch with no "
                   f"length, rate or preset runs them at full speed, then {DEMO_LATENCY_RATE:,.0f} orders/s "
                   f"for {DEMO_LATENCY_S:.0f} s, each phase with its summary)")
    g.add_argument("--duration", type=float, metavar="S", help="send for S seconds")
    p.add_argument("--rate", type=float, metavar="R", help="offered orders/s over all producers "
                   "(open loop, latency from the intended send time); default: as fast as the rings take")
    p.add_argument("--symbols", type=int, help="default 4")
    p.add_argument("--durability", choices=("none", "group", "always", "replicated"),
                   help="none: page cache (survives a process crash); group (default): one fdatasync "
                        "per group of commands; always: one per command; replicated: group, and the "
                        "NATS stream's quorum acknowledged it (needs --nats)")
    p.add_argument("--data-dir", metavar="DIR", help=f"WAL and snapshots (default ./{DEFAULT_DIR})")
    p.add_argument("--fresh", action="store_true", help="start an empty log in the data directory")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--hgrm", metavar="PATH", help="write the tick-to-trade percentile distribution")
    p.add_argument("--plot", metavar="PATH", help="write a percentile plot (PNG)")
    p.add_argument("--clients", type=int, help="slots for client-API producers (default 1)")
    p.add_argument("--name", metavar="NAME", help="run id clients attach by (default: a fresh id)")
    p.add_argument("--keep-orders-on-disconnect", action="store_true",
                   help="a client slot's resting orders stay when its client goes away (default: "
                        "they are cancelled, journaled as one CANCEL_ALL; the slot's next client starts clean)")
    p.add_argument("--slow-client", type=float, metavar="S",
                   help="disconnect a client that leaves its report ring full for S seconds, reading "
                        "nothing (default 5): its reports are dropped and counted, its orders cancelled, "
                        "and everyone else goes on")
    p.add_argument("--publisher", choices=("process", "inline"),
                   help="publisher as its own process, or inside the matcher's loop (default)")
    p.add_argument("--snapshot-every", type=int, metavar="N",
                   help="commands between snapshots (default 1,000,000; 0: only the final one)")
    p.add_argument("--keep-snapshots", type=int, metavar="N",
                   help="snapshots kept, with the WAL segments they need; older segments are removed "
                        "(default 3; at least 2; 0: keep every snapshot and the whole log)")
    p.add_argument("--capacity", type=int, help="resting orders the book can hold (default 1,048,576)")
    p.add_argument("--max-open-orders", type=int, metavar="N",
                   help="resting orders one producer slot may hold; a new order that would rest "
                        "beyond is rejected TOO_MANY_ORDERS (default 1,048,576)")
    p.add_argument("--seed", type=int)
    p.add_argument("--wait", metavar="ROLE=STRAT,...",
                   help="wait strategies per role (spin|yield|hybrid|block; default walwriter=hybrid, others block)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--restarts", type=int, metavar="N",
                   help="restart a dead process at most N times per --restart-window "
                        "(default 5; 0: any death stops the engine)")
    p.add_argument("--restart-window", type=float, metavar="S", help="default 60")
    p.add_argument("--heartbeat-timeout", type=float, metavar="S",
                   help="a ready process whose heartbeat is older than S seconds is taken for hung "
                        "(SIGSTOP, a stuck fsync): killed and restarted (default 10)")
    p.add_argument("--no-standby", action="store_true",
                   help="keep no warm standby process (a restart then spawns a fresh child)")
    p.add_argument("--segment-bytes", type=int, metavar="B", help="WAL segment size (default 64 MiB)")
    add_gateway_arguments(p)
    add_feed_arguments(p)
    add_itch_arguments(p)
    add_nats_arguments(p)


def add_itch_arguments(p) -> None:
    g = p.add_argument_group("real data as load (NASDAQ TotalView-ITCH 5.0)")
    g.add_argument("--itch", metavar="FILE", help="replay this ITCH 5.0 file (gzip or plain) as one "
                   "producer's orders on an empty book: adds rest, executions become IOC orders shmex "
                   "must match, cancels and replaces follow; the summary says how many executions shmex "
                   "reproduced and whether each symbol's book ends as the file's (needs an empty data "
                   "directory or --fresh)")
    g.add_argument("--itch-speed", type=float, metavar="X",
                   help="the file's own pace times X (default: as fast as the rings take)")
    g.add_argument("--itch-symbols", metavar="NAME,...", help="replay only these symbols (default: all)")


def add_feed_arguments(p) -> list[tuple[str, str]]:
    """The market-data flags; -> (attribute, flag) of each, for a command that passes them on."""
    from shmex.engine.config import DEFAULT_FEED

    g = p.add_argument_group("market data (ITCH 5.0 over MoldUDP64)")
    added = []

    def arg(*a, **kw) -> None:
        added.append(g.add_argument(*a, **kw))

    arg("--feed", metavar="GROUP:PORT", nargs="?", const=DEFAULT_FEED,
        help=f"publish every book change to this UDP multicast group (default {DEFAULT_FEED}); "
             f"written to DATA_DIR/feed/itch.bin too; watch it with `shmex watch DATA_DIR`")
    arg("--feed-iface", metavar="ADDR", help="the interface the feed is sent from (default 127.0.0.1)")
    arg("--feed-rerequest-port", type=int, metavar="PORT",
        help="UDP port of the re-request server (default: any free one, in DATA_DIR/feed/feed.json)")
    arg("--feed-drop-every", type=int, metavar="K",
        help="fault injection: leave out every K-th data packet (subscribers re-request them)")
    arg("--feed-priority", choices=("normal", "low", "idle"),
        help="the feed's CPU priority (default normal; low: nice 10; idle: SCHED_IDLE, only "
             "the time the other processes of its core leave)")
    arg("--feed-defer-above", type=float, metavar="RATE",
        help="while the journal grows faster than RATE commands/s the feed waits, leaving the "
             "machine to matching, and catches up when the rate falls (default: 500,000 where "
             "the machine has fewer cores than the engine has processes, else never; 0: never)")
    arg("--feed-linger", type=float, metavar="S",
        help="answer re-requests this long after the end of session (default 2)")
    return [(a.dest, a.option_strings[0]) for a in added]


def add_nats_arguments(p) -> None:
    g = p.add_argument_group("replication (NATS JetStream)")
    g.add_argument("--nats", metavar="URL,...", help="NATS servers (nats://HOST:PORT,...): a replicator "
                   "ships the durable journal to the stream and holds the primary's lease")
    g.add_argument("--stream", metavar="NAME", help="JetStream stream of this engine's journal (default SHMEX)")
    g.add_argument("--bucket", metavar="NAME", help="key-value bucket of the lease (default shmex_lease)")
    g.add_argument("--lease", type=float, metavar="S", help="lease TTL in seconds (default 2)")
    g.add_argument("--lease-revision", type=int, help=argparse.SUPPRESS)   # `shmex follow --takeover`'s handover


def add_gateway_arguments(p) -> None:
    g = p.add_argument_group("network gateway (OUCH 5.0 over SoupBinTCP)")
    g.add_argument("--gateway", metavar="HOST:PORT",
                   help="serve members over TCP (port 0: any free port; the address is printed "
                        "and written to DATA_DIR/gateway/RUN/address)")
    g.add_argument("--symbols-file", metavar="FILE", help="instruments: name, tick, price_lo, price_hi, "
                                                          "lot (default: the shipped example)")
    g.add_argument("--users-file", metavar="FILE", help="users: username, account, password hash "
                                                        "(default: the shipped demo users)")
    g.add_argument("--gateway-max-open", type=int, metavar="N", help="open orders per user (default 100,000)")
    g.add_argument("--gateway-orders", type=int, metavar="N", help="open orders of all users (default 131,072)")
    g.add_argument("--gateway-idle", type=float, metavar="S", help="drop a session silent this long (default 15)")
    g.add_argument("--via", choices=("shm", "tcp"),
                   help="the built-in load's path: shm (default: producers on the input rings) or tcp "
                        "(--producers members log in at the gateway, 127.0.0.1:0 unless --gateway, and send "
                        "OUCH orders: the tick-to-trade includes the network)")


def main(args, warm=()) -> int:
    """warm: standbys warmed before (`shmex follow --takeover`): the first phase's roles
    take them instead of starting cold."""
    from shmex.engine.config import EngineConfig
    from shmex.errors import CannotOpen, CorruptRecord, UsageError

    try:
        cfg = EngineConfig.from_args(args)
    except UsageError as e:
        print(f"launch: {e}", file=sys.stderr)
        return 2
    if cfg.via == "tcp" and getattr(args, "users_file", None):   # refused before --fresh touches the log
        print("launch: --via tcp logs in users of its own: --users-file cannot be used with it", file=sys.stderr)
        return 2
    from shmex.engine.latency import write_hgrm, write_plot
    from shmex.engine.summary import print_summary
    from shmex.files import make_private_dir
    from shmex.recovery.recover import remove_log
    from shmex.shm.registry import list_runs

    if cfg.replicated:
        from shmex.repl.primary import check_start

        try:
            why = check_start(cfg)
        except CannotOpen as e:
            print(f"launch: {e}", file=sys.stderr)
            return 2
        if why:
            print(f"launch: refused: {why}", file=sys.stderr)
            return 2
    live = [r for r in list_runs() if r.run_id == cfg.run_id and r.alive]
    if live:
        print(f"launch: --name {cfg.run_id}: a run of that name is live ({live[0].why}); "
              f"pick another name or stop it", file=sys.stderr)
        return 2
    if args.fresh:
        try:
            remove_log(cfg.data_dir)
        except CannotOpen as e:
            print(f"launch: --fresh: {e}", file=sys.stderr)
            return 2
    try:
        make_private_dir(cfg.data_dir)
    except OSError as e:
        print(f"launch: cannot create data directory {cfg.data_dir}: {e.strerror}", file=sys.stderr)
        return 2
    if cfg.via == "tcp":
        from shmex.roles import tcpload

        cfg = tcpload.prepare(cfg)
    itch_info = None
    if cfg.itch:
        try:
            cfg, itch_info = prepare_itch(cfg, args)
        except (UsageError, CannotOpen, CorruptRecord) as e:
            print(f"launch: {e}", file=sys.stderr)
            return 2
    phases = demo_phases(cfg, named=bool(getattr(args, "name", None))) if is_demo(args, cfg) else (("", "", cfg),)
    docs, rc, h = [], 0, None
    for i, (label, what, pcfg) in enumerate(phases):
        if label:
            print(f"launch: phase {i + 1} of {len(phases)}, {label}: {what}", file=sys.stderr, flush=True)
        doc, h, code = run_once(pcfg, args, itch_info, warm=warm if i == 0 else ())
        if doc is None:
            return code
        if label:
            doc["phase"] = {"name": label, "what": what}
            print(f"== phase {i + 1} of {len(phases)}: {label} ({what})")
        print_summary(doc)
        if "itch" in doc:
            print_itch(doc["itch"])
        docs.append(doc)
        rc = max(rc, code)
        if doc["status"] != "ok" or code != 0:
            break            # a failure or an asked-for stop: no next phase
    if len(phases) > 1:
        print_demo_recap(docs)
    last = docs[-1]
    if args.hgrm:
        write_hgrm(h, args.hgrm)
        print(f"  hgrm        {args.hgrm}")
    if args.plot:
        write_plot(h, args.plot, f"shmex launch: {last['producers']} producers, "
                   f"{'rate ' + str(int(last['rate'])) if last['rate'] else 'full speed'}, "
                   f"durability {last['durability']}, {last['orders']:,} orders; {last['machine']}")
        print(f"  plot        {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"phases": docs} if len(phases) > 1 else last, f, indent=1)
    return rc


# The run a bare `shmex launch` makes: capacity first, then latency at a fixed rate, each
# labelled for what its figures measure (full-speed percentiles are queueing behind the
# load, not the engine's latency).
DEMO_LATENCY_RATE = 100_000.0
DEMO_LATENCY_S = 10.0


def is_demo(args, cfg) -> bool:
    """No load asked for: no preset, length, rate or ITCH file, and load producers to run."""
    return (cfg.producers > 0 and not cfg.itch and all(
        getattr(args, k, None) is None for k in ("preset", "orders", "duration", "rate")))


def demo_phases(cfg, named: bool) -> tuple:
    from shmex.shm.names import new_run_id

    second = cfg.replace(orders=None, duration=DEMO_LATENCY_S, rate=DEMO_LATENCY_RATE,
                         run_id=cfg.run_id if named else new_run_id(),
                         # fresh client ids (the first phase's orders still rest in the book):
                         # the launch epoch one second on, as a launch a second later has
                         cid_base=int(cfg.cid_base) + (1 << 32))
    return (("throughput", f"{cfg.orders:,} orders as fast as the rings take: capacity; its "
             f"tick-to-trade is queueing behind the load, not the engine's latency", cfg),
            ("latency", f"{DEMO_LATENCY_RATE:,.0f} orders/s open loop for {DEMO_LATENCY_S:.0f} s: "
             f"tick-to-trade from each order's intended send time, the log continued", second))


def print_demo_recap(docs: list) -> None:
    print("== shmex launch, both phases:")
    for d in docs:
        lat = d["latency_ns"]
        name = d["phase"]["name"]
        print(f"  {name:<11} {d['orders']:,} orders at {d['orders_per_s']:,.0f} orders/s, "
              f"durability {d['durability']}: tick-to-trade p50 {lat['p50'] / 1e3:,.1f} us, "
              f"p99 {lat['p99'] / 1e3:,.1f} us, max {lat['max'] / 1e3:,.1f} us")
    ok = all(all(d["checks"].values()) and d["status"] == "ok" for d in docs)
    print(f"  checks      {'all passed in every phase' if ok else 'FAILED (see the phase above)'}; "
          f"a {DEMO_LATENCY_S:.0f}-s window rarely holds a disk stall: `shmex launch --preset "
          f"latency --duration 60` (mode none) and `--rate 100000 --duration 60` (group) show the tails")


def run_once(cfg, args, itch_info, warm=()):
    """One supervised run -> (its result document or None, its histogram, exit code)."""
    from shmex.engine.summary import progress, result_doc
    from shmex.engine.supervisor import Supervisor

    print(f"launch: run {cfg.run_id}, data {cfg.data_dir}; warming up "
          f"(numba kernels load from the cache; the first run ever compiles them)...",
          file=sys.stderr, flush=True)
    sup = Supervisor(cfg, progress=None if args.quiet else progress, warm=warm)
    out = sup.run()
    if out.ctl is None:
        print(f"launch: {out.reason or 'failed before start'}", file=sys.stderr)
        return None, None, out.exit_code or 1
    doc, h = result_doc(cfg, out)
    if itch_info is not None:
        doc["itch"] = itch_result(cfg, itch_info, doc)
    if out.status == "failed":
        print(f"launch: {out.reason}", file=sys.stderr)
    elif out.status == "ok" and not all(doc["checks"].values()):
        doc["exit_code"] = out.exit_code = 1
    elif out.status != "ok":
        # a signal: the checks that need a finished load do not apply, the clean stop does
        need = ("durable_is_last_seq", "wal_sealed", "no_segment_left")
        if not all(doc["checks"][k] for k in need):
            doc["exit_code"] = out.exit_code = 1
    return doc, h, out.exit_code


def prepare_itch(cfg, args):
    """Translate --itch FILE into DATA_DIR/itch/ -> (the config that replays it, its info)."""
    from shmex.errors import UsageError
    from shmex.recovery import itchrun
    from shmex.wal import manifest

    if getattr(args, "symbols", None) is not None or getattr(args, "symbols_file", None):
        raise UsageError("--itch: the day's stock directory gives the symbols (--symbols and "
                         "--symbols-file cannot be used with it)")
    if manifest.read(cfg.data_dir):
        raise UsageError(f"--itch replays a day on an empty book: {cfg.data_dir} holds a log "
                         f"(add --fresh to start it over, or pick another --data-dir)")

    def shown(done_bytes, cmds):
        if not args.quiet:
            print(f"\r  itch: {done_bytes / 1e6:,.0f} MB read, {cmds:,} commands", end="",
                  file=sys.stderr, flush=True)

    print(f"launch: --itch {cfg.itch}: translating...", file=sys.stderr, flush=True)
    info = itchrun.prepare(cfg.itch, cfg.data_dir, speed=cfg.itch_speed, only=cfg.itch_symbols,
                           progress=shown)
    c = info["counts"]
    print(f"\r  itch: {info['messages']:,} messages, {len(info['symbols'])} symbols "
          f"({', '.join(s['name'] for s in info['symbols'][:8])}{', ...' if len(info['symbols']) > 8 else ''})"
          f" -> {info['commands']:,} commands: {c['adds']:,} adds, {c['executions']:,} executions, "
          f"{c['deletes']:,} deletes, {c['reductions']:,} reductions, "
          f"{c['replaces'] + c['replaces_as_cancel_new']:,} replaces; skipped "
          f"{c['skipped_unknown_order']:,} about orders the file never added, "
          f"{c['skipped_not_book']:,} that do not change the displayed book", file=sys.stderr, flush=True)
    orders = info["commands"]
    if getattr(args, "orders", None) is not None:
        orders = min(orders, args.orders)
    cfg = cfg.replace(symbols=len(info["symbols"]), symbols_file=itchrun.paths(cfg.data_dir)["symbols"],
                      price_band=tuple(info["band"]),
                      orders=None if getattr(args, "duration", None) else orders)
    return cfg, info


def itch_result(cfg, info: dict, doc: dict) -> dict:
    """The replay's check (from the journal), or why there is none."""
    from shmex.errors import CannotOpen, CorruptRecord
    from shmex.recovery import itchrun

    out = {"file": info["file"], "messages": info["messages"], "commands": info["commands"],
           "counts": info["counts"], "speed": info["speed"]}
    try:
        out.update(itchrun.check(cfg.data_dir))
    except (CannotOpen, CorruptRecord) as e:
        out["error"] = str(e)
    return out


def print_itch(r: dict) -> None:
    if "error" in r:
        print(f"  itch        no check: {r['error']}")
        return
    n = r["executions"]
    print(f"  itch        {r['file']}: {r['commands']:,} commands, seqs 1..{r['seqs']:,}")
    print(f"  executions  {r['reproduced']:,} of {n:,} reproduced against the same resting order"
          f" ({100.0 * r['reproduced'] / n if n else 100.0:.1f}%); {r['against_another_order']:,} filled "
          f"another order, {r['short']:,} filled short")
    if r["orders_traded_on_entry"] or r["rejected"]:
        print(f"  consistency {r['orders_traded_on_entry']:,} of the file's orders traded on entry and "
              f"{r['rejected']:,} commands were rejected (cancels of orders already filled): in a whole "
              f"day both are 0; the file is not one exchange's complete book (a sample?)")
    eq = [k for k, v in r["symbols"].items() if v["equal"]]
    ne = {k: v for k, v in r["symbols"].items() if not v["equal"]}
    print(f"  books       {len(eq)} of {len(r['symbols'])} symbols end as the file's book "
          f"({r['live_orders']:,} resting orders, the file's {r['file_live_orders']:,})")
    for k, v in list(ne.items())[:10]:
        print(f"    {k:<8} differs: {v['first_difference']}")

"""``shmex bench matcher|ring|wal|gateway|feed|replication``: run a benchmark and print its figures (``--json PATH``
for machines). Each prints the machine, the workload and the command first.
"""

from __future__ import annotations

import importlib

WHAT = {  # name: (help, module with main(args))
    "matcher": ("matcher throughput against PyPI order books", "shmex.bench.matcher_bench"),
    "ring": ("shared-memory ring against Python IPC", "shmex.bench.ring_bench"),
    "wal": ("WAL appends, commit latency, replay, recovery", "shmex.bench.wal_bench"),
    "gateway": ("the engine over TCP (OUCH/SoupBinTCP) against asyncio servers", "shmex.bench.gateway_bench"),
    "feed": ("the ITCH/MoldUDP64 feed: matching with it on and off, encoding, engine -> subscriber "
             "latency, gap recovery", "shmex.bench.feed_bench"),
    "replication": ("the journal replicated to a 3-node NATS JetStream cluster: throughput and latency "
                    "against group, follower lag, failover time", "shmex.bench.replication_bench"),
}


def add_arguments(p) -> None:
    which = p.add_subparsers(dest="which", required=True, metavar="WHAT")
    b = which.add_parser("matcher", help=WHAT["matcher"][0])
    b.add_argument("--commands", type=int, default=2_000_000, help="commands in the workload")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--repeats", type=int, default=5, help="timed runs of shmex (median is reported)")
    b.add_argument("--peer-commands", type=int, default=200_000,
                   help="commands given to each PyPI peer (they are slow)")
    b.add_argument("--no-peers", action="store_true", help="skip the PyPI order books")
    b.add_argument("--no-peer-venvs", action="store_true",
                   help="skip the peers that need another Python (limit-order-book 3.x on 3.13, "
                        "matching-engine on 3.12; each otherwise runs in a venv of its own, made once "
                        "under ~/.cache/shmex/peer-venvs from an interpreter found on PATH or in pyenv)")
    b.add_argument("--memory", action="store_true",
                   help="also run 10M commands after warm-up and report resident memory")
    b.add_argument("--json", metavar="PATH")

    b = which.add_parser("ring", help=WHAT["ring"][0])
    b.add_argument("--messages", type=int, default=10_000_000)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--json", metavar="PATH")

    b = which.add_parser("wal", help=WHAT["wal"][0])
    b.add_argument("--records", type=int, default=2_000_000)
    b.add_argument("--dir", metavar="DIR", help="where to write (default: a temp dir); the disk floor "
                   "is recorded for DIR's filesystem: give the engine's data directory (or one beside "
                   "it) and `shmex launch` shows it next to its to_durable")
    b.add_argument("--floor-seconds", type=float, default=60.0, metavar="S",
                   help="length of the sync trace behind the disk floor (default 60: shorter traces "
                        "miss the disk's stalls; 0: no floor)")
    b.add_argument("--floor-rate", type=float, default=100_000.0, metavar="R",
                   help="open-loop arrivals/s replayed against the trace (default 100,000)")
    b.add_argument("--floor-only", action="store_true", help="measure the disk floor alone")
    b.add_argument("--json", metavar="PATH")


    b = which.add_parser("gateway", help=WHAT["gateway"][0])
    b.add_argument("--sessions", type=int, default=4, help="member sessions (default 4)")
    b.add_argument("--orders", type=int, default=1_000_000, help="orders of the full-speed phase")
    b.add_argument("--window", type=int, default=8192, help="unanswered orders per session at full speed")
    b.add_argument("--rate", type=float, default=50_000.0, help="orders/s offered in the latency phase")
    b.add_argument("--duration", type=float, default=60.0, help="seconds of the latency phase (0: skip)")
    b.add_argument("--durability", choices=("none", "group", "always"), default="group")
    b.add_argument("--baseline-orders", type=int, default=200_000, help="orders sent to each baseline server")
    b.add_argument("--no-baselines", action="store_true")
    b.add_argument("--json", metavar="PATH")


    b = which.add_parser("feed", help=WHAT["feed"][0])
    from shmex.bench.feed_bench import add_arguments as feed_arguments

    feed_arguments(b)

    b = which.add_parser("replication", help=WHAT["replication"][0])
    from shmex.bench.replication_bench import add_arguments as replication_arguments

    replication_arguments(b)


def main(args) -> int:
    return importlib.import_module(WHAT[args.which][1]).main(args)

"""`shmex launch` flags (no heavy imports: `shmex --help` must stay instant)."""

DEFAULT_DIR = "shmex-data"
DEMO_ORDERS = 1_000_000


def add_arguments(p) -> None:
    p.add_argument("--producers", type=int, default=2, help="load-generator processes (default 2)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--orders", type=int, help=f"orders in all (default {DEMO_ORDERS:,} when no --duration)")
    g.add_argument("--duration", type=float, metavar="S", help="send for S seconds")
    p.add_argument("--rate", type=float, metavar="R", help="offered orders/s over all producers "
                   "(open loop, latency from the intended send time); default: as fast as the rings take")
    p.add_argument("--symbols", type=int, default=4)
    p.add_argument("--durability", choices=("none", "group", "always"), default="group")
    p.add_argument("--data-dir", metavar="DIR", help=f"WAL and snapshots (default ./{DEFAULT_DIR})")
    p.add_argument("--fresh", action="store_true", help="start an empty log in the data directory")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--hgrm", metavar="PATH", help="write the tick-to-trade percentile distribution")
    p.add_argument("--plot", metavar="PATH", help="write a percentile plot (PNG)")
    p.add_argument("--clients", type=int, default=1, help="slots for client-API producers (default 1)")
    p.add_argument("--name", metavar="NAME", help="run id clients attach by (default: a fresh id)")
    p.add_argument("--publisher", choices=("process", "inline"), default="inline",
                   help="publisher as its own process, or inside the matcher's loop (default)")
    p.add_argument("--snapshot-every", type=int, default=1_000_000, metavar="N",
                   help="commands between snapshots (0: only the final one)")
    p.add_argument("--capacity", type=int, default=1 << 20, help="resting orders the book can hold")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--wait", metavar="ROLE=STRAT,...", help="wait strategies (spin|yield|hybrid|block; default walwriter=hybrid, others block)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--restarts", type=int, default=5, metavar="N",
                   help="restart a dead process at most N times per --restart-window "
                        "(default 5; 0: any death stops the engine)")
    p.add_argument("--restart-window", type=float, default=60.0, metavar="S")
    p.add_argument("--no-standby", action="store_true",
                   help="keep no warm standby process (a restart then spawns a fresh child)")
    p.add_argument("--segment-bytes", type=int, metavar="B", help="WAL segment size (default 64 MiB)")

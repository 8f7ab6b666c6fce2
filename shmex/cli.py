"""Command line: parsing and dispatch only. Each verb's work lives in its package.

Exit codes: 0 ok; 1 a check failed or data is corrupt; 2 cannot open, or bad usage.
Human summaries go to stdout, progress to stderr, ``--json PATH`` writes machine output.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def _handler(dotted: str):
    """Resolve 'module:function' lazily so that `shmex --help` never compiles kernels."""
    module, func = dotted.split(":")

    def call(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), func)(args)

    return call


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shmex", description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    bench = verbs.add_parser("bench", help="run a benchmark and print its figures")
    which = bench.add_subparsers(dest="which", required=True, metavar="WHAT")

    b = which.add_parser("matcher", help="matcher throughput against PyPI order books")
    b.add_argument("--commands", type=int, default=2_000_000, help="commands in the workload")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--repeats", type=int, default=5, help="timed runs of shmex (median is reported)")
    b.add_argument("--peer-commands", type=int, default=200_000,
                   help="commands given to each PyPI peer (they are slow)")
    b.add_argument("--no-peers", action="store_true", help="skip the PyPI order books")
    b.add_argument("--memory", action="store_true",
                   help="also run 10M commands after warm-up and report resident memory")
    b.add_argument("--json", metavar="PATH")
    b.set_defaults(run=_handler("shmex.bench.matcher_bench:main"))

    b = which.add_parser("ring", help="shared-memory ring against Python IPC")
    b.add_argument("--messages", type=int, default=10_000_000)
    b.add_argument("--json", metavar="PATH")
    b.set_defaults(run=_handler("shmex.bench.ring_bench:main"))

    b = which.add_parser("wal", help="WAL appends, commit latency, replay, recovery")
    b.add_argument("--records", type=int, default=2_000_000)
    b.add_argument("--dir", metavar="DIR", help="where to write (default: a temp dir)")
    b.add_argument("--json", metavar="PATH")
    b.set_defaults(run=_handler("shmex.bench.wal_bench:main"))

    v = verbs.add_parser("verify", help="check a run's WAL and snapshots (exit 0 clean, 1 corrupt, 2 cannot open)")
    v.add_argument("dir", metavar="DIR")
    v.add_argument("--json", metavar="PATH")
    v.set_defaults(run=_handler("shmex.wal.verify:main"))

    r = verbs.add_parser("replay", help="rebuild the book from a run's snapshots and WAL")
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--until", type=int, metavar="SEQ")
    r.add_argument("--json", metavar="PATH")
    r.set_defaults(run=_handler("shmex.snapshot.recovery:main"))

    la = verbs.add_parser("launch", help="run the engine with its built-in load and summarize "
                          "(exit 0 ok, 1 a process died or a check failed, 2 usage, 130/143 signal)")
    from shmex.procs.launch_args import add_arguments
    add_arguments(la)
    la.set_defaults(run=_handler("shmex.procs.launch:main"))

    d = verbs.add_parser("drill", help="crash-recovery drill: SIGKILL engine processes under load, "
                         "prove nothing acknowledged was lost (exit 0 passed, 1 failed, 2 usage)")
    from shmex.procs.drill import add_arguments as drill_arguments
    drill_arguments(d)
    d.set_defaults(run=_handler("shmex.procs.drill:main"))

    c = verbs.add_parser("clean", help="remove shared-memory segments of dead runs")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed")
    c.set_defaults(run=_handler("shmex.shm.clean:main"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

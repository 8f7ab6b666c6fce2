"""Command line: parsing and dispatch only. Each verb is a module of `shmex.commands`
with ``add_arguments(parser)`` and ``main(args)``.

Exit codes: 0 ok; 1 a check failed or data is corrupt; 2 cannot open, or bad usage.
Human summaries go to stdout, progress to stderr, ``--json PATH`` writes machine output.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from shmex.commands import VERBS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shmex", description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in VERBS.items():
        module = importlib.import_module(f"shmex.commands.{verb}")
        sub = verbs.add_parser(verb, help=text, description=(module.__doc__ or text).strip().splitlines()[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.main)
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

"""commands — what a user runs: one module per verb, each with ``add_arguments(parser)``
(light: `shmex --help` imports no numba) and ``main(args) -> exit code``.

Exit codes everywhere: 0 ok; 1 a check failed or data is corrupt; 2 cannot open, or bad
usage. Human summaries go to stdout, progress to stderr, ``--json PATH`` writes machine
output. Heavy imports happen inside ``main``.
"""

# verb: help (the order of `shmex --help`)
VERBS = {
    "launch": "run the engine with its built-in load and summarize "
              "(exit 0 ok, 1 a process died or a check failed, 2 usage)",
    "drill": "crash-recovery drill: SIGKILL engine processes under load, "
             "prove nothing acknowledged was lost (exit 0 passed, 1 failed, 2 usage)",
    "bench": "run a benchmark and print its figures",
    "verify": "check a run's WAL and snapshots (exit 0 clean, 1 corrupt, 2 cannot open)",
    "replay": "rebuild the book from a run's snapshots and WAL",
    "repair": "cut a damaged WAL at its first damage, saying what it cut (exit 0 done, 2 cannot open)",
    "clean": "remove shared-memory segments of dead runs",
    "follow": "follow a primary's NATS stream: apply it, check state hashes, show lag; "
              "--takeover fails over (exit 0 ok, 1 a check failed, 2 usage or no cluster)",
    "promote": "make a follower's data directory the primary now: take the lapsed lease, apply the "
               "stream to its end, start the engine (exit 2 when the lease is held)",
    "feed": "regenerate a run's ITCH 5.0 feed from its WAL, byte for byte the live one "
            "(exit 0 equal, 1 differs or damaged, 2 cannot open)",
    "watch": "join a run's ITCH feed, show its books live, check them against the engine's at the end "
             "(exit 0 equal, 1 differs, 2 no feed)",
    "ouch": "log in to a gateway over SoupBinTCP, send OUCH orders, print the answers "
            "(exit 0 ok, 1 refused or closed, 2 usage)",
}

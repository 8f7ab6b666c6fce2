"""engine — the runtime that runs the roles (`shmex.roles`) as pinned processes: the role
registry, supervisor, child entry point, warm standby, placement, control cells, latency
buckets, configuration, the run's summary.

Contract:

- The matcher is the sequencer and the book's only owner; matching never waits for the
  disk. A report of command s reaches its producer only when DURABLE_SEQ >= s.
- A ring slot is released (reusable, the retransmission point) only when what it holds
  is safe downstream: input and journal slots when durable, out slots when routed.
- Every process is pinned by the supervisor's stated plan (`placement`), and no wait
  spins on a core it shares with the peer it waits for.
- A clean stop (load done, SIGINT, SIGTERM) drains every ring, seals the WAL, writes a
  final snapshot and unlinks every segment; a dead child stops the run with its name
  and exit status, and still leaks nothing.
- Latency is open loop: tick-to-trade runs from a command's *intended* send time to
  its producer reading its first report, recorded in numba into shared buckets.

Entry points: `shmex launch` (`shmex.commands.launch`), the client API (`shmex.client`).
"""

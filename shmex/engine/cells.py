"""The engine's control segment and latency-histogram segment: offsets only, no logic.

Control segment ``/shmex-<run>-ctl``: one int64 array. Cells written by different
processes sit on different 64-byte lines (8 cells per line)::

    cell   written by     field
    ----   ------------   ------------------------------------------------------------
      0    supervisor     PHASE        STARTING 0, RUNNING 1, STOPPING 2, ABORT 3
      1    supervisor     FAULT_SYNC   drill: bumped to fail the WAL writer's next fdatasync
                                       (read only where the drill turned faults on)
      8    walwriter      DURABLE_SEQ  highest seq the WAL holds as its mode demands
      9    walwriter      WAL_RETIRED_SEGMENTS, WAL_RETIRED_BYTES (10): removed by retention
     16    matcher        MATCHER_SEQ  highest seq stamped
     24    matcher        MATCHER_DONE 1: drained, final snapshot written (2: aborted)
     25..26 matcher       STATE_HASH   final state_hash (16 bytes)
     27    matcher        SNAPSHOTS    snapshots taken
     28    matcher        SNAP_PAUSE_MAX_NS  longest matching pause a snapshot caused
     29    matcher        BATCHES
     30    matcher        SNAP_SEQ     seq of the latest snapshot due, stored before its batch is journaled
                                       (its hash: the snapshot file's header)
     32    walwriter      WAL_DONE     1: sealed (3: halted on a durability fault)
     33    walwriter      COMMITS
     34..38 walwriter     HALT_OP, HALT_ERRNO, HALT_FILE, HALT_OFFSET, HALT_SEQ: what a
                          durability fault stopped (`engine.halt`)
     40    publisher      PUB_DONE     1: every report routed
     41    publisher      ROUTED       reports routed
     42    publisher      DROPPED      reports to a destination nobody reads (a dead client)
     48..63 supervisor    config       producers, clients, symbols, band, capacity, go_ns,
                          run base seq (55), restarts (56), process slots S (57)
     64 + 16 p            process p    READY, HEARTBEAT (monotonic ns of its latest beat),
                                       DONE, PID, CPU_NS, WALL_NS, RSS;
                                       cells 8..15 of the slot are the role's own
                                       (the replicator's: R_* below)
     64 + 16 S + 32 k     producer k   counters (below), written only by producer k

A client slot's block is written by the supervisor and the publisher only: its client
maps this segment read-only and counts in its own segment (`engine.clientseg`), which the
supervisor copies into the block's counter cells each time it samples. C_ACCOUNT is the
account a slot's commands act for, written by the supervisor at creation (a load
producer's configured account, a client slot's default `default_account(k)`) and when it
grants a client's binding (C_BIND_*); the matcher's merge step reads a client slot's
there (a load producer's from the config).

Process slots follow the role registry (`registry.slot_table`): each role has its slots
in the registry's order; the producer role has one per producer slot k = 0..P-1 (load
producers first, then client slots). A producer's id on the wire is k + 1. Readers take
S from CFG_PROC_SLOTS, so that a role added to the registry moves no reader's offsets.

Histogram segment ``/shmex-<run>-hist``: int64[P, NBUCKETS]: row k is producer k's
tick-to-trade counts in log-linear buckets (`latency.bucket_of`).
"""

from __future__ import annotations

PH_STARTING, PH_RUNNING, PH_STOPPING, PH_ABORT = 0, 1, 2, 3

PHASE = 0
FAULT_SYNC = 1
DURABLE_SEQ = 8
WAL_RETIRED_SEGMENTS = 9
WAL_RETIRED_BYTES = 10
MATCHER_SEQ = 16
MATCHER_DONE = 24
STATE_HASH = 25
SNAPSHOTS = 27
SNAP_PAUSE_MAX_NS = 28
BATCHES = 29
SNAP_SEQ = 30
WAL_DONE = 32
COMMITS = 33
HALT_OP = 34        # `halt.OPS` index of what failed; 0: nothing recorded
HALT_ERRNO = 35
HALT_FILE = 36      # segment index, or halt.FILE_SPARE / FILE_MANIFEST / FILE_OTHER
HALT_OFFSET = 37
HALT_SEQ = 38       # the durable seq at the halt (-1: not known); a corrupt log: the damaged seq
PUB_DONE = 40
ROUTED = 41
DROPPED = 42
CFG_PRODUCERS = 48
CFG_CLIENTS = 49
CFG_SYMBOLS = 50
CFG_PRICE_LO = 51
CFG_PRICE_HI = 52
CFG_CAPACITY = 53
GO_NS = 54          # monotonic ns when the load started (0 before)
RUN_BASE_SEQ = 55   # DURABLE_SEQ when this run's WAL writer first opened the log
RESTARTS = 56       # processes restarted by the supervisor in this run
CFG_PROC_SLOTS = 57  # S: process slots (the registry's, for this run's config)
CFG_GATEWAYS = 58   # producer slots after the client slots that belong to the gateway
CFG_CANCEL_ON_DISCONNECT = 59   # 1: a client slot's orders are cancelled when its client goes away
SESSIONS_CLOSED = 60  # client sessions closed out by a CANCEL_ALL in this run (`disconnect.Watch`)
EVICTED = 61          # client sessions disconnected for leaving their report ring full

PROC_BASE = 64
PROC_CELLS = 16
P_READY, P_HEARTBEAT, P_DONE, P_PID, P_CPU_NS, P_WALL_NS, P_RSS = range(7)
P_ROLE = 8          # cells P_ROLE .. PROC_CELLS - 1 of a slot belong to its role

# the replicator's own cells (P_ROLE + i of its process slot, `replicator_cell`)
R_REPLICATED_SEQ = 0  # highest seq the stream's quorum acknowledged; <= DURABLE_SEQ (it ships only durable records)
R_STREAM_SEQ = 1      # the stream sequence of the last message it appended
R_QUORUM = 2          # 1: the last append was acknowledged; 0: an append is waiting (no quorum yet)
R_MESSAGES = 3        # messages appended by this run's replicators
R_HASHES = 4          # state-hash checkpoints published beside the journal
R_LEASE_REV = 5       # the revision of the lease this engine holds (0: none yet)

# the feed's own cells (P_ROLE + i of its process slot)
F_SENT = 0            # MoldUDP64 sequence number of the last message multicast
F_MESSAGES = 1        # messages in the feed file
F_CMD_SEQ = 2         # the journal seq the feed has turned into messages
F_PACKETS = 3         # data packets multicast (dropped ones included)
F_REREQUESTS = 4      # re-requests answered
F_DROPPED = 5         # data packets left out on purpose (feed_drop_every)
F_STARTS = 6          # feed processes started in this run
F_STATE = 7           # FS_RUNNING, FS_DEFERRING (waiting while the journal grows fast), FS_ENDED
FS_RUNNING, FS_DEFERRING, FS_ENDED = 0, 1, 2

# the TCP load's own cells (P_ROLE + i of its process slot, `launch --via tcp`)
T_SESSIONS = 0        # sessions logged in
T_SENT = 1            # Enter Orders sent
T_ANSWERED = 2        # of them answered (Accepted or Rejected)
T_REJECTED = 3        # of them rejected
T_EXECUTED = 4        # Executed messages read
T_PORT = 5            # the gateway's port it connected to
T_DONE = 6            # 1: every order it was to send is sent and answered (the run may stop)

PROD_CELLS = 32
# producer counters (int64 indices into the producer's own block)
(C_SENT, C_ANSWERED, C_LAST_ANSWERED, C_REPORTS, C_ACKS, C_FILLS_TAKER, C_FILLS_MAKER,
 C_QTY_TAKER, C_QTY_MAKER, C_REJECTS, C_CANCELED, C_EXPIRED, C_REPLACED, C_SENDING_DONE,
 C_FIRST_SENT_NS, C_LAST_ANSWER_NS, C_GENERATED, C_OTHER, C_ACCOUNT, C_SESSIONS_CLOSED, C_EVICTED, C_UNROUTED,
 C_BIND_ANSWERED, C_BIND_RESULT, C_BIND_HELD_BY) = range(25)
# C_EVICTED: the report ring's consumer-attach count of the session the publisher
# disconnected for leaving its ring full (0: none). C_UNROUTED: 1 while the publisher drops
# the slot's reports (its reader gone or evicted); a new client waits for 0 before it sends
# C_SESSIONS_CLOSED: the slot's input-ring producer-attach count once the supervisor closed
# out its last session (cancel-on-disconnect); a client attaching above it + 1 waits
# C_BIND_ANSWERED: the last binding request of the slot's client the supervisor answered
# (`clientseg.Binds`), after C_BIND_RESULT (clientseg.BOUND or why not) and C_BIND_HELD_BY

# Accounts from DEFAULT_ACCOUNT_BASE up are the slots' defaults (one per producer id);
# a client cannot connect with another slot's.
DEFAULT_ACCOUNT_BASE = 0xFFFF0000
ACCOUNT_MAX = (1 << 32) - 1       # COMMAND.account is u4


def default_account(k: int) -> int:
    """The account of producer slot k when nothing else is configured or asked for."""
    return DEFAULT_ACCOUNT_BASE + k + 1


def proc_cell(slot: int, field: int) -> int:
    return PROC_BASE + slot * PROC_CELLS + field


def prod_base(proc_slots: int, k: int) -> int:
    """First cell of producer slot k's counters, with `proc_slots` process slots."""
    return PROC_BASE + proc_slots * PROC_CELLS + k * PROD_CELLS


def ctl_cells(proc_slots: int, producer_slots: int) -> int:
    return prod_base(proc_slots, producer_slots)


def in_role(k: int) -> str:
    return f"in-{k}"


def rep_role(k: int) -> str:
    return f"rep-{k}"

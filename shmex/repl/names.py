"""Names in the NATS cluster: subjects, headers, keys. No logic beyond formatting."""

from __future__ import annotations

import re

RULE = "letters, digits, '-' and '_' only (a JetStream stream or bucket name)"
_VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# message headers
FIRST_SEQ = "Shmex-First-Seq"        # first command seq in the message
LAST_SEQ = "Shmex-Last-Seq"          # last command seq in the message
CHECKPOINT = "Shmex-Checkpoint"      # 1: the primary has a state hash at LAST_SEQ (published on .hash)
SENT_NS = "Shmex-Sent-Ns"            # wall-clock ns when the primary appended it (lag in ms)
ORIGIN = "Shmex-Origin"              # the engine that appended it (`lease.origin`: host and data dir)
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST = "Nats-Expected-Last-Sequence"



def valid(name: str) -> bool:
    return bool(_VALID.match(name or ""))


def journal_subject(stream: str) -> str:
    return f"{stream}.journal"


def hash_subject(stream: str) -> str:
    """State-hash checkpoints: JSON {"seq": s, "state_hash": h} beside the journal."""
    return f"{stream}.hash"


def primary_subject(stream: str) -> str:
    """The primary's book, symbols file and runs (`repl.cluster.primary_doc`, JSON),
    published when its replicator starts and whenever they change (before the commands of
    a new run, again when its last run is sealed). It lives in the stream (no TTL): a
    follower started after the primary stopped finds it there."""
    return f"{stream}.primary"


def subjects(stream: str) -> list[str]:
    """Every subject of the stream."""
    return [journal_subject(stream), hash_subject(stream), primary_subject(stream)]


def msg_id(stream: str, first: int, last: int) -> str:
    return f"{stream}:{first}-{last}"


def lease_key(stream: str) -> str:
    """The lease of the primary of `stream` (one bucket may hold several shards' leases)."""
    return f"primary.{stream}"

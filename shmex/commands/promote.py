"""``shmex promote``: make a follower's data directory the primary, now (manual failover).

    shmex promote --data-dir standby --nats nats://a:4222,... --clients 2

It refuses (exit 2) while another engine holds the lease; once the lease lapsed it takes
it (compare-and-set), applies the stream to its end in the directory and starts the
engine there (`shmex launch`), continuing the same seq. The flags are `shmex follow`'s.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    from shmex.commands import follow

    follow.add_arguments(p)


def main(args) -> int:
    from shmex.commands import follow

    args.promote = True
    return follow.main(args)

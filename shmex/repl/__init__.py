"""repl — the journal beyond one machine: a NATS JetStream stream (3 replicas, Raft inside
NATS), a follower engine that applies it, and a lease that fences a deposed primary.

Contract:

- The stream holds the durable journal in order: message i carries seqs first..last
  (headers), first = the previous message's last + 1; its id is derived from that range
  (JetStream de-duplication) and it states the stream sequence it expects before it
  (`Nats-Expected-Last-Sequence`), so an append from a deposed primary is refused.
- R_REPLICATED_SEQ only grows and never passes DURABLE_SEQ; in mode replicated a report
  of command s leaves only when it is >= s.
- One engine holds the lease (a key in a key-value bucket, TTL `lease_s`); it is taken
  only by compare-and-set, so two holders cannot both succeed.
- A follower applies every command through a `Matcher` and its own WAL; at each
  checkpoint the primary publishes (a snapshot's seq and state hash) it compares hashes.
- A promoted follower applies the stream to its end before its engine accepts an order.
"""

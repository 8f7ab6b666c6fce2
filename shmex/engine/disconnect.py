"""Cancel-on-disconnect for client slots: when a client goes away, its resting orders go.

A client of `shmex.client` holds its slot's input ring as its producer (a byte lock the
kernel drops when the process ends, however it ends). The supervisor watches each client
slot's ring: once a session has attached (the ring's producer-attach count moved) and the
lock is free again, it takes the producer side itself for one record, a CANCEL_ALL with
the slot's next pseq, and gives the side back. The record is sequenced and journaled like
any other, so the cancels are in the WAL, in the feed and in every replay; a next client
of the slot starts with no order of its predecessor resting (its ids free again, no fills
of orders it never sent). The attach count at which a slot was closed out is its
C_SESSIONS_CLOSED cell: a client that finds its predecessor's session not closed out yet
gives the side back and tries again (`shmex.client`), so it never inherits those orders.
`--keep-orders-on-disconnect` turns this off.
"""

from __future__ import annotations

from shmex.engine import cells, clientseg
from shmex.ring import _kernels as ring_kernels
from shmex.schema import K_CANCEL_ALL, commands


class Watch:
    def __init__(self, cfg, ctl, rings: dict):
        self.ctl = ctl
        self.slots = list(clientseg.client_slots(cfg))
        self.rings = {k: rings[k] for k in self.slots}
        self.done = {k: self.rings[k].producer_attaches for k in self.slots}   # sessions handled
        n_slots = int(ctl[cells.CFG_PROC_SLOTS])
        self.closed = {k: cells.prod_base(n_slots, k) + cells.C_SESSIONS_CLOSED for k in self.slots}
        self.rec = commands(1)
        self.rec[0]["kind"] = K_CANCEL_ALL

    def poll(self) -> None:
        """Cancel the orders of every slot whose last session ended since the last poll."""
        for k in self.slots:
            r = self.rings[k]
            if r.producer_attaches == self.done[k] or r.peer_alive() or not r.try_take_producer():
                continue          # no new session, its client is still there, or one is arriving
            try:
                rec = self.rec.copy()
                rec[0]["pseq"] = r.published_seq + 1      # its place; the matcher stamps the producer
                if r.publish(rec, wait=False) == 1:
                    self.done[k] = r.producer_attaches       # this one included
                    # ORDER: after the publish; a client reads it after taking the side
                    ring_kernels._store(self.ctl, self.closed[k], self.done[k])
                    self.ctl[cells.SESSIONS_CLOSED] += 1          # plain: the supervisor's own cell
            finally:
                r.give_up()

"""The client API: a user's own Python process as a producer of a running engine.

::

    from shmex.client import connect
    from shmex.schema import Side

    with connect("myrun") as c:              # the run id (`shmex launch --name myrun`)
        oid = c.new_order(Side.BUY, price=10_000, qty=5, symbol=0)
        c.cancel(oid, symbol=0)
        reps = c.reports(timeout_s=1.0)      # REPORT records: ACK, CANCELED, fills...
        c.submit(my_command_array)           # or whole numpy batches of COMMAND records

- A client takes a free client slot (`--clients N` at launch): an input ring it
  produces into and a report ring it consumes; the slot's id is its ``producer`` id.
  The ring locks make a slot single-owner; a slot frees when its client exits.
- Each connection is a session: when a client goes away the engine cancels the slot's
  resting orders (one journaled CANCEL_ALL, see `engine.disconnect`), and the next client
  of the slot gets none of its predecessor's reports (`--keep-orders-on-disconnect`: the
  orders rest on, and the next client inherits them with their ids and fills).
- Identity is the engine's: whatever a record says, the matcher stamps ``producer``
  from the ring it read and rejects a record whose ``pseq`` is not its place in the
  ring (BAD_PSEQ), so a client acts only on its own orders.
- `connect(account=A)` binds the slot to account A (default: the slot's own,
  `cells.default_account`); self-trade prevention acts between orders of one account.
  A command with account 0 acts for A; one with another account is REJECTED
  WRONG_ACCOUNT. An account held by another slot (or another slot's default) is refused
  at connect; a slot keeps its account until its next client connects. The supervisor
  grants the binding (its control cell) before the first command; binding to another
  account waits until every command of the slot's previous client is durable, so that
  none of them is checked against it.
- A client maps the control segment read-only; what it writes (its counters, its
  latency row, a binding request) is in its slot's own segment (`engine.clientseg`).
  This holds for clients of this API: a process that maps the engine's segments itself
  (it runs as the engine's user) can write any cell.
- `submit` fills in ``producer``, ``pseq`` (per slot, continuing across clients of the
  same slot) and ``sent_ns`` (now, unless set) and waits for ring space (back-pressure).
- Reports of a command arrive only after it is durable in the WAL. Reports about this
  client's resting orders (maker fills) arrive whenever they happen: read them
  regularly. A report ring left full past the engine's ``--slow-client`` bound gets the
  client disconnected: its next call raises `Disconnected` (its orders are cancelled).
- Submitting while the engine stops raises EngineStopped; what it took is answered. So
  does a submit after the engine's supervisor died (within LIVENESS_S while it waits for
  ring space): its message names the last pseq that had a report. The log may hold
  more than was answered: `logged_pseq(data_dir, slot)` reads the dead engine's last run
  for the slot's highest logged pseq, which a relaunch on that directory keeps; a resend
  to the relaunched engine starts after it (the new engine numbers it anew).
- A submit that times out (RingFull) counts what went into the ring as sent: the next
  command's pseq follows the last one published.
"""

from __future__ import annotations

import time

import numpy as np
import psutil

from shmex.errors import AttachError, RingFull, ShmexError, UsageError
from shmex.engine import cells, clientseg
from shmex.roles import producer_duty
from shmex.engine.latency import NBUCKETS
from shmex.ring import Ring
from shmex.ring import _kernels as ring_kernels
from shmex.schema import COMMAND, GTC, K_CANCEL, K_NEW, K_REPLACE, LIMIT, REPORT, commands, reports
from shmex.shm.names import segment_name
from shmex.shm.segment import Segment


class EngineStopped(ShmexError):
    """The engine is stopping or gone: nothing more is accepted."""


class Disconnected(EngineStopped):
    """The engine disconnected this client: it left its report ring full for longer than
    the engine's --slow-client bound. The slot is left; its orders are cancelled."""


def find_runs() -> list[str]:
    """Run ids of live engines on this machine (those with a control segment)."""
    from shmex.shm.registry import list_runs

    return [r.run_id for r in list_runs() if r.alive and any(s.role == "ctl" for s in r.segments)]


def logged_pseq(data_dir: str, slot: int, *, run: int = -1) -> int:
    """The highest pseq of client slot `slot` among the commands that one run of the log in
    `data_dir` holds (default: its last run; 0 if none). Read it after the engine died and
    before relaunching on the directory, or name the dead run (-2 once a relaunch began)."""
    from shmex.wal import WalReader, manifest

    doc = manifest.read(data_dir)
    runs = doc["runs"] if doc else []
    if not runs:
        raise UsageError(f"{data_dir}: no run in the log's manifest")
    try:
        first = int(runs[run]["first_seq"])
    except IndexError:
        raise UsageError(f"{data_dir}: run {run}: the manifest lists {len(runs)} runs") from None
    k = run % len(runs)
    until = int(runs[k + 1]["first_seq"]) - 1 if k + 1 < len(runs) else None
    last = 0
    for cmds in WalReader(data_dir).commands(first, until):
        mine = cmds["pseq"][cmds["producer"] == slot + 1]     # a slot's producer id is the slot + 1
        if len(mine):
            last = max(last, int(mine.max()))
    return last


def connect(name: str | None = None, *, account: int | None = None, timeout_s: float = 60.0,
            wait: str = "block") -> "Client":
    """Attach to the running engine `name` (or the only one running) as a producer whose
    commands act for `account` (None: the slot's default account).

    Waits up to `timeout_s` for the engine to exist and be running (warm-up included).
    """
    if account is not None and not (isinstance(account, (int, np.integer)) and 0 <= account <= cells.ACCOUNT_MAX):
        raise UsageError(f"account: {account!r} is not an integer in [0, {cells.ACCOUNT_MAX}]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if name is None:
                runs = find_runs()
                if len(runs) != 1:
                    raise AttachError(f"{len(runs)} engines running ({', '.join(runs) or 'none'}): "
                                      f"name the one to attach to")
                name = runs[0]
            return Client(name, account=account, wait=wait, deadline=deadline)
        except AttachError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


LIVENESS_S = 0.25   # a submit waiting for ring space checks the engine is alive this often


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed supervisor its parent has not reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Client:
    def __init__(self, run_id: str, *, account: int | None = None, wait: str = "block",
                 deadline: float | None = None):
        self.run_id = run_id
        self._cnt = None
        seg = Segment.attach(segment_name(run_id, "ctl"), layout="ctl", read_only=True)
        self._seg = seg
        self._supervisor_pid = seg.info.creator_pid
        head = seg.view(0, np.int64, cells.PROC_BASE)
        producers, clients = int(head[cells.CFG_PRODUCERS]), int(head[cells.CFG_CLIENTS])
        proc_slots = int(head[cells.CFG_PROC_SLOTS])
        P = producers + clients + int(head[cells.CFG_GATEWAYS])   # the gateway's slot comes last
        del head
        self._ctl = seg.view(0, np.int64, cells.ctl_cells(proc_slots, P))
        while ring_kernels._load(self._ctl, cells.PHASE) == cells.PH_STARTING:
            if deadline is not None and time.monotonic() > deadline:
                self.close()
                raise AttachError(f"engine {run_id}: still starting")
            time.sleep(0.02)
        self._check_running()
        self._in = self._rep = None
        for k in range(producers, P):
            try:
                self._in = Ring.attach(Ring.name_for(run_id, cells.in_role(k)), COMMAND, side="producer", wait=wait)
            except AttachError:
                continue
            try:
                self._rep = Ring.attach(Ring.name_for(run_id, cells.rep_role(k)), REPORT, side="consumer", wait=wait)
            except AttachError:
                self._in.close()
                self._in = None
                continue
            if self._predecessor_open(k, proc_slots):
                self._in.close()
                self._rep.close()
                self._in = self._rep = None
                continue
            self.slot = k
            break
        if self._in is None:
            self.close()
            raise AttachError(f"engine {run_id}: all {clients} client slots are taken "
                              f"(launch with more --clients), or a slot's last session is being closed out")
        self.producer = self.slot + 1
        try:       # what this client writes: its slot's own segment
            self._cseg = Segment.attach(segment_name(run_id, clientseg.role(self.slot)), layout=clientseg.LAYOUT)
            self._own = clientseg.cells_of(self._cseg)
            self._cnt = self._own[:cells.PROD_CELLS]
            self._hist = self._own[clientseg.HIST:clientseg.HIST + NBUCKETS]
            self.account = self._bind(account, proc_slots, deadline)
        except BaseException:
            self.close()
            raise
        self._cnt[cells.C_LAST_ANSWERED] = self._in.published_seq   # earlier clients' commands
        self._pseq = self._in.published_seq                      # the slot's sequence goes on
        self._next_cid = 1
        self._one = commands(1)
        self._rbuf = reports(4096)
        # a new session: the predecessor's reports are not this client's. With cancel-on-
        # disconnect its last command is the CANCEL_ALL of its orders (pseq _pseq): every
        # report before this session's first own one (pseq > _pseq) is the predecessor's
        # (one router, in seq order; no order of this session has a report before its own)
        self._session = self._rep.consumer_attaches
        self._evicted_cell = cells.prod_base(proc_slots, self.slot) + cells.C_EVICTED
        self._wait_routed(proc_slots, deadline)
        self._skip_to = self._pseq if int(ring_kernels._load(self._ctl, cells.CFG_CANCEL_ON_DISCONNECT)) else 0
        if not self._skip_to:
            stale = self._rep.consume(self._rbuf)                 # a previous client's leftovers
            while stale:
                stale = self._rep.consume(self._rbuf)

    def _wait_routed(self, proc_slots: int, deadline: float | None) -> None:
        """Until the publisher delivers to this slot again (after a reader that went away or
        was disconnected): reports of commands sent before would be dropped."""
        cell = cells.prod_base(proc_slots, self.slot) + cells.C_UNROUTED
        while int(ring_kernels._load(self._ctl, cell)):
            self._check_running()
            if deadline is not None and time.monotonic() > deadline:
                self.close()
                raise AttachError(f"engine {self.run_id}: slot {self.slot}: the publisher does not "
                                  f"deliver to it yet")
            time.sleep(0.002)

    def _predecessor_open(self, k: int, proc_slots: int) -> bool:
        """With cancel-on-disconnect: the slot's previous session is not closed out yet (its
        orders not yet cancelled by the supervisor): this client must not take the slot."""
        if not int(ring_kernels._load(self._ctl, cells.CFG_CANCEL_ON_DISCONNECT)):
            return False
        # ORDER: acquire: after the supervisor's publish of the CANCEL_ALL
        closed = int(ring_kernels._load(self._ctl, cells.prod_base(proc_slots, k) + cells.C_SESSIONS_CLOSED))
        return self._in.producer_attaches - 1 > closed

    def _bind(self, account: int | None, proc_slots: int, deadline: float | None) -> int:
        """Bind this slot to `account` (None: the slot's default); -> it. The supervisor
        grants it (`clientseg.Binds`: one slot per account, the defaults each slot's own);
        the slot's current account needs no request."""
        account = cells.default_account(self.slot) if account is None else int(account)
        b = cells.prod_base(proc_slots, self.slot)
        if int(ring_kernels._load(self._ctl, b + cells.C_ACCOUNT)) == account:
            return account
        req = int(self._own[clientseg.BIND_REQUEST]) + 1     # the segment outlives sessions: never reused
        if 0 <= account <= cells.ACCOUNT_MAX:
            self._own[clientseg.WANT_ACCOUNT] = account
        else:
            self._own[clientseg.WANT_ACCOUNT] = -1           # refused as out of range
        # ORDER: release: WANT_ACCOUNT before the request; pairs with the supervisor's acquire
        ring_kernels._store(self._own, clientseg.BIND_REQUEST, req)
        # ORDER: acquire: the answer's result and account cells are visible after it
        while int(ring_kernels._load(self._ctl, b + cells.C_BIND_ANSWERED)) != req:
            self._check_running()
            if deadline is not None and time.monotonic() > deadline:
                raise AttachError(f"engine {self.run_id}: slot {self.slot}: binding account {account} not "
                                  f"answered yet (the previous client's commands not yet durable?)")
            time.sleep(0.001)
        result = int(self._ctl[b + cells.C_BIND_RESULT])
        if result != clientseg.BOUND:
            raise UsageError(clientseg.refusal(result, account, self.slot, int(self._ctl[b + cells.C_BIND_HELD_BY])))
        return account

    # -- sending -----------------------------------------------------------------------------
    def _check_running(self) -> None:
        """EngineStopped when the engine stops or its supervisor is gone (a killed
        supervisor leaves PHASE as it was: its pid, in the control segment's header, tells)."""
        self._check_evicted()
        ph = int(ring_kernels._load(self._ctl, cells.PHASE))
        if ph >= cells.PH_STOPPING:
            raise EngineStopped(f"engine {self.run_id} is stopping")
        if not _alive(self._supervisor_pid):
            raise EngineStopped(f"engine {self.run_id}: its supervisor (pid {self._supervisor_pid}) is gone; "
                                f"commands after pseq {self._pseq_acked()} may not be in its log "
                                f"(shmex.client.logged_pseq(data_dir, {self.slot}) reads the last one it holds)")

    def _check_evicted(self) -> None:
        session = getattr(self, "_session", None)
        if session is None:
            return
        if self._ctl is None:
            raise EngineStopped(f"engine {self.run_id}: this client is closed")
        if int(ring_kernels._load(self._ctl, self._evicted_cell)) == session:
            slot = self.slot
            self.close()              # the slot's lock goes: the supervisor cancels its orders
            raise Disconnected(f"engine {self.run_id}: slot {slot} was disconnected: its report ring "
                               f"stayed full past the engine's --slow-client bound (read reports regularly)")

    def _pseq_acked(self) -> int:
        """The last pseq of this slot that had a report (what a resend starts after)."""
        return int(self._cnt[cells.C_LAST_ANSWERED]) if self._cnt is not None else 0

    def submit(self, records: np.ndarray, *, timeout_s: float | None = 10.0) -> np.ndarray:
        """Send COMMAND records (an array or one record); -> their pseq values."""
        if isinstance(records, np.void):
            self._one[0] = records
            records = self._one
        if not isinstance(records, np.ndarray) or records.dtype != COMMAND or records.ndim != 1:
            raise UsageError(f"submit: want a 1-D array of shmex.schema.COMMAND, got "
                             f"{getattr(records, 'dtype', type(records).__name__)}")
        self._check_running()
        recs = np.ascontiguousarray(records).copy()
        n = len(recs)
        recs["producer"] = self.producer
        recs["pseq"] = np.arange(self._pseq + 1, self._pseq + 1 + n, dtype=np.uint64)
        now = time.monotonic_ns()
        recs["sent_ns"] = np.where(recs["sent_ns"] == 0, now, recs["sent_ns"])
        recs["seq"] = 0
        recs["engine_ns"] = 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done = 0
        try:
            while done < n:   # in slices: a dead engine is noticed within LIVENESS_S
                left = LIVENESS_S if deadline is None else min(LIVENESS_S, deadline - time.monotonic())
                try:
                    done += self._in.publish(recs[done:], wait=True, timeout_s=max(left, 0.0))
                except RingFull as e:
                    done += e.published
                    self._check_running()
                    if deadline is not None and time.monotonic() >= deadline:
                        e.published = done
                        raise
        finally:   # what went into the ring is sent: the next pseq follows it
            self._pseq += done
            self._cnt[cells.C_SENT] += done
            if done and self._cnt[cells.C_FIRST_SENT_NS] == 0:
                self._cnt[cells.C_FIRST_SENT_NS] = now
        return recs["pseq"].copy()

    def new_order(self, side, price: int, qty: int, *, symbol: int = 0, order_type=LIMIT, tif=GTC,
                  stp: int = 0, account: int = 0, client_id: int | None = None) -> int:
        """Send one NEW order; -> its client id (chosen here unless given). account 0: the
        slot's; another one is rejected WRONG_ACCOUNT unless the slot is multi-account."""
        if client_id is None:
            client_id = self._next_cid
            self._next_cid += 1
        c = commands(1)
        c["kind"], c["side"], c["order_type"], c["tif"], c["stp"] = K_NEW, int(side), int(order_type), int(tif), int(stp)
        c["symbol"], c["account"], c["client_id"], c["price"], c["qty"] = symbol, account, client_id, price, qty
        self.submit(c)
        return int(client_id)

    def cancel(self, client_id: int, *, symbol: int = 0) -> int:
        """Cancel one of this client's orders; -> the command's pseq."""
        c = commands(1)
        c["kind"], c["symbol"], c["client_id"] = K_CANCEL, symbol, client_id
        return int(self.submit(c)[0])

    def replace(self, client_id: int, price: int, qty: int, *, symbol: int = 0) -> int:
        c = commands(1)
        c["kind"], c["symbol"], c["client_id"], c["price"], c["qty"] = K_REPLACE, symbol, client_id, price, qty
        return int(self.submit(c)[0])

    # -- reading -----------------------------------------------------------------------------
    def reports(self, timeout_s: float = 0.0, max_records: int = 4096) -> np.ndarray:
        """The reports waiting now (after up to `timeout_s` for the first one); a copy."""
        self._check_evicted()
        buf = self._rbuf if max_records <= len(self._rbuf) else reports(max_records)
        n = self._rep.consume(buf[:max_records], wait=timeout_s > 0, timeout_s=timeout_s or None)
        got = buf[:n]
        if n and self._skip_to:
            got = got[self._predecessors(got):]
        if len(got):
            producer_duty.scan_reports(got, len(got), time.monotonic_ns(), self._cnt, self._hist)
        return got.copy()

    def _predecessors(self, reps: np.ndarray) -> int:
        """How many of these reports, at the start, are the previous session's."""
        own = np.flatnonzero(reps["pseq"] > np.uint64(self._skip_to))
        if not len(own):
            return len(reps)
        self._skip_to = 0
        return int(own[0])

    def wait_answers(self, pseqs, timeout_s: float = 10.0) -> np.ndarray:
        """Read until every command in `pseqs` has had a report; -> all reports read."""
        want = set(int(p) for p in np.atleast_1d(pseqs))
        got = []
        deadline = time.monotonic() + timeout_s
        while want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no report yet for pseq {sorted(want)[:5]}...")
            r = self.reports(timeout_s=min(left, 0.1))
            got.append(r)
            want -= set(int(p) for p in r["pseq"])
        return np.concatenate(got) if got else reports(0)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the slot (another client may take it). Idempotent."""
        self._hist = self._cnt = self._ctl = None
        for r in (getattr(self, "_in", None), getattr(self, "_rep", None)):
            if r is not None:
                r.close()
        self._in = self._rep = None
        self._own = None
        for s in (getattr(self, "_cseg", None), getattr(self, "_seg", None)):
            if s is not None:
                s.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

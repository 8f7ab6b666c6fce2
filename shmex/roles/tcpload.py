"""The load over TCP (``shmex launch --via tcp``): members that log in at the gateway over
SoupBinTCP and send OUCH Enter Orders, so that the run's tick-to-trade includes the network.

One process drives many sessions from one selector loop; frames are built and the
answers scanned in numba (no Python per message). Each session sends buy/sell pairs at
one price of its instrument, so every second order trades with the one before it and the
book stays small.

- Full speed (``rate`` None): each session keeps at most ``window`` orders unanswered.
- Open loop (``rate`` orders/s over all sessions): order i of a session is due at
  ``t0 + i * period``; its latency runs from that intended time to the arrival of its
  first answer (Accepted or Rejected), so a stall anywhere is counted (no coordinated
  omission). At full speed the intended time is the send time.

Latency is what a member sees: client send -> gateway -> matcher -> durable -> OUCH
answer read by the client. As a role it writes that histogram into the gateway slot's
tick-to-trade row (the gateway then keeps its own view to itself), so the run's summary,
progress line, ``--hgrm`` and ``--plot`` show the members' figures. It logs in users of
its own (``prepare``: a users file and a fresh password in ``DATA_DIR/tcp-load/``). It
does not reconnect: ``shmex drill --targets gateway`` has the member that does.
``shmex bench gateway`` drives the same sessions (`drive`) from its own process.
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import time

import numpy as np
from numba import njit

from shmex.engine import cells
from shmex.engine.ctl import Aborted
from shmex.engine.latency import NBUCKETS, bucket_of
from shmex.net import soup

FRAME = 50                     # an Enter Order in an Unsequenced Data packet: 2 + 1 + 47
CHUNK = 1024                   # frames per send
DUE_RING = 1 << 22             # intended times kept of a session with no order count (urn modulo)
STOP_DRAIN_S = 60.0            # after the stop, how long the answers of orders sent are waited for
TICK_S = 0.005                 # the loop's callback (heartbeat, the stop) at least this often


@njit(cache=True, nogil=True)
def fill_enters(buf, urn0, k, sym_key, price, qty):
    """k Enter Order frames of qty shares into buf, UserRefNums urn0.., alternating buy
    and sell."""
    for j in range(k):
        p = j * FRAME
        urn = urn0 + j
        buf[p] = 0
        buf[p + 1] = 48
        buf[p + 2] = 85                          # 'U'
        q = p + 3
        buf[q] = 79                              # 'O'
        for i in range(4):
            buf[q + 1 + i] = (urn >> (8 * (3 - i))) & 0xFF
        buf[q + 5] = 66 if urn % 2 == 1 else 83  # 'B' / 'S'
        for i in range(4):
            buf[q + 6 + i] = (qty >> (8 * (3 - i))) & 0xFF
        for i in range(8):
            buf[q + 10 + i] = (sym_key >> np.uint64(8 * (7 - i))) & np.uint64(0xFF)
        for i in range(8):
            buf[q + 18 + i] = (price >> (8 * (7 - i))) & 0xFF
        buf[q + 26] = 48                         # '0' day
        buf[q + 27] = 89                         # 'Y'
        buf[q + 28] = 65                         # 'A' agency
        buf[q + 29] = 78
        buf[q + 30] = 78
        for i in range(14):
            buf[q + 31 + i] = 32
        buf[q + 45] = 0
        buf[q + 46] = 0


@njit(cache=True, nogil=True)
def scan(buf, n, due, now_ns, hist, counts):
    """Answers in buf[:n]: each order's first one (Accepted 'A' / Rejected 'J') records
    now - its due time (due[(urn - 1) % len(due)], 0 once answered); counts: [answered,
    executed, rejected, other]. -> bytes consumed."""
    p = 0
    while p + 3 <= n:
        ln = (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
        if p + 2 + ln > n:
            break
        if buf[p + 2] == 83 and ln > 1:          # 'S' sequenced data
            t = buf[p + 3]
            if t == 65 or t == 74:               # 'A' accepted, 'J' rejected
                q = p + 3
                urn = (np.int64(buf[q + 9]) << 24) | (np.int64(buf[q + 10]) << 16) | \
                      (np.int64(buf[q + 11]) << 8) | np.int64(buf[q + 12])
                i = (urn - 1) % len(due)
                if urn >= 1 and due[i] > 0:
                    hist[bucket_of(now_ns - due[i])] += 1
                    due[i] = 0
                    counts[0] += 1
                if t == 74:
                    counts[2] += 1
            elif t == 69:                        # 'E'
                counts[1] += 1
            else:
                counts[3] += 1
        p += 2 + ln
    return p


class LoadSession:
    """One logged-in session: orders -1 sends until told to stop."""

    def __init__(self, addr, user: str, password: str, orders: int, sym_key: int, price: int, qty: int = 1):
        self.user = user
        self.sock = socket.create_connection(addr, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(soup.login_request(user, password))
        head = b""
        while len(head) < 33:
            k = self.sock.recv(33 - len(head))
            if not k:
                raise ConnectionError(f"{user}: the gateway closed the connection at login")
            head += k
        if head[2:3] != b"A":
            raise ConnectionRefusedError(f"{user}: login refused ({head[:4]!r})")
        self.sock.setblocking(False)
        self.orders = orders if orders >= 0 else 1 << 62
        self.sent = 0
        self.due = np.zeros(orders if orders >= 0 else DUE_RING, np.int64)
        self.buf = np.zeros(CHUNK * FRAME, np.uint8)
        self.out = b""                           # built frames not yet taken by the socket
        self.rbuf = np.zeros(1 << 20, np.uint8)
        self.fill = 0
        self.sym_key, self.price, self.qty = sym_key, price, qty
        self.counts = np.zeros(4, np.int64)      # answered, executed, rejected, other
        self.last_tx = time.monotonic()
        self.closed = False                      # the gateway closed it (after the stop)

    def unanswered(self) -> int:
        return self.sent - int(self.counts[0])


def run_sessions(addr, users: list[tuple[str, str]], orders_per_session: int, *, rate: float | None = None,
                 window: int = 20_000, targets: list[tuple[int, int, int]], timeout_s: float | None = 600.0,
                 hist: np.ndarray | None = None, tick=None, seconds: float | None = None) -> dict:
    """Drive the sessions until every order is answered; -> figures and the histogram.

    targets: each session's (symbol key, OUCH price, shares). orders_per_session -1: until
    ``seconds`` have passed since the first send, or until ``tick`` (called at least every
    TICK_S) returns True: the stop. After it no order is sent; the answers of those sent
    are read until each is answered, the gateway closes the session, or STOP_DRAIN_S."""
    period = int(1e9 * len(users) / rate) if rate else 0
    if seconds and period and orders_per_session < 0:     # open loop: the orders due within them
        orders_per_session, seconds = -(-int(seconds * 1e9) // period), None
    sessions = [LoadSession(addr, u, p, orders_per_session, *targets[i % len(targets)])
                for i, (u, p) in enumerate(users)]
    sel = selectors.DefaultSelector()
    for s in sessions:
        sel.register(s.sock, selectors.EVENT_READ, s)
    hist = np.zeros(NBUCKETS, np.int64) if hist is None else hist
    t0 = time.monotonic_ns()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    end_ns = t0 + int(seconds * 1e9) if seconds else None
    stopped_at = None
    last_tick = 0.0
    while True:
        now = time.monotonic_ns()
        if stopped_at is None and end_ns is not None and now >= end_ns:
            stopped_at = time.monotonic()
        for s in sessions:
            if s.closed:
                continue
            if s.out:
                try:
                    k = s.sock.send(s.out)
                    s.out = s.out[k:]
                except BlockingIOError:
                    continue
                if s.out:
                    continue
            if s.sent >= s.orders or stopped_at is not None:
                continue
            if period:
                want = min(s.orders, (now - t0) // period + 1) - s.sent
            else:
                want = min(s.orders - s.sent, window - s.unanswered())
            k = int(min(want, CHUNK, len(s.due) - s.unanswered()))
            if k <= 0:
                continue
            fill_enters(s.buf, s.sent + 1, k, s.sym_key, s.price, s.qty)
            idx = np.arange(s.sent, s.sent + k, dtype=np.int64)
            s.due[idx % len(s.due)] = t0 + idx * period if period else now
            s.sent += k
            data = s.buf[:k * FRAME].tobytes()
            try:
                m = s.sock.send(data)
            except BlockingIOError:
                m = 0
            s.out = data[m:]
            s.last_tx = time.monotonic()
        events = sel.select(0)        # epoll waits in whole milliseconds: poll, nap below
        if not events and period:
            time.sleep(20e-6)
        for key, _ in events:
            s = key.data
            try:
                k = s.sock.recv_into(memoryview(s.rbuf)[s.fill:])
            except BlockingIOError:
                continue
            except ConnectionResetError:
                k = 0
            if k == 0:
                if stopped_at is None:
                    raise ConnectionError(f"{s.user}: the gateway closed the session "
                                          f"({s.unanswered():,} of its {s.sent:,} orders unanswered)")
                s.closed = True                  # the gateway's stop: what it did not read is not taken
                sel.unregister(s.sock)
                continue
            s.fill += k
            used = scan(s.rbuf, s.fill, s.due, time.monotonic_ns(), hist, s.counts)
            rest = s.fill - used
            s.rbuf[:rest] = s.rbuf[used:s.fill]
            s.fill = rest
        mono = time.monotonic()
        if tick is not None and mono - last_tick >= TICK_S:
            last_tick = mono
            if tick(sum(s.sent for s in sessions), sum(int(s.counts[0]) for s in sessions)) and stopped_at is None:
                stopped_at = mono
        if all(s.closed or (s.unanswered() == 0 and (s.sent >= s.orders or stopped_at is not None))
               for s in sessions):
            break
        if stopped_at is not None and mono - stopped_at > STOP_DRAIN_S:
            break
        if deadline is not None and mono > deadline:
            raise TimeoutError(f"{sum(int(s.counts[0]) for s in sessions):,} of "
                               f"{sum(s.sent for s in sessions):,} orders answered within {timeout_s:.0f} s")
        if mono - max(s.last_tx for s in sessions) > 0.8:
            for s in sessions:                   # heartbeats while waiting for answers
                if not s.closed:
                    s.sock.send(soup.CLIENT_HEARTBEAT)
                s.last_tx = time.monotonic()
    wall = (time.monotonic_ns() - t0) / 1e9
    for s in sessions:
        try:
            if not s.closed:
                s.sock.setblocking(True)
                s.sock.sendall(soup.LOGOUT)
        except OSError:
            pass
        s.sock.close()
    counts = sum(s.counts for s in sessions)
    sent = sum(s.sent for s in sessions)
    return dict(orders=sent, answered=int(counts[0]), sessions=len(sessions), wall_s=wall,
                orders_per_s=int(counts[0]) / wall, executed=int(counts[1]), rejected=int(counts[2]),
                hist=hist, stopped=stopped_at is not None)


def symbol_key(name: str) -> int:
    return int.from_bytes(name.encode().ljust(8), "big")


def warm() -> None:
    buf = np.zeros(FRAME, np.uint8)
    fill_enters(buf, 1, 1, np.uint64(symbol_key("WARM")), 100, 1)
    scan(buf, 0, np.zeros(1, np.int64), 0, np.zeros(NBUCKETS, np.int64), np.zeros(4, np.int64))


# -- the role ------------------------------------------------------------------------------

LOAD_DIR = "tcp-load"
ACCOUNT_BASE = 900_000            # the load users' accounts: ACCOUNT_BASE + session


def _paths(data_dir: str) -> tuple[str, str]:
    d = os.path.join(data_dir, LOAD_DIR)
    return os.path.join(d, "users.csv"), os.path.join(d, "password")


def user_names(cfg) -> list[str]:
    return [f"load{i}" for i in range(cfg.tcp_sessions)]


def prepare(cfg):
    """The load's users, each with a fresh password (hashed in the users file the gateway
    reads; in the clear, 0600, for this role) -> the config whose gateway has them."""
    from shmex.files import make_private_dir, replace_durably
    from shmex.net.users import hash_password

    users, pw_path = _paths(cfg.data_dir)
    make_private_dir(os.path.dirname(users))
    password = secrets.token_hex(5)                      # 10 characters: SoupBinTCP's field
    h = hash_password(password)
    replace_durably(pw_path, password.encode())
    replace_durably(users, "".join(f"{u}, {ACCOUNT_BASE + i}, {h}\n"
                                   for i, u in enumerate(user_names(cfg))).encode())
    return cfg.replace(users_file=users)


def targets(cfg) -> list[tuple[int, int, int]]:
    """Each session's (symbol key, OUCH price, shares): the instruments in turn, at the
    middle of the band on the tick, one lot."""
    from shmex.net import instruments

    out = []
    for ins in instruments.load(cfg.symbols_path):
        mid = (ins.lo + ins.hi) // 2 // ins.tick * ins.tick
        out.append((symbol_key(ins.name), mid, ins.lot))
    return out


def run(cfg, ctl, me, index: int = 0) -> int:
    from shmex.engine.latency import hist_views
    from shmex.ring import Ring
    from shmex.roles.gateway import read_address
    from shmex.shm.segment import Segment

    base = cells.proc_cell(me.slot, cells.P_ROLE)
    with open(_paths(cfg.data_dir)[1]) as f:
        password = f.read().strip()
    aim = targets(cfg)
    hseg = Segment.attach(Ring.name_for(cfg.run_id, "hist"), layout="hist")
    t2t, stages, dtab = hist_views(hseg, cfg.producer_slots)
    hist = t2t[cfg.gateway_slot]              # the gateway keeps its own view apart (via tcp)
    del t2t, stages, dtab
    warm()
    me.ready()
    try:
        me.wait_go()
        addr = read_address(cfg.data_dir, cfg.run_id)
        while addr is None:                   # the gateway listens once the run goes
            me.beat()
            ctl.check()
            time.sleep(0.005)
            addr = read_address(cfg.data_dir, cfg.run_id)
        ctl.store(base + cells.T_PORT, addr[1])

        def tick(sent: int, answered: int) -> bool:
            me.beat()
            ctl.check()
            ctl.store(base + cells.T_SENT, sent)
            ctl.store(base + cells.T_ANSWERED, answered)
            return ctl.phase >= cells.PH_STOPPING

        n = cfg.tcp_sessions
        per = -1 if cfg.orders is None else cfg.orders // n
        names = user_names(cfg)
        ctl.store(base + cells.T_SESSIONS, n)
        r = run_sessions(addr, [(u, password) for u in names], per, rate=cfg.rate, targets=aim,
                         timeout_s=None, hist=hist, tick=tick, seconds=cfg.tcp_duration)
        del r["hist"]                          # a view of the shared segment
        for cell, key in ((cells.T_SENT, "orders"), (cells.T_ANSWERED, "answered"),
                          (cells.T_REJECTED, "rejected"), (cells.T_EXECUTED, "executed")):
            ctl.store(base + cell, r[key])
        ctl.store(base + cells.T_DONE, 1)     # sent and answered: the run may stop
        # the stop: the gateway closes the sessions it was serving; this one waits for it
        while ctl.phase < cells.PH_STOPPING:
            me.beat()
            ctl.check()
            time.sleep(0.01)
    except Aborted:
        pass
    finally:
        del hist
        hseg.close()
    return 0


def report(cfg, ctl, base: int) -> tuple[dict, str]:
    """The run summary's part: the members' orders and their answers."""
    c = {k: int(ctl[base + i]) for k, i in (("sessions", cells.T_SESSIONS), ("sent", cells.T_SENT),
                                           ("answered", cells.T_ANSWERED), ("rejected", cells.T_REJECTED),
                                           ("executed", cells.T_EXECUTED), ("port", cells.T_PORT),
                                           ("done", cells.T_DONE))}
    un = c["sent"] - c["answered"]
    doc = {**c, "checks": {"tcp_orders_answered": un == 0 and c["rejected"] == 0}}
    host = cfg.gateway_address()[0]
    line = (f"{c['sessions']} members over TCP to {host}:{c['port']} (OUCH 5.0 on SoupBinTCP): "
            f"{c['sent']:,} Enter Orders sent, {c['answered']:,} answered ({c['rejected']:,} rejected), "
            f"{c['executed']:,} Executed messages read; tick-to-trade above is theirs (client send -> "
            f"OUCH answer read)" + (f"; {un:,} UNANSWERED" if un else ""))
    return doc, line

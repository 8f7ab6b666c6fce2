"""The gateway process: members trade over TCP with OUCH 5.0 on SoupBinTCP 4.x.

One process serves many sessions from one epoll loop. Each turn of the loop is a group:

1. read every readable socket (many frames per ``recv``) and decode the frames in numba
   (`net.ouch.decode`): COMMAND records for the gateway's producer slot, OUCH rejects;
2. take the reports waiting on the gateway's report ring and encode them (`on_reports`):
   one OUCH message per report, on the stream of the user the order belongs to;
3. append each user's new 'S' packets to its stream file, then write the group's journal
   records and commit (`net.journal`), then publish the commands to the input ring and
   release the report ring up to the commit;
4. send each session what its stream holds past what it was sent (``sendfile`` from the
   stream file: a resend after a reconnect and a live send are the same call).

Sessions: a login names a user of the users file and its password; the requested
session must be blank or this run's; the requested sequence number n resends from
message n (0: from the next one). One session per user at a time. Heartbeats after 1 s
without sending; a session silent for ``gateway_idle_s`` is dropped; a connection that
does not log in within LOGIN_TIMEOUT_S is closed; a host that failed FAIL_LIMIT logins
within FAIL_WINDOW_S is refused without a password check. A protocol error (a bad length,
an unknown packet or message type) closes that session with a logged reason; the others
go on. When a session goes away its user's orders are cancelled unless the users file
says otherwise.

Exactly once: the engine answers commands only once they are durable; the journal holds
what the gateway applied, so a restarted gateway (the supervisor restarts it) rebuilds
the same state, republishes committed commands the ring had not taken yet, skips reports
it had already journaled, and every stream resumes where its file ends. A UserRefNum that
does not increase is ignored, so a client that resends what it had no answer for gets
each order applied once, and its answer from the stream.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import sys
import time
from collections import deque

import numpy as np

from shmex.engine import cells
from shmex.engine.ctl import Aborted, Backoff, Ctl, shares_core
from shmex.net import instruments, journal as jnl, ouch, soup, users as users_mod
from shmex.ring import Ring
from shmex.roles import producer_duty
from shmex.schema import COMMAND, REPORT, reports

RBUF = 1 << 16                  # receive buffer per session
RBATCH = 4096                   # reports taken per turn
CMD_BATCH = 8192                # commands decoded per group (plus room for one user's cancels)
LOGIN_TIMEOUT_S = 5.0
HEARTBEAT_S = 1.0
FAIL_LIMIT, FAIL_WINDOW_S = 5, 10.0
MAX_SESSIONS = 1024
STOP_FLUSH_S = 2.0              # at the stop, how long sessions get to take their last messages
NS_PER_DAY = 86_400 * 1_000_000_000


def _log(msg: str) -> None:
    print(f"gateway: {msg}", file=sys.stderr, flush=True)


def ouch_timestamp() -> int:
    """OUCH timestamps: nanoseconds since midnight (UTC)."""
    return time.time_ns() % NS_PER_DAY


def journal_dir(cfg) -> str:
    return os.path.dirname(address_path(cfg.data_dir, cfg.run_id))


def address_path(data_dir: str, run_id: str) -> str:
    return os.path.join(data_dir, "gateway", run_id, "address")


def read_address(data_dir: str, run_id: str) -> tuple[str, int] | None:
    """The address the run's gateway listens on (it writes it once bound), or None."""
    try:
        with open(address_path(data_dir, run_id)) as f:
            host, _, port = f.read().strip().rpartition(":")
        return host, int(port)
    except (FileNotFoundError, ValueError):
        return None


def wait_address(data_dir: str, run_id: str, proc=None, timeout_s: float = 600.0) -> tuple[str, int]:
    """Wait until the run's gateway listens; -> its address. Fails if `proc` (the launch,
    a Popen) exits first, or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        addr = read_address(data_dir, run_id)
        if addr is not None:
            return addr
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the engine exited ({proc.returncode}) before its gateway listened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no gateway address in {address_path(data_dir, run_id)} within {timeout_s:.0f} s")
        time.sleep(0.1)


def _after(cmds: np.ndarray, published: int) -> np.ndarray:
    """The commands of a replayed record that the input ring has not taken (a copy)."""
    return cmds[cmds["pseq"] > published]


class Session:
    __slots__ = ("sock", "fd", "peer", "buf", "fill", "user", "t_open", "last_rx", "last_tx",
                 "send_off", "ctrl", "writing")

    def __init__(self, sock: socket.socket, peer, now: float):
        self.sock, self.fd, self.peer = sock, sock.fileno(), peer
        self.buf = np.zeros(RBUF, np.uint8)
        self.fill = 0
        self.user = -1
        self.t_open = self.last_rx = self.last_tx = now
        self.send_off = 0          # bytes of the user's stream sent
        self.ctrl = b""            # session packets (login answer, heartbeat, end) not yet sent
        self.writing = False       # registered for EVENT_WRITE

    def name(self, users) -> str:
        who = users[self.user].name if self.user >= 0 else "-"
        return f"{who}@{self.peer[0]}:{self.peer[1]}"


class Gateway:
    def __init__(self, cfg, ctl: Ctl, me, inr: Ring, rep: Ring):
        self.cfg, self.ctl, self.me, self.inr, self.rep = cfg, ctl, me, inr, rep
        self.instruments = instruments.load(cfg.symbols_path)
        self.users = users_mod.load(cfg.users_path)
        self.by_name = {u.name: u for u in self.users}
        keys, nums = instruments.table(self.instruments)
        self.st = ouch.new_state([u.account for u in self.users], keys, nums, producer=cfg.gateway_slot + 1,
                                 capacity=cfg.gateway_orders, max_open=cfg.gateway_max_open,
                                 inflight=max(1 << 20, 4 * cfg.ring_in))
        self.out = ouch.new_out(CMD_BATCH + cfg.gateway_max_open, max(RBATCH, CMD_BATCH))
        nu = len(self.users)
        self.pack = np.zeros(len(self.out.obuf), np.uint8)
        self.ubytes = np.zeros(nu, np.int64)
        self.ucount = np.zeros(nu, np.int64)
        self.mlen = np.zeros(len(self.out.omsg), np.int64)
        self.rbuf = reports(RBATCH)
        self.journal = jnl.Journal(journal_dir(cfg), nu)
        self.offs = [np.zeros(1024, np.int64) for _ in range(nu)]     # message n-1 starts at offs[u][n-1]
        self.nmsg = np.zeros(nu, np.int64)
        self.active: list[Session | None] = [None] * nu
        self.sessions: dict[int, Session] = {}
        self.failures: dict[str, deque] = {}
        self.pending: deque = deque()            # committed commands the ring has not taken
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.cnt = ctl.producer_block(cfg.gateway_slot)
        self.hist = None                         # the slot's tick-to-trade row
        self.h_queue = self.h_report = self.dtab = None   # its stage rows, the durable table
        self.taking_input = True                 # False from the stop on: no new command is made
        self.stats = dict(sessions=0, logins=0, refused=0, protocol_errors=0, published=0)

    # -- start ---------------------------------------------------------------------------
    def recover(self) -> None:
        """Rebuild the state from the journal; queue committed commands the ring lacks."""
        st, out = self.st, self.out
        published = self.inr.published_seq
        again = []
        for typ, a, payload, ts, now in self.journal.records:
            st.g[ouch.G_TS], st.g[ouch.G_NOW] = ts, now
            if typ == jnl.T_IN:
                buf = np.frombuffer(payload, np.uint8).copy()
                pos = 0
                while pos < len(buf):
                    ouch.reset_out(st)
                    pos, status = ouch.decode(st, out, buf, pos, len(buf), a)
                    again.append(_after(out.cmds[:st.g[ouch.G_NC]], published))
                    if status != ouch.FULL and pos < len(buf):
                        raise jnl.JournalError(f"{self.journal.path}: an inbound record of user {a} "
                                               f"does not decode (status {status} at byte {pos})")
            elif typ == jnl.T_REP:
                _, reps = jnl.parse_reports(payload)
                for i in range(0, len(reps), len(out.omsg)):
                    ouch.reset_out(st)
                    chunk = reps[i:i + len(out.omsg)]
                    ouch.on_reports(st, out, chunk, len(chunk))
            elif typ == jnl.T_DISC:
                ouch.reset_out(st)
                ouch.cancel_all(st, out, a)
                again.append(_after(out.cmds[:st.g[ouch.G_NC]], published))
        ouch.reset_out(st)
        later = np.concatenate(again) if again else np.zeros(0, COMMAND)
        if len(later):
            self.pending.append(later)
        if st.g[ouch.G_NEXT_PSEQ] <= published:
            raise jnl.JournalError(f"{self.journal.path}: the journal ends at pseq {st.g[ouch.G_NEXT_PSEQ] - 1} "
                                   f"but the input ring holds {published}")
        for u in range(len(self.users)):                # message offsets from the stream files
            n = self.journal.lengths[u]
            if n:
                data = np.fromfile(self.journal.stream_path(u), np.uint8, count=n)
                offs = ouch.frame_offsets(data, n)
                self.offs[u] = np.concatenate([offs, np.zeros(1024, np.int64)])
                self.nmsg[u] = len(offs)
        skip = self.journal.rep_upto - self.rep.read_seq   # reports journaled before a crash
        while skip > 0:
            k = self.rep.consume(self.rbuf[:min(skip, RBATCH)], release=False)
            skip -= k
        if self.journal.rep_upto > self.rep.released_seq:
            self.rep.release(self.journal.rep_upto)
        self._begin_group()
        lost = [u.index for u in self.users if u.cancel_on_disconnect and self.st.uopen[u.index] > 0]
        for u in lost:                            # their sessions went with the predecessor
            self._cancel_user(u)
        self._flush()
        if self.journal.records:
            _log(f"resumed from its journal: {len(self.journal.records)} records, "
                 f"{int(self.nmsg.sum())} messages on {int((self.nmsg > 0).sum())} streams, "
                 f"{len(later)} commands to publish again")

    def listen(self) -> tuple[str, int]:
        prev = read_address(self.cfg.data_dir, self.cfg.run_id)
        host, port = self.cfg.gateway_address()
        if prev is not None:
            host, port = prev                     # a restarted gateway keeps its address
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(256)
        ls.setblocking(False)
        self.listener = ls
        self.sel.register(ls, selectors.EVENT_READ, None)
        addr = ls.getsockname()[:2]
        path = address_path(self.cfg.data_dir, self.cfg.run_id)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{addr[0]}:{addr[1]}\n")
        os.replace(tmp, path)
        return addr

    # -- the loop ------------------------------------------------------------------------
    def loop(self) -> None:
        ctl = self.ctl
        stopping_since = None
        last_timers = 0.0
        # idle: poll, yield, then nap; epoll's timeout has only millisecond steps, and a
        # report arriving on the ring wakes no socket, so the loop polls both itself
        backoff = Backoff(shares_core(), yield_ns=50_000)
        while True:
            self.me.beat()
            ctl.check()
            if stopping_since is None and ctl.phase >= cells.PH_STOPPING:
                stopping_since = time.monotonic()
                self.taking_input = False
                self._stop_listening()
            events = self.sel.select(0)
            now = time.monotonic()
            self._begin_group()
            for key, mask in events:
                s = key.data
                if s is None:
                    self._accept(now)
                    continue
                if mask & selectors.EVENT_WRITE:
                    self._send(s, now)
                if mask & selectors.EVENT_READ and s.fd in self.sessions and stopping_since is None:
                    if not self.pending:         # a full input ring: TCP holds the rest
                        self._read(s, now)
            took = self._take_reports()
            self._flush()
            for s in list(self.sessions.values()):
                if s.user >= 0 and (s.send_off < self.journal.committed[s.user] or s.ctrl) and not s.writing:
                    self._send(s, now)
            if events or took or self.pending:
                backoff.reset()
            else:
                backoff.idle()
            if now - last_timers >= 0.1:
                last_timers = now
                self._timers(now)
            if stopping_since is not None:
                if self.pending:
                    self._publish()
                else:
                    ctl.store(ctl.prod_cell(self.cfg.gateway_slot, cells.C_SENDING_DONE), 1)
                done = (not self.pending and ctl.load(cells.PUB_DONE)
                        and self.rep.published_seq == self.rep.read_seq)
                if done or now - stopping_since > 60:
                    self._final_flush()
                    return

    def _begin_group(self) -> None:
        self.st.g[ouch.G_TS] = ouch_timestamp()
        self.st.g[ouch.G_NOW] = time.monotonic_ns()

    def _flush(self) -> None:
        """Commit the group: streams, journal records + commit, then publish, release."""
        st = self.st
        nm, nc = int(st.g[ouch.G_NM]), int(st.g[ouch.G_NC])
        if nm:
            self._write_streams(nm)
        self.journal.commit(self.rep.read_seq, int(st.g[ouch.G_TS]))
        if nc:
            self.pending.append(self.out.cmds[:nc].copy())
        ouch.reset_out(st)
        if self.rep.read_seq > self.rep.released_seq:
            self.rep.release(self.rep.read_seq)
        self._publish()
        self._begin_group()

    def _write_streams(self, nm: int) -> None:
        ouch.pack_by_user(self.out, nm, self.pack, self.ubytes, self.ucount, self.mlen)
        b = m = 0
        for u in np.flatnonzero(self.ucount):
            u = int(u)
            nb, k = int(self.ubytes[u]), int(self.ucount[u])
            base = self.journal.lengths[u]
            sizes = self.mlen[m:m + k]
            starts = base + np.concatenate(([0], np.cumsum(sizes[:-1])))
            n0 = int(self.nmsg[u])
            if n0 + k > len(self.offs[u]):
                grown = np.zeros(max(2 * len(self.offs[u]), n0 + k), np.int64)
                grown[:n0] = self.offs[u][:n0]
                self.offs[u] = grown
            self.offs[u][n0:n0 + k] = starts
            self.nmsg[u] = n0 + k
            self.journal.append_stream(u, self.pack[b:b + nb])
            b += nb
            m += k

    def _publish(self) -> None:
        while self.pending:
            cmds = self.pending[0]
            now = time.monotonic_ns()
            producer_duty.stamp_sent(cmds, 0, len(cmds), now)   # 'to_matcher' starts here
            k = self.inr.publish(cmds, wait=False)
            if k:
                if self.h_queue is not None:    # 'queue': decoded (sent_ns) -> published
                    producer_duty.note_sent(cmds, 0, k, now, self.h_queue)
                self.cnt[cells.C_SENT] += k
                if self.cnt[cells.C_FIRST_SENT_NS] == 0:
                    self.cnt[cells.C_FIRST_SENT_NS] = time.monotonic_ns()
                self.stats["published"] += k
            if k < len(cmds):
                self.pending[0] = cmds[k:]
                return
            self.pending.popleft()

    def _take_reports(self) -> int:
        room = len(self.out.omsg) - int(self.st.g[ouch.G_NM])
        if room < RBATCH:
            self._flush()
        n = self.rep.consume(self.rbuf, release=False)
        if n:
            first = self.rep.read_seq - n + 1
            reps = self.rbuf[:n]
            ouch.on_reports(self.st, self.out, reps, n)
            self.journal.add(jnl.T_REP, n, jnl.reports_payload(first, reps),
                             int(self.st.g[ouch.G_TS]), int(self.st.g[ouch.G_NOW]))
            if self.hist is not None:           # and 'to_report': durable -> taken here
                producer_duty.scan_reports_staged(reps, n, time.monotonic_ns(), self.cnt, self.hist,
                                                  self.h_report, self.dtab)
        return n

    # -- sessions --------------------------------------------------------------------------
    def _accept(self, now: float) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                _log(f"accept: {e}")
                return
            if len(self.sessions) >= MAX_SESSIONS:
                _log(f"{peer[0]}:{peer[1]}: refused, {MAX_SESSIONS} sessions open")
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = Session(sock, peer, now)
            self.sessions[s.fd] = s
            self.sel.register(sock, selectors.EVENT_READ, s)
            self.stats["sessions"] += 1

    def _read(self, s: Session, now: float) -> None:
        try:
            k = s.sock.recv_into(memoryview(s.buf)[s.fill:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(s, f"receive failed: {e}")
            return
        if k == 0:
            self._close(s, "closed by the peer" if s.fill == 0 else
                        f"closed by the peer inside a packet ({s.fill} bytes of it)")
            return
        s.last_rx = now
        s.fill += k
        self._decode(s, now)

    def _decode(self, s: Session, now: float) -> None:
        st, out = self.st, self.out
        pos = 0
        while True:
            if s.user < 0:
                status = self._before_login(s, pos)
                if status is None:
                    return                        # closed
                pos = status
                if s.user < 0:
                    break                         # the login frame is not complete yet
                continue
            start = pos
            pos, status = ouch.decode(st, out, s.buf, start, s.fill, s.user)
            if pos > start:
                self.journal.add(jnl.T_IN, s.user, s.buf[start:pos].tobytes(), int(st.g[ouch.G_TS]),
                                 int(st.g[ouch.G_NOW]))
            if status == ouch.FULL:
                self._flush()
                continue
            if status == ouch.NEED:
                break
            if status == ouch.LOGOUT:
                self._close(s, "logged out")
                return
            if status == ouch.LOGIN:
                self._protocol_error(s, pos, "a second login request")
                return
            self._protocol_error(s, pos, ouch.ERRORS.get(status, f"error {status}"))
            return
        if pos:
            rest = s.fill - pos
            s.buf[:rest] = s.buf[pos:s.fill]
            s.fill = rest

    def _protocol_error(self, s: Session, pos: int, what: str) -> None:
        """Close the session; the peer gets a Debug packet saying why."""
        self.stats["protocol_errors"] += 1
        head = s.buf[pos:min(pos + 8, s.fill)].tobytes().hex()
        s.ctrl += soup.debug(f"protocol error: {what}")
        self._close(s, f"protocol error at byte {pos} of its receive buffer: {what} (bytes {head})")

    def _before_login(self, s: Session, pos: int) -> int | None:
        """Handle frames before the login; -> the position after them, None if closed."""
        while s.fill - pos >= ouch.HDR:
            ln = (int(s.buf[pos]) << 8) | int(s.buf[pos + 1])
            typ = int(s.buf[pos + 2])
            if ln < 1 or ln > ouch.MAX_FRAME:
                self._protocol_error(s, pos, ouch.ERRORS[ouch.E_LENGTH])
                return None
            if s.fill - pos < 2 + ln:
                return pos
            if typ == ord("R"):                   # a heartbeat before the login: harmless
                pos += 2 + ln
                continue
            if typ != ord("L") or ln != 1 + soup.LOGIN_PAYLOAD:
                self._protocol_error(s, pos, "the first packet must be a login request")
                return None
            body = s.buf[pos + 3:pos + 2 + ln].tobytes()
            pos += 2 + ln
            if not self._login(s, body):
                return None
            return pos
        return pos

    def _refuse(self, s: Session, reason: bytes, why: str) -> None:
        self.stats["refused"] += 1
        try:
            s.sock.send(soup.login_rejected(reason))
        except OSError:
            pass
        self._close(s, f"login refused: {why}")

    def _login(self, s: Session, body: bytes) -> bool:
        name, password, session, seq = soup.parse_login(body)
        host = s.peer[0]
        now = time.monotonic()
        fails = self.failures.setdefault(host, deque())
        while fails and now - fails[0] > FAIL_WINDOW_S:
            fails.popleft()
        if len(fails) >= FAIL_LIMIT:
            self._refuse(s, soup.NOT_AUTHORIZED, f"{host} failed {len(fails)} logins within {FAIL_WINDOW_S:.0f} s")
            return False
        user = self.by_name.get(name)
        if user is None or not user.check(password):
            fails.append(now)
            self._refuse(s, soup.NOT_AUTHORIZED, f"user {name!r}: unknown user or wrong password")
            return False
        if session and session != self.journal.session:
            self._refuse(s, soup.SESSION_UNAVAILABLE, f"user {name}: session {session!r} is not "
                                                      f"this run's ({self.journal.session})")
            return False
        if seq is None:
            self._refuse(s, soup.NOT_AUTHORIZED, f"user {name}: sequence number is not a number")
            return False
        u = user.index
        if self.active[u] is not None:
            self._refuse(s, soup.SESSION_UNAVAILABLE, f"user {name} is already logged in")
            return False
        n = int(self.nmsg[u])
        nxt = n + 1 if seq == 0 else min(seq, n + 1)
        s.user = u
        s.send_off = int(self.offs[u][nxt - 1]) if nxt <= n else self.journal.committed[u]
        s.ctrl += soup.login_accepted(self.journal.session, nxt)
        self.active[u] = s
        self.stats["logins"] += 1
        return True

    def _send(self, s: Session, now: float) -> None:
        if s.fd not in self.sessions:
            return
        blocked = False
        try:
            while s.ctrl:
                k = s.sock.send(s.ctrl)
                s.ctrl = s.ctrl[k:]
                s.last_tx = now
            if s.user >= 0:
                end = self.journal.committed[s.user]
                fd = self.journal.streams[s.user]
                while s.send_off < end:
                    k = os.sendfile(s.fd, fd, s.send_off, end - s.send_off)
                    if k == 0:
                        break
                    s.send_off += k
                    s.last_tx = now
        except (BlockingIOError, InterruptedError):
            blocked = True
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                blocked = True
            else:
                self._close(s, f"send failed: {e}")
                return
        if blocked != s.writing:                 # wait for the socket only while it is full
            s.writing = blocked
            self.sel.modify(s.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if blocked else 0), s)

    def _timers(self, now: float) -> None:
        idle = self.cfg.gateway_idle_s
        for s in list(self.sessions.values()):
            if s.user < 0:
                if now - s.t_open > LOGIN_TIMEOUT_S:
                    self._close(s, f"no login within {LOGIN_TIMEOUT_S:.0f} s")
                continue
            if now - s.last_rx > idle:
                self._close(s, f"silent for {idle:g} s")
                continue
            if now - s.last_tx >= HEARTBEAT_S and not s.ctrl and s.send_off >= self.journal.committed[s.user]:
                s.ctrl = soup.HEARTBEAT
                self._send(s, now)

    def _close(self, s: Session, reason: str) -> None:
        if self.sessions.pop(s.fd, None) is None:
            return
        _log(f"session {s.name(self.users)} closed: {reason}")
        if s.ctrl:                                # best effort: the login answer, a Debug packet
            try:
                s.sock.send(s.ctrl)
            except OSError:
                pass
        try:
            self.sel.unregister(s.sock)
        except (KeyError, ValueError):
            pass
        s.sock.close()
        u = s.user
        if u >= 0 and self.active[u] is s:
            self.active[u] = None
            # from the stop on, a session that goes keeps its orders resting, as those still
            # open at the stop do: a cancel made then could reach the ring after the
            # gateway's SENDING_DONE, when the matcher may have taken its last command
            if self.users[u].cancel_on_disconnect and self.st.uopen[u] > 0 and self.taking_input:
                self._cancel_user(u)

    def _cancel_user(self, u: int) -> None:
        """Cancel on disconnect: a CANCEL for each of user u's orders, journaled as one event."""
        if int(self.st.g[ouch.G_NC]) + int(self.st.uopen[u]) > len(self.out.cmds):
            self._flush()
        self.journal.add(jnl.T_DISC, u, b"", int(self.st.g[ouch.G_TS]), int(self.st.g[ouch.G_NOW]))
        ouch.cancel_all(self.st, self.out, u)

    # -- the stop --------------------------------------------------------------------------
    def _stop_listening(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def _final_flush(self) -> None:
        """Give sessions a bounded time to take their streams, end each, close."""
        self._flush()
        deadline = time.monotonic() + STOP_FLUSH_S
        while time.monotonic() < deadline:
            now = time.monotonic()
            left = [s for s in self.sessions.values()
                    if s.user >= 0 and (s.ctrl or s.send_off < self.journal.committed[s.user])]
            if not left:
                break
            for s in left:
                self._send(s, now)
            time.sleep(0.005)
        for s in list(self.sessions.values()):
            try:
                s.sock.send(soup.END_OF_SESSION)
            except OSError:
                pass
            self.sessions.pop(s.fd, None)
            s.sock.close()

    def close(self) -> None:
        st = self.stats
        _log(f"{st['sessions']} connections, {st['logins']} logins, {st['refused']} refused, "
             f"{st['protocol_errors']} closed for protocol errors; {st['published']:,} commands published")
        self._stop_listening()
        for s in list(self.sessions.values()):
            s.sock.close()
        self.sessions.clear()
        self.journal.close()


def run(cfg, ctl: Ctl, me, index: int) -> int:
    k = cfg.gateway_slot
    w = cfg.wait["gateway"]
    inr = Ring.attach(Ring.name_for(cfg.run_id, cells.in_role(k)), COMMAND, side="producer", wait=w)
    rep = Ring.attach(Ring.name_for(cfg.run_id, cells.rep_role(k)), REPORT, side="consumer", wait=w)
    from shmex.engine.latency import hist_views, stage_row
    from shmex.shm.segment import Segment

    hseg = Segment.attach(Ring.name_for(cfg.run_id, "hist"), layout="hist")
    t2t, stages, dtab = hist_views(hseg, cfg.producer_slots)
    gw = Gateway(cfg, ctl, me, inr, rep)
    # with the load over TCP its members' own view (send -> answer read) fills the slot's
    # row; the gateway's (decoded -> report taken) is then its own
    gw.hist = t2t[k] if cfg.via == "shm" else np.zeros(t2t.shape[1], dtype=np.int64)
    gw.h_queue = stages[stage_row(cfg.producer_slots, "queue", k)]
    gw.h_report = stages[stage_row(cfg.producer_slots, "to_report", k)]
    gw.dtab = dtab
    del t2t, stages, dtab
    try:
        warm()
        gw.recover()
        me.ready()
        me.wait_go()
        addr = gw.listen()
        ctl.store(cells.proc_cell(me.slot, cells.P_ROLE), addr[1])
        _log(f"listening on {addr[0]}:{addr[1]} (OUCH 5.0 over SoupBinTCP, session {gw.journal.session})")
        gw.loop()
    except Aborted:
        pass
    finally:
        ctl.store(ctl.prod_cell(k, cells.C_SENDING_DONE), 1)
        gw.close()
        gw.hist = gw.cnt = gw.h_queue = gw.h_report = gw.dtab = None   # views of the hist and control
                                                                        # segments: gone before they close
        inr.close()
        rep.close()
        hseg.close()
    return 0


def warm() -> None:
    ouch.warm()

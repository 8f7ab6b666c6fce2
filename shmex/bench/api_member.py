"""A client-API member that ``shmex drill`` kills: the ``client`` target.

The member is a process of its own (``python -m shmex.bench.api_member RUN_ID LOG RATE``):
it connects to the run's client slot (`shmex.client.connect`), submits one-lot orders
at RATE in batches of BATCH (buys and sells in turn at one price: every second one
trades), reads its reports between batches, and appends to LOG what a drill checks::

    session PID PRODUCER     on connecting: a new session of the slot
    sent FIRST LAST          after each submit returned: the pseqs it published
    acked PSEQ PSEQ ...      after each read: the pseqs that had a report (acknowledged)
    rejected REASON PSEQ     a command the engine rejected
    done SENT UNANSWERED     on SIGTERM: it stopped sending and waited for its answers
    stopped REASON           the engine stopped or disconnected it

Each line is flushed as written, so a SIGKILL loses at most the line being written; the
WAL, not the log, says what the killed session had published. `ApiMember` runs one such
process after another on the drill's side: `kill` SIGKILLs the current one at a moment
its slot's input ring holds a command it has read no answer for (it is submitting),
starts the next session and times the slot's hand-over until that session's first
acknowledgment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

BATCH = 8                 # orders per submit
PRICE = 10_000            # the load producers' symbol-0 mid: the member trades into their book
SYMBOL = 0
ANSWER_WAIT_S = 30.0      # after SIGTERM: how long it waits for the answers to what it sent


def main(argv: list[str]) -> int:
    import numpy as np

    from shmex.client import EngineStopped, connect
    from shmex.schema import GTC, K_NEW, LIMIT, R_REJECTED, Side, commands

    run_id, path, rate = argv[0], argv[1], float(argv[2])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    out = open(path, "a", buffering=1)
    try:
        c = connect(run_id, timeout_s=120.0)
    except EngineStopped as e:
        out.write(f"stopped {type(e).__name__}\n")
        return 0
    out.write(f"session {os.getpid()} {c.producer}\n")
    period = BATCH / rate
    cid = 0
    waiting: set[int] = set()
    sent = 0
    batch = commands(BATCH)
    batch["kind"], batch["order_type"], batch["tif"] = K_NEW, LIMIT, GTC
    batch["symbol"], batch["price"], batch["qty"] = SYMBOL, PRICE, 1

    def read(timeout_s: float) -> None:
        reps = c.reports(timeout_s=timeout_s)
        mine = reps[reps["pseq"] > 0]
        if not len(mine):
            return
        got = np.unique(mine["pseq"].astype(np.int64))
        waiting.difference_update(int(p) for p in got)
        out.write("acked " + " ".join(str(int(p)) for p in got) + "\n")
        for r in mine[mine["kind"] == R_REJECTED]:
            out.write(f"rejected {int(r['reason'])} {int(r['pseq'])}\n")

    try:
        t_next = time.monotonic()
        while not stopping:
            batch["client_id"] = np.arange(cid + 1, cid + 1 + BATCH, dtype=np.uint64)
            batch["side"] = np.where(batch["client_id"] % 2 == 1, int(Side.BUY), int(Side.SELL))
            batch["sent_ns"] = 0
            p = c.submit(batch)
            cid += BATCH
            sent += BATCH
            waiting.update(int(x) for x in p)
            out.write(f"sent {int(p[0])} {int(p[-1])}\n")
            t_next += period
            while not stopping:
                left = t_next - time.monotonic()
                read(min(max(left, 0.0), 0.05))
                if left <= 0:
                    break
        deadline = time.monotonic() + ANSWER_WAIT_S
        while waiting and time.monotonic() < deadline:
            read(0.05)
        out.write(f"done {sent} {len(waiting)}\n")
    except EngineStopped as e:          # Disconnected included
        out.write(f"stopped {type(e).__name__}\n")
    finally:
        c.close()
        out.close()
    return 0


class Session:
    """One connection's lines of the log."""

    def __init__(self, pid: int, producer: int):
        self.pid, self.producer = pid, producer
        self.first = self.last = 0        # the pseqs it logged as sent
        self.acked: set[int] = set()
        self.rejected: list[tuple[int, int]] = []
        self.end = ""                     # 'done SENT UNANSWERED', 'stopped ...' or '' (killed)


def sessions(path: str, offset: int = 0) -> list[Session]:
    """The sessions the log holds from byte `offset` on (where a session's first line starts)."""
    out: list[Session] = []
    try:
        with open(path) as f:
            f.seek(offset)
            lines = f.read().split("\n")
    except FileNotFoundError:
        return out
    for line in lines:
        w = line.split()
        if not w or not out and w[0] != "session":
            continue
        try:
            if w[0] == "session":
                out.append(Session(int(w[1]), int(w[2])))
            elif w[0] == "sent":
                s = out[-1]
                s.first = s.first or int(w[1])
                s.last = int(w[2])
            elif w[0] == "acked":
                out[-1].acked.update(int(x) for x in w[1:])
            elif w[0] == "rejected":
                out[-1].rejected.append((int(w[1]), int(w[2])))
            elif w[0] in ("done", "stopped"):
                out[-1].end = line
        except (IndexError, ValueError):
            continue                      # the line a SIGKILL cut short
    return out


class ApiMember:
    """The drill's side: one member process at a time on the run's client slot."""

    def __init__(self, run_id: str, log_path: str, rate: float):
        self.run_id, self.log_path, self.rate = run_id, log_path, rate
        self.proc: subprocess.Popen | None = None
        self.offset = 0                   # where the current session's lines start in the log
        self.errors: list[str] = []

    def start(self) -> None:
        self.offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        err = open(self.log_path + ".stderr", "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "shmex.bench.api_member", self.run_id,
                                      self.log_path, str(self.rate)],
                                     stdout=subprocess.DEVNULL, stderr=err, close_fds=True)
        err.close()

    def first_ack_s(self, pid: int, timeout_s: float) -> float | None:
        """Wait until the session of process `pid` logged an acknowledgment: -> when."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s = [x for x in sessions(self.log_path, self.offset) if x.pid == pid]
            if s and s[0].acked:
                return time.monotonic()
            if self.proc is not None and self.proc.poll() is not None:
                self.errors.append(f"client member pid {pid} exited {self.proc.returncode} before its first "
                                   f"acknowledgment: {self._stderr_tail()}")
                return None
            time.sleep(0.005)
        self.errors.append(f"client member pid {pid}: no acknowledgment within {timeout_s:.0f} s")
        return None

    def kill(self, timeout_s: float = 120.0) -> dict | None:
        """SIGKILL the current member (by its Popen); start the next session; -> the kill's record."""
        old = self.proc
        if old is None or old.poll() is not None:
            self.errors.append(f"client member not running to be killed: {self._stderr_tail()}")
            return None
        before = [x for x in sessions(self.log_path, self.offset) if x.pid == old.pid]
        if before:
            self._wait_in_flight(before[0].producer - 1)
        old.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        old.wait()
        self.start()
        t_ack = self.first_ack_s(self.proc.pid, timeout_s)
        if t_ack is None:
            return None
        return {"pid": old.pid, "new_pid": self.proc.pid, "t_kill": t_kill,
                "recovery_ms": round((t_ack - t_kill) * 1e3, 1)}

    def _wait_in_flight(self, slot: int, timeout_s: float = 5.0) -> bool:
        """Until the slot's input ring holds a command its client has read no answer for
        (it sent and waits): the moment to kill it mid-submit. -> whether one came."""
        from shmex.engine import cells, clientseg
        from shmex.ring import Ring
        from shmex.schema import COMMAND
        from shmex.shm.names import segment_name
        from shmex.shm.segment import Segment

        ring = Ring.attach(Ring.name_for(self.run_id, cells.in_role(slot)), COMMAND, side=None)
        seg = Segment.attach(segment_name(self.run_id, clientseg.role(slot)), layout=clientseg.LAYOUT,
                             read_only=True)
        own = clientseg.cells_of(seg)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if ring.published_seq > int(own[cells.C_LAST_ANSWERED]):
                    return True
                time.sleep(0)
            return False
        finally:
            del own
            seg.close()
            ring.close()

    def finish(self, timeout_s: float = ANSWER_WAIT_S + 30.0) -> None:
        """Ask the current member to stop (SIGTERM): it waits for its answers and exits."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.errors.append(f"client member pid {p.pid} did not stop within {timeout_s:.0f} s of SIGTERM")

    def _stderr_tail(self) -> str:
        try:
            return open(self.log_path + ".stderr").read()[-600:].strip()
        except FileNotFoundError:
            return ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Exactly once across crashes: a member's session resumes after a SIGKILL of the gateway
or of the matcher, gets every outbound message from the number it asks for, in order,
none twice, and a resend of what had no answer is applied once."""

from __future__ import annotations

import asyncio
import json
import time

import psutil

from engine_proc import stop
from ouch_client import Member, enter, gateway_address, launch
from shmex.engine import cells, registry
from shmex.engine.config import EngineConfig
from shmex.engine.ctl import Ctl

SHMX = b"SHMX"
D = 10_000


def _pid(run_id: str, role: str) -> psutil.Process:
    cfg = EngineConfig(run_id=run_id, data_dir="/tmp/unused", producers=0, clients=0, gateway="127.0.0.1:0")
    ctl = Ctl.attach(run_id)
    try:
        return psutil.Process(int(ctl.a[cells.proc_cell(registry.slot_of(cfg, role), cells.P_PID)]))
    finally:
        ctl.close()


async def _login_retrying(addr, user, password, sequence, timeout_s=120.0) -> Member:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await Member.login(addr, user, password, sequence=sequence)
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _by_urn(msgs, kind):
    out = {}
    for m in msgs:
        if m["type"] == kind:
            out.setdefault(m["urn"], []).append(m)
    return out


def test_sessions_resume_exactly_after_gateway_and_matcher_kills(shm_run, tmp_path):
    p = launch(shm_run, tmp_path)
    n = 2000

    async def go(addr):
        seen = []                                  # every sequenced message, by number
        dave = await Member.login(addr, "dave", "dave1", sequence=1)   # dave keeps his orders
        for victim, urns in (("gateway", range(1, n + 1)), ("matcher", range(n + 1, 2 * n + 1))):
            msgs = [enter(u, b"B", 1, SHMX, (1 + u % 150) * D) for u in urns]
            dave.send(*msgs)
            seen += await dave.recv(5)             # some answers are in, most are in flight
            _pid(shm_run, victim).kill()
            if victim == "gateway":                # the connection goes with it
                for _ in range(500):
                    if dave.s.is_closed():
                        break
                    seen += await dave.quiet(0.01)
                dave = await _login_retrying(addr, "dave", "dave1", sequence=len(seen) + 1)
                assert dave.seq == len(seen)
            dave.send(*msgs)                       # resend all: only the unanswered ones were missing
            while len(_by_urn(seen, "A")) < urns[-1]:
                try:
                    seen += await dave.recv(1, timeout_s=20)
                except TimeoutError:
                    got = _by_urn(seen, "A")
                    missing = sorted(set(range(1, urns[-1] + 1)) - set(got))
                    dup = [k for k, v in got.items() if len(v) > 1]
                    raise AssertionError(f"{victim}: {len(seen)} messages, {len(got)} orders answered; "
                                         f"missing {missing[:10]}.. ({len(missing)}), twice {dup[:10]}")
            seen += await dave.quiet(1.0)
        await dave.logout()
        again = await Member.login(addr, "dave", "dave1", sequence=1)   # the whole stream once more
        replay = await again.recv(len(seen))
        assert replay == seen
        await again.logout()
        return seen

    try:
        addr = gateway_address(tmp_path / "data", shm_run, p, timeout_s=900)
        seen = asyncio.run(go(addr))
    finally:
        stop(p)
    log = (tmp_path / "launch.err").read_text()
    accepted = _by_urn(seen, "A")
    assert sorted(accepted) == list(range(1, 2 * n + 1)), log     # every order answered ...
    assert all(len(v) == 1 for v in accepted.values())            # ... once
    assert all(m["type"] == "A" for m in seen)
    assert p.returncode == 0, log
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["last_seq"] == 2 * n                               # the engine took each order once
    assert "gateway" in log and "recovered" in log

"""The role registry: a role declared in one module (here a toy one under tests/roles,
registered through SHMEX_ROLES) is launched, pinned, restarted after SIGKILL and offered
as a drill target, with no engine file edited for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shmex.engine import cells, registry
from shmex.engine.config import EngineConfig

ROLES_DIR = Path(__file__).parent / "roles"


def _env(tmp_path) -> dict:
    echo_dir = tmp_path / "echo"
    echo_dir.mkdir(exist_ok=True)
    path = os.pathsep.join(filter(None, [str(ROLES_DIR), os.environ.get("PYTHONPATH", "")]))
    return dict(os.environ, SHMEX_ROLES="echo_role", PYTHONPATH=path, ECHO_ROLE_DIR=str(echo_dir))


def test_builtin_roles_have_slots_in_registry_order():
    cfg = EngineConfig(run_id="t", data_dir="/tmp/x", producers=2, clients=1)
    table = registry.slot_table(cfg)
    assert [p.name for p in table] == ["matcher", "walwriter", "publisher",
                                       "producer-0", "producer-1", "producer-2"]
    assert [p.slot for p in table] == list(range(6))
    # inline publisher and client slot: slots kept, no process
    assert [p.name for p in registry.launched(cfg)] == ["matcher", "walwriter", "producer-0", "producer-1"]
    assert [p.name for p in registry.launched(cfg.replace(publisher_inline=False))][2] == "publisher"


def test_an_extra_role_is_registered_from_the_environment(monkeypatch):
    monkeypatch.syspath_prepend(str(ROLES_DIR))
    monkeypatch.setenv("SHMEX_ROLES", "echo_role")
    assert registry.get("echo").module == "echo_role"
    assert "echo" in registry.drill_targets()
    assert registry.default_waits()["echo"] == "block"
    cfg = EngineConfig(run_id="t", data_dir="/tmp/x")
    assert registry.launched(cfg)[-1].name == "echo"
    assert registry.slot_of(cfg, "echo") == len(registry.slot_table(cfg)) - 1


def test_a_module_without_a_role_is_refused(monkeypatch):
    monkeypatch.setenv("SHMEX_ROLES", "json")
    with pytest.raises(ImportError, match="defines no ROLE"):
        registry.roles()


def test_toy_role_is_launched_pinned_restarted_and_a_drill_target(tmp_path):
    env = _env(tmp_path)
    help_text = subprocess.run([sys.executable, "-m", "shmex.cli", "drill", "--help"], env=env,
                               capture_output=True, text=True, timeout=120).stdout
    assert "echo" in help_text.split("--targets", 1)[1]
    out = tmp_path / "drill.json"
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "drill", "--quiet", "--data-dir",
                        str(tmp_path / "data"), "--json", str(out), "--kills", "2", "--targets", "echo",
                        "--orders", "10000", "--rate", "20000", "--gap", "0.1", "0.3", "--seed", "2"],
                       env=env, capture_output=True, text=True, timeout=900)
    doc = json.loads(out.read_text())
    assert r.returncode == 0 and doc["passed"], r.stdout + r.stderr[-3000:]
    assert [k["target"] for k in doc["kills"]] == ["echo", "echo"]
    assert [e["name"] for e in doc["restarts"]] == ["echo", "echo"]
    assert all(e["recovery_ms"] is not None for e in doc["restarts"])
    starts = sorted((tmp_path / "echo").iterdir())
    assert len(starts) == 3                         # the first process and two successors
    cores = {f.read_text() for f in starts}
    assert len(cores) == 1 and len(cores.pop().split()) == 1   # each pinned to the same one core
    # the echo's own cell was written: the summary's process list names it
    assert "echo" in {p["name"] for p in doc.get("processes", [])} or "echo" in r.stdout + r.stderr


def test_ctl_slots_follow_the_registry_for_clients(tmp_path):
    cfg = EngineConfig(run_id="t", data_dir="/tmp/x", producers=1, clients=2)
    S = len(registry.slot_table(cfg))
    assert cells.prod_base(S, 0) == cells.PROC_BASE + S * cells.PROC_CELLS
    assert cells.ctl_cells(S, cfg.producer_slots) == cells.prod_base(S, 3)

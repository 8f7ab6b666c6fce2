"""Peers that need another Python find an interpreter of exactly that version, never a shim."""

from __future__ import annotations

import os

from shmex.bench import peer_venv


def test_an_interpreter_of_the_exact_version_from_pyenv_or_path_not_a_shim(tmp_path, monkeypatch):
    root = tmp_path / "pyenv"
    exe = root / "versions" / "3.13.0" / "bin" / "python3.13"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    shims = root / "shims"
    shims.mkdir()
    (shims / "python3.12").write_text("#!/bin/sh\n")
    os.chmod(shims / "python3.12", 0o755)
    monkeypatch.setenv("PYENV_ROOT", str(root))
    monkeypatch.setenv("PATH", str(shims))
    assert peer_venv.interpreter((3, 13)) == str(exe)
    assert peer_venv.interpreter((3, 12)) is None          # only a shim: it may run another version


def test_a_peer_without_its_interpreter_is_skipped_with_the_reason(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = peer_venv.run("matching-engine", np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4)))
    assert r == {"skipped": "no Python 3.12 on this machine (PATH or pyenv)"}

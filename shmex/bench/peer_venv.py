"""PyPI order books that need another Python than this one, each run in a venv of its own.

limit-order-book 3.x (C++ via Cython) installs only on Python >= 3.13, matching-engine on
>= 3.12. Where such an interpreter is on the machine (``python3.13`` on PATH or a pyenv
version), the bench makes a venv for the peer under the user's cache (once), installs
the peer and numpy into it, and runs the same adapter (`peers.py`, which needs numpy and
`shmex.schema` only: this source tree is put on the path) on the same commands, checked
against the same fills and end state. The result names the interpreter that ran it.

    run(name, cmds, want_fills, want_resting) -> {"version", "commands_per_s", "verified",
        "check", "python"} or {"skipped": why}

Run as ``python -m shmex.bench.peer_venv NAME DIR`` inside the venv: reads DIR/cmds.npy,
DIR/fills.npy, DIR/resting.npy, writes DIR/result.json.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# peer -> (the Python it needs, what pip installs into its venv)
ELSEWHERE = {
    "limit-order-book": ((3, 13), "limit-order-book==3.1.0"),
    "matching-engine": ((3, 12), "matching-engine==0.1.1"),
    "matching-engine+wal": ((3, 12), "matching-engine==0.1.1"),
}
INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1800


def interpreter(version: tuple[int, int]) -> str | None:
    """A python of exactly `version` on this machine: pyenv's installed versions first,
    then PATH (not pyenv's shims: they run whatever version the directory selects)."""
    name = f"python{version[0]}.{version[1]}"
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for cand in sorted(glob.glob(os.path.join(root, "versions", f"{version[0]}.{version[1]}.*", "bin", name)),
                       reverse=True):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(name)
    return found if found and "/shims/" not in found else None


def _venv(version: tuple[int, int], spec: str, progress=None) -> str:
    """The venv's python for `spec` on `version`, made and installed on first use."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = spec.replace("==", "-").replace("+", "-")
    d = os.path.join(base, "shmex", "peer-venvs", f"{tag}-py{version[0]}.{version[1]}")
    py = os.path.join(d, "bin", "python")
    done = os.path.join(d, ".installed")
    if os.path.exists(done):
        return py
    exe = interpreter(version)
    if exe is None:
        raise LookupError(f"no Python {version[0]}.{version[1]} on this machine (PATH or pyenv)")
    if progress:
        progress(f"  making a Python {version[0]}.{version[1]} venv for {spec} in {d} (once) ...")
    shutil.rmtree(d, ignore_errors=True)
    subprocess.run([exe, "-m", "venv", d], check=True, capture_output=True, timeout=INSTALL_TIMEOUT_S)
    r = subprocess.run([py, "-m", "pip", "install", "-q", "numpy", spec], capture_output=True, text=True,
                       timeout=INSTALL_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"pip install {spec} on Python {version[0]}.{version[1]} failed: "
                           f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    open(done, "w").close()
    return py


def run(name: str, cmds: np.ndarray, want_fills: np.ndarray, want_resting: np.ndarray, progress=None) -> dict:
    version, spec = ELSEWHERE[name]
    try:
        py = _venv(version, spec, progress)
    except (LookupError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        return {"skipped": str(e)}
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory(prefix="shmex-peer-") as d:
        np.save(os.path.join(d, "cmds.npy"), cmds)
        np.save(os.path.join(d, "fills.npy"), want_fills)
        np.save(os.path.join(d, "resting.npy"), want_resting)
        env = dict(os.environ, PYTHONPATH=src)
        r = subprocess.run([py, "-m", "shmex.bench.peer_venv", name, d], env=env, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_S)
        if r.returncode != 0:
            return {"skipped": f"{name} on {py} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"}
        with open(os.path.join(d, "result.json")) as f:
            return json.load(f)


def _main(name: str, d: str) -> int:
    from shmex.bench import peers

    cmds = np.load(os.path.join(d, "cmds.npy"))
    res = peers.measure(name, cmds, repeats=3)
    ok, text = peers.verify(name, res["raw"], np.load(os.path.join(d, "fills.npy")),
                            np.load(os.path.join(d, "resting.npy")))
    out = {"version": res["version"], "commands_per_s": res["commands_per_s"], "verified": ok, "check": text,
           "python": f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"}
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))

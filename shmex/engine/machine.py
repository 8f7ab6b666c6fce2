"""What every benchmark prints first: the machine, the software and the revision."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    import numba
    return {"cpu_model": model, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "git_rev": rev or "unknown",
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def describe(m: dict | None = None) -> str:
    """One line for summaries: cores, CPU model, kernel."""
    m = m or machine()
    return f"{m['cores']} cores, {m['cpu_model']}, Linux {m['kernel']}"


def banner(title: str, m: dict | None = None) -> str:
    """Two lines: what ran, on what, at which revision, by which command."""
    m = m or machine()
    return (f"{title}  (git {m['git_rev']}; {m['cpu_model']}, {m['cores']} cores; "
            f"Python {m['python']}, numba {m['numba']}; load {m['load_avg_1m']})\n"
            f"command: {' '.join(['shmex'] + sys.argv[1:])}")

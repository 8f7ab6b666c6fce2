"""Test helper: stopping an engine command run as a subprocess."""

from __future__ import annotations

import signal
import subprocess


def stop(p: subprocess.Popen, timeout_s: float = 300.0) -> int:
    """A clean stop (SIGINT), a kill if it does not come within timeout_s; -> exit status."""
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
    return p.returncode

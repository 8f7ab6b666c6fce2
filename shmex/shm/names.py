"""Segment names: ``/shmex-<run_id>-<role>`` (a file ``/dev/shm/shmex-<run_id>-<role>``).

A run id has no dash, so the first dash after the prefix splits run from role.
"""

from __future__ import annotations

import os
import re
import secrets
import time

from shmex.errors import UsageError

SHM_DIR = "/dev/shm"
PREFIX = "shmex-"
_RUN_RE = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_ROLE_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")


def new_run_id() -> str:
    """A fresh run id: creation second (base 36) and 48 random bits, e.g. 'sk2x1q_9f3a0c21b7e4'."""
    return f"{_base36(int(time.time()))}_{secrets.token_hex(6)}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_RE.match(run_id):
        raise UsageError(f"run_id {run_id!r}: want 1-40 characters of [A-Za-z0-9_]")
    return run_id


def check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE_RE.match(role):
        raise UsageError(f"role {role!r}: want 1-64 characters of [A-Za-z0-9_.-], not starting with '-'")
    return role


def segment_name(run_id: str, role: str) -> str:
    """The POSIX shm name of a run's segment for a role."""
    return f"/{PREFIX}{check_run_id(run_id)}-{check_role(role)}"


def parse_name(name: str) -> tuple[str, str] | None:
    """(run_id, role) from a segment name or /dev/shm file name; None if not a shmex name."""
    base = name.lstrip("/")
    if not base.startswith(PREFIX):
        return None
    run_id, sep, role = base[len(PREFIX):].partition("-")
    if not sep or not _RUN_RE.match(run_id) or not _ROLE_RE.match(role):
        return None
    return run_id, role


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name.lstrip("/"))

"""File-system steps shared by the WAL and the snapshots."""

from __future__ import annotations

import os


def fsync_dir(path) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

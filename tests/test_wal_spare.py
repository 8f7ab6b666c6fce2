"""The next segment's zero-fill goes to the disk at the log's pace, ahead of the rotation."""

from __future__ import annotations

import os

import pytest

from shmex.files import start_writeback
from shmex.wal.writer import WalWriter
from wal_helpers import CFG, commands, read_all, seg_bytes

STEP = 1 << 20      # fill_spare's step


def test_the_spare_is_filled_as_far_as_the_log_is_through_its_segment_plus_a_quarter(tmp_path):
    size = seg_bytes(160_000)                     # ~12.8 MB: several fill steps
    w = WalWriter(tmp_path / "wal", mode="group", group_records=1 << 20, segment_bytes=size, config=CFG)
    for _ in range(100):
        w.poll()
    assert 0 < w._spare_done <= size // 4 + STEP          # idle: a quarter ahead, no more
    cmds = commands(200_000)
    w.append(cmds[:80_000])
    w.commit()
    for _ in range(100):
        w.poll()
    assert w._pos + size // 4 <= w._spare_done <= w._pos + size // 4 + STEP
    w.append(cmds[80_000:])                       # past the segment's end: the rotation
    w.commit()
    w.close(seal=True)
    assert [int(s) for s in read_all(tmp_path / "wal")[0]["seq"]] == list(range(1, 200_001))


def test_start_writeback_takes_a_file_and_names_a_bad_descriptor(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"\0" * 8192)
        start_writeback(fd, 0, 8192)
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="sync_file_range"):
        start_writeback(fd, 0, 8192)

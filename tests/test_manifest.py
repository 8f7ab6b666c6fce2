"""The run manifest is checksummed: an edit anywhere in it (a price band, a seq) makes it
corrupt for recovery and for `shmex verify`, never silently trusted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shmex.errors import CorruptRecord
from shmex.wal import manifest
from wal_helpers import commands, write_log


def test_a_written_manifest_reads_back_and_carries_its_checksum(tmp_path):
    write_log(tmp_path, commands(20))
    doc = manifest.read(tmp_path)
    assert doc["runs"][0]["sealed"] and "crc32c" not in doc
    raw = json.loads(open(manifest.path_of(tmp_path)).read())
    assert len(raw["crc32c"]) == 8


def test_an_edited_manifest_is_corrupt(tmp_path):
    write_log(tmp_path, commands(20))
    path = manifest.path_of(tmp_path)
    text = open(path).read()
    assert '"price_hi": 1200' in text
    open(path, "w").write(text.replace('"price_hi": 1200', '"price_hi": 1201'))
    with pytest.raises(CorruptRecord, match="manifest checksum"):
        manifest.read(tmp_path)
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "verify", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "manifest checksum" in r.stdout and "Traceback" not in r.stderr

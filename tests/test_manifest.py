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


def _log_with_full_config(d):
    """A log written with a whole matcher config (as the engine gives): it goes into the
    log as a RUN_CONFIG control too."""
    from shmex.matcher import Matcher
    from shmex.wal.writer import WalWriter
    from wal_helpers import CFG

    config = Matcher(**CFG, hash_key=7).config
    w = WalWriter(d, config=config)
    w.append(commands(20))
    w.close()
    return config


def test_the_log_records_each_runs_matcher_config(tmp_path):
    from shmex.recovery.recover import logged_configs

    config = _log_with_full_config(tmp_path)
    (c,) = logged_configs(tmp_path).values()
    assert c.config == config and c.run_id == manifest.read(tmp_path)["runs"][0]["run_id"]


def test_a_manifest_rewritten_with_another_config_is_refused_against_the_log(tmp_path):
    """The manifest's checksum is right (rewritten whole), but its price band is not the
    one the log recorded: verify names the log's record, recovery refuses."""
    from shmex.recovery.recover import recover

    _log_with_full_config(tmp_path)
    doc = manifest.read(tmp_path)
    doc["runs"][0]["config"]["price_hi"] = 1201
    manifest.write(tmp_path, doc)
    r = subprocess.run([sys.executable, "-m", "shmex.cli", "verify", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "price_hi 1200 in the log, 1201 in the manifest" in r.stdout and "wal-00000000.seg" in r.stdout
    with pytest.raises(CorruptRecord, match="price_hi 1200 in the log, 1201 in the manifest"):
        recover(tmp_path, use_snapshots=False)


def test_without_a_manifest_the_log_says_how_its_book_was_made(tmp_path):
    import os

    from shmex.recovery.recover import matcher_config

    config = _log_with_full_config(tmp_path)
    os.remove(manifest.path_of(tmp_path))
    assert matcher_config(tmp_path) == config


def test_a_manifest_written_a_few_bytes_at_a_time_is_whole(tmp_path, monkeypatch):
    import os

    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, memoryview(data).cast("B")[:100]))
    write_log(tmp_path, commands(20))
    monkeypatch.undo()
    doc = manifest.read(tmp_path)
    assert doc["runs"][0]["sealed"] and doc["runs"][0]["last_seq"] == 20

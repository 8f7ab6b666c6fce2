"""Snapshots: round trip, retention, and refusal of corrupt, truncated, wrong-version files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shmex.errors import CorruptRecord, UsageError
from shmex.matcher import Matcher
from shmex.snapshot import store
from shmex.crc import crc32c
from wal_helpers import CFG, commands


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    """Snapshots at seq 50, 100, 150 (keep all three) and the hash at each."""
    d = tmp_path_factory.mktemp("snaps")
    m = Matcher(**CFG)
    cmds = commands(150)
    hashes = {}
    for i in range(0, 150, 50):
        m.apply(cmds[i:i + 50])
        info = store.write_snapshot(d, m, keep=3)
        hashes[info.seq] = info.state_hash
        assert info.state_hash == m.state_hash()
    return d, hashes


def _fresh(src, tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    for seq, path in store.list_snapshots(src):
        (d / os.path.basename(path)).write_bytes(open(path, "rb").read())
    return d


def test_round_trip_keeps_the_state_hash(snaps):
    d, hashes = snaps
    for seq, path in store.list_snapshots(d):
        m, info = store.load_snapshot(path)
        assert info.seq == seq == m.last_seq
        assert m.state_hash() == hashes[seq]


def test_a_loaded_snapshot_adopts_its_buffer_and_goes_on_like_the_original(snaps):
    """load_snapshot decompresses into a private buffer and the matcher adopts its arrays
    (no copy): they are writable, and applying more commands matches a matcher that never
    went through a snapshot; from_state(copy=False) refuses read-only arrays."""
    d, _ = snaps
    m, info = store.load_snapshot(store.list_snapshots(d)[0][1])
    assert all(a.flags.writeable for a in m.book)
    ref = Matcher(**CFG)
    cmds = commands(150)
    ref.apply(cmds[:info.seq])
    tail = cmds[info.seq:]
    assert np.array_equal(m.apply(tail.copy()), ref.apply(tail.copy()))
    assert m.state_hash() == ref.state_hash()
    frozen = ref.export_state()
    frozen["o_qty"].flags.writeable = False
    with pytest.raises(UsageError, match="o_qty.*cannot be adopted"):
        Matcher.from_state(frozen, copy=False)


def test_only_the_newest_k_are_kept(tmp_path):
    m = Matcher(**CFG)
    cmds = commands(40)
    for i in range(0, 40, 10):
        m.apply(cmds[i:i + 10])
        store.write_snapshot(tmp_path, m, keep=2)
    assert [s for s, _ in store.list_snapshots(tmp_path)] == [30, 40]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def _damage(path, how):
    b = bytearray(open(path, "rb").read())
    if how == "flip":
        b[store.HEADER_BYTES + len(b) // 3] ^= 0x20
    elif how == "truncate":
        b = b[: len(b) - 100]
    elif how == "version":
        b[8] = 9
    elif how == "magic":
        b[0:8] = b"NOTASNAP"
    elif how == "header":
        b[20] ^= 1  # inside seq: the header CRC catches it
    elif how == "hash":  # a consistent file whose header names another state hash
        b[64:96] = b"0" * 32
        b[120:124] = crc32c(bytes(b[:120])).to_bytes(4, "little")
    open(path, "wb").write(bytes(b))


@pytest.mark.parametrize("how, what", [
    ("flip", "payload checksum"), ("truncate", "truncated or extended"),
    ("version", "format version 9"), ("magic", "bad magic"), ("header", "header CRC32C mismatch"),
    ("hash", "differs from the header"),
])
def test_a_bad_newest_snapshot_is_refused_and_an_older_one_used(snaps, tmp_path, how, what):
    src, hashes = snaps
    d = _fresh(src, tmp_path)
    newest = store.list_snapshots(d)[-1][1]
    _damage(newest, how)
    with pytest.raises(CorruptRecord, match=what) as e:
        store.load_snapshot(newest)
    assert e.value.path == newest
    m, info, refused = store.newest_valid(d)
    assert info.seq == 100 and m.state_hash() == hashes[100]
    assert [r.path for r in refused] == [newest]


def test_none_valid_gives_none(snaps, tmp_path):
    d = _fresh(snaps[0], tmp_path)
    for _, p in store.list_snapshots(d):
        _damage(p, "flip")
    m, info, refused = store.newest_valid(d)
    assert m is None and info is None and len(refused) == 3


def test_max_seq_picks_an_older_snapshot(snaps):
    d, hashes = snaps
    m, info, refused = store.newest_valid(d, max_seq=120)
    assert info.seq == 100 and not refused
    assert np.all(m.export_state()["meta"] == store.load_state(info.path)[1]["meta"])


def test_streamed_compression_is_the_packed_form():
    """write_state compresses the arrays straight from the book: what decompresses is
    byte for byte the packed form built in memory (odd sizes, padding, empty arrays)."""
    import zstandard

    state = {"a": np.arange(7, dtype="<i8"), "empty": np.zeros(0, "<i4"), "b": np.arange(13, dtype="u1"),
             "rec": np.zeros(3, dtype=[("x", "<i8"), ("y", "u1")]), "m": np.arange(6, dtype="<i4").reshape(2, 3)}
    total, payload = store._compress_packed(state)
    packed = store._pack(state)
    assert total == len(packed)
    assert zstandard.ZstdDecompressor().decompress(payload) == packed
    back = store._unpack(packed)
    assert all((back[k] == v).all() and back[k].dtype == v.dtype for k, v in state.items())

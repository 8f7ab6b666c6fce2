"""@njit kernels over u64 words: encode records into slots, scan slots back.

Words, not bytes: a slot is ten little-endian u64 (see layout.py), so a record is ten
loads/stores and ten ``crc32q``. Kernels return status codes; Python raises.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shmex.crc import crc_step
from shmex.wal.layout import PAYLOAD_BYTES, REC_COMMAND, REC_MAX, SLOT_WORDS

_ONES = np.uint64(0xFFFFFFFF)
_LO32 = np.uint64(0xFFFFFFFF)
_S16 = np.uint64(16)
_S32 = np.uint64(32)
_LEN = np.uint64(PAYLOAD_BYTES)
_KMIN = np.uint64(REC_COMMAND)
_KMAX = np.uint64(REC_MAX)
_SEQ_WORD = 6  # COMMAND.seq is at byte 48 of the payload

# scan status codes
ST_FULL = 0      # the output buffer is full (more may follow)
ST_END = 1       # an all-zero slot: the end of the data in this segment
ST_SEG_END = 2   # no room for another slot in this segment
ST_CONTROL = 3   # a control record was consumed; its slot is at the returned ctrl_pos
ST_BAD_LEN = 4
ST_BAD_KIND = 5
ST_BAD_CRC = 6
ST_BAD_SEQ = 7
ST_TORN = 8      # a zero header in front of non-zero bytes
ST_LIMIT = 9     # the next command is beyond the requested last seq
STATUS_WHAT = {
    ST_BAD_LEN: "record length is not 64",
    ST_BAD_KIND: "unknown record kind",
    ST_BAD_CRC: "CRC32C mismatch",
    ST_BAD_SEQ: "seq out of order",
    ST_TORN: "torn write: zero record header in front of non-zero bytes",
}


@njit(cache=True, nogil=True)
def _encode_slot(dst, pos, kind, seq, src, i, hw):
    """Write one slot at word ``pos`` from payload row ``src[i]``; return its crc."""
    w0 = _LEN | (np.uint64(kind) << _S16)
    sq = np.uint64(seq)
    crc = crc_step(_ONES, w0, hw)
    crc = crc_step(crc, sq, hw)
    for k in range(8):
        w = src[i, k]
        dst[pos + 2 + k] = w
        crc = crc_step(crc, w, hw)
    crc = (crc ^ _ONES) & _LO32
    dst[pos] = w0 | (crc << _S32)
    dst[pos + 1] = sq
    return crc


@njit(cache=True, nogil=True)
def _encode_commands(src, dst, pos, n_slots, next_seq, digest, hw):
    """Encode COMMAND rows ``src`` (u64, shape (n, 8)) into ``dst`` from word ``pos``.

    Writes at most ``n_slots`` records. Returns (written, digest, bad): ``bad`` is the index
    of the first command whose seq is not ``next_seq + index`` (then nothing from it on is
    written), or -1. ``digest`` chains the crcs of command records (the run digest of the manifest).
    """
    n = min(src.shape[0], n_slots)
    for i in range(n):
        seq = np.int64(src[i, _SEQ_WORD])
        if seq != next_seq + i:
            return i, digest, i
        crc = _encode_slot(dst, pos + i * SLOT_WORDS, REC_COMMAND, seq, src, i, hw)
        digest = crc_step(digest, crc, hw)
    return n, digest, -1


@njit(cache=True, nogil=True)
def _scan_slots(words, pos, end, expect_seq, skip_below, last_seq, out, digest, hw):
    """Verify slots from word ``pos`` up to word ``end`` and copy command payloads to ``out``.

    Commands must carry ``expect_seq`` and count it up; control records carry
    ``expect_seq - 1``. Commands with seq < ``skip_below`` are verified but not copied; a
    command with seq > ``last_seq`` stops the scan before it (ST_LIMIT).
    Returns (status, n_out, pos, expect_seq, digest, ctrl_pos): ``pos`` is the first slot
    not consumed (the bad one on an error).
    """
    n_out = 0
    cap = out.shape[0]
    while True:
        if pos + SLOT_WORDS > end:
            return 2, n_out, pos, expect_seq, digest, -1  # ST_SEG_END
        w0 = words[pos]
        sq = words[pos + 1]
        if w0 == 0 and sq == 0:
            for k in range(2, SLOT_WORDS):
                if words[pos + k] != 0:
                    return 8, n_out, pos, expect_seq, digest, -1  # ST_TORN
            return 1, n_out, pos, expect_seq, digest, -1  # ST_END
        if (w0 & np.uint64(0xFFFF)) != _LEN:
            return 4, n_out, pos, expect_seq, digest, -1  # ST_BAD_LEN
        kind = (w0 >> _S16) & np.uint64(0xFFFF)
        if kind < _KMIN or kind > _KMAX:
            return 5, n_out, pos, expect_seq, digest, -1  # ST_BAD_KIND
        crc = crc_step(_ONES, w0 & _LO32, hw)
        crc = crc_step(crc, sq, hw)
        for k in range(2, SLOT_WORDS):
            crc = crc_step(crc, words[pos + k], hw)
        crc = (crc ^ _ONES) & _LO32
        if crc != (w0 >> _S32):
            return 6, n_out, pos, expect_seq, digest, -1  # ST_BAD_CRC
        seq = np.int64(sq)
        if kind == REC_COMMAND:
            if seq != expect_seq or np.int64(words[pos + 2 + _SEQ_WORD]) != seq:
                return 7, n_out, pos, expect_seq, digest, -1  # ST_BAD_SEQ
            if seq > last_seq:
                return 9, n_out, pos, expect_seq, digest, -1  # ST_LIMIT
            if seq >= skip_below:
                if n_out == cap:
                    return 0, n_out, pos, expect_seq, digest, -1  # ST_FULL
                for k in range(8):
                    out[n_out, k] = words[pos + 2 + k]
                n_out += 1
            expect_seq += 1
            digest = crc_step(digest, crc, hw)
            pos += SLOT_WORDS
        else:
            if seq != expect_seq - 1:
                return 7, n_out, pos, expect_seq, digest, -1  # ST_BAD_SEQ
            return 3, n_out, pos + SLOT_WORDS, expect_seq, digest, pos  # ST_CONTROL


@njit(cache=True, nogil=True)
def _find_intact(words, pos, end, min_seq, hw):
    """Slots from word ``pos`` to ``end`` that hold a record in good order (length, kind and
    CRC check out; a command's header seq is its payload's) with seq >= ``min_seq``: the
    probe that tells damage inside the log from a torn tail.
    Returns (word pos of the first such slot or -1, how many, the highest seq among them)."""
    first, n, top = -1, 0, np.int64(-1)
    while pos + SLOT_WORDS <= end:
        w0 = words[pos]
        kind = (w0 >> _S16) & np.uint64(0xFFFF)
        if (w0 & np.uint64(0xFFFF)) == _LEN and _KMIN <= kind <= _KMAX:
            crc = crc_step(_ONES, w0 & _LO32, hw)
            for k in range(1, SLOT_WORDS):
                crc = crc_step(crc, words[pos + k], hw)
            seq = np.int64(words[pos + 1])
            ok = ((crc ^ _ONES) & _LO32) == (w0 >> _S32) and seq >= min_seq
            if ok and kind == REC_COMMAND:
                ok = np.int64(words[pos + 2 + _SEQ_WORD]) == seq
            if ok:
                if first < 0:
                    first = pos
                n += 1
                top = max(top, seq)
        pos += SLOT_WORDS
    return first, n, top

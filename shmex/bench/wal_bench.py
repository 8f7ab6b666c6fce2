"""WAL benchmark: appends per durability mode, commit latency, sqlite3, replay, recovery.

Topology (one process; the WAL writer's duty cycle driven in a loop)::

    pre-sequenced COMMAND batches --append--> WalWriter --pwrite+fdatasync--> wal-*.seg
                                                  |                              |
                                     commit latency: append -> durable_seq      |
    WalReader (mmap, CRC32C) --apply--> Matcher  <---------------------------------+
    snapshot + tail                 --> recovery time

Baseline in the same run: sqlite3 in WAL mode, one INSERT of a 64-byte blob per command,
batched transactions, synchronous NORMAL and FULL.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np

from shmex.schema import BUY, COMMAND, GTC, IOC, K_CANCEL, K_NEW, K_REPLACE, LIMIT, SELL

CONFIG = dict(symbols=4, price_lo=1000, price_hi=1200, capacity=1 << 20)


def workload(n: int, seed: int = 1, *, symbols: int = 4, band: tuple[int, int] = (1000, 1200),
             producers: int = 4, first_seq: int = 1) -> np.ndarray:
    """n sequenced commands: resting limits near a mid, crossing IOCs, cancels and replaces of
    earlier orders. seq is stamped first_seq, first_seq + 1, ...; engine_ns is seq."""
    rng = np.random.default_rng(seed)
    c = np.zeros(n, dtype=COMMAND)
    lo, hi = band
    mid = (lo + hi) // 2
    r = rng.random(n)
    kind = np.where(r < 0.70, K_NEW, np.where(r < 0.92, K_CANCEL, K_REPLACE))
    side = rng.integers(BUY, SELL + 1, n)
    ioc = rng.random(n) < 0.12
    off = rng.integers(1, 12, n)
    # resting orders sit on their own side of the mid; IOCs cross it
    price = np.where(side == BUY, mid - off, mid + off)
    price = np.where(ioc, np.where(side == BUY, mid + off, mid - off), price)
    idx = np.arange(n)
    prod = (idx % producers).astype(np.uint16)
    sym = rng.integers(0, symbols, n).astype(np.uint32)
    cid = idx.astype(np.uint64) + 1
    # cancels/replaces name an earlier command's order (unknown if that was not a NEW)
    back = np.maximum(0, idx - rng.integers(1, 2000, n))
    ref = kind != K_NEW
    cid = np.where(ref, cid[back], cid)
    prod = np.where(ref, prod[back], prod)
    sym = np.where(ref, sym[back], sym)
    c["kind"] = kind
    c["side"] = side
    c["order_type"] = LIMIT
    c["tif"] = np.where(ioc & (kind == K_NEW), IOC, GTC)
    c["producer"] = prod
    c["symbol"] = sym
    c["client_id"] = cid
    c["price"] = np.clip(price, lo, hi)
    c["qty"] = rng.integers(1, 100, n)
    c["pseq"] = idx // producers + 1
    c["sent_ns"] = idx
    c["seq"] = idx + first_seq
    c["engine_ns"] = idx + first_seq
    return c

"""Tick-to-trade latency: log-linear bucket counts recorded in numba, merged into HdrHistogram.

Buckets (about 1.6% wide: 64 sub-buckets per power of two, exact below 128 ns)::

    v < 128              bucket v (v <= 0: bucket 0)
    2^e <= v < 2^(e+1)   bucket 128 + (e - 7) * 64 + (v >> (e - 6)) - 64,  e = 7 .. 41
    v >= 2^42            bucket NBUCKETS - 1 (overflow; the row of e = 42 holds nothing else)

Each producer owns one row of the shared histogram segment and is its only writer; the
supervisor reads rows (a torn read costs one sample) and merges them with `to_hdr`.

Per-stage figures (where the time goes), every clock CLOCK_MONOTONIC, each row written
by one process only:

    stage       from -> to                                   recorded by   per
    queue       intended send time -> published to in-ring   producer      order
    to_matcher  published -> matcher stamp (engine_ns)        matcher       command
    to_durable  matcher stamp -> DURABLE_SEQ stored           WAL writer    command
    to_report   DURABLE_SEQ stored -> first report read        producer      command

The producer writes its actual send time into ``engine_ns`` just before publishing (the
matcher overwrites it with its stamp after reading it). The WAL writer keeps, per seq,
the time it made the seq durable in a table of DTAB (seq, ns) pairs in the histogram
segment, indexed by ``seq & (DTAB - 1)``; a producer that finds another seq there (the
table wrapped) skips that sample. Segment layout, int64 cells::

    [P, NBUCKETS]                     tick-to-trade, row k = producer k
    [STAGE_ROWS(P), NBUCKETS]         stage rows (`stage_row`)
    [DTAB, 2]                         durable table: (seq, monotonic ns)
"""

from __future__ import annotations

import numpy as np
from numba import njit

SUB = 64
LINEAR = 128
MAX_EXP = 42                         # ~73 minutes
NBUCKETS = LINEAR + (MAX_EXP - 7 + 1) * SUB

STAGES = ("queue", "to_matcher", "to_durable", "to_report")
STAGE_TEXT = {"queue": "intended send -> published to the input ring (producer)",
              "to_matcher": "published -> matcher stamp (matcher)",
              "to_durable": "matcher stamp -> durable seq stored (WAL writer)",
              "to_report": "durable -> first report read (producer)"}
DTAB = 1 << 18


def stage_rows(producers: int) -> int:
    """Stage rows: per producer 'queue' and 'to_report', then the matcher's, then the WAL writer's."""
    return 2 * producers + 2


def stage_row(producers: int, stage: str, k: int = 0) -> int:
    """The row (within the stage rows) that `stage` of producer k is recorded into."""
    if stage == "queue":
        return 2 * k
    if stage == "to_report":
        return 2 * k + 1
    if stage == "to_matcher":
        return 2 * producers
    if stage == "to_durable":
        return 2 * producers + 1
    raise ValueError(stage)


def hist_cells(producers: int) -> int:
    """int64 cells of the histogram segment."""
    return (producers + stage_rows(producers)) * NBUCKETS + 2 * DTAB


def hist_views(seg, producers: int):
    """(tick-to-trade [P, NB], stages [rows, NB], durable table [DTAB, 2]) views of the segment."""
    P = producers
    a = seg.view(0, np.int64, hist_cells(P))
    t2t = a[:P * NBUCKETS].reshape(P, NBUCKETS)
    off = P * NBUCKETS
    rows = stage_rows(P)
    st = a[off:off + rows * NBUCKETS].reshape(rows, NBUCKETS)
    dtab = a[off + rows * NBUCKETS:].reshape(DTAB, 2)
    return t2t, st, dtab


def stage_counts(stages: np.ndarray, producers: int) -> dict:
    """{stage: summed bucket counts} from a copy of the stage rows."""
    out = {}
    for name in STAGES:
        if name in ("queue", "to_report"):
            out[name] = sum(stages[stage_row(producers, name, k)] for k in range(producers))
        else:
            out[name] = stages[stage_row(producers, name)].copy()
    return out


@njit(cache=True, nogil=True)
def record_since(recs_ns, lo, hi, now_ns, hist):
    """hist[bucket(now - recs_ns[i])] += 1 for i in lo..hi with 0 < recs_ns[i] <= now."""
    for i in range(lo, hi):
        t = recs_ns[i]
        if 0 < t <= now_ns:
            hist[bucket_of(now_ns - t)] += 1


@njit(cache=True, nogil=True)
def mark_durable(seqs, eng_ns, n, upto_seq, now_ns, hist, dtab):
    """WAL writer: the commands seqs[:n] up to upto_seq are durable at now_ns: record
    stamp -> durable and note the time in the durable table."""
    mask = dtab.shape[0] - 1
    for i in range(n):
        s = seqs[i]
        if s > upto_seq:
            break
        j = s & mask
        dtab[j, 1] = now_ns
        dtab[j, 0] = s
        t = eng_ns[i]
        if 0 < t <= now_ns:
            hist[bucket_of(now_ns - t)] += 1


@njit(cache=True, nogil=True)
def bucket_of(v):
    if v < LINEAR:
        return v if v > 0 else 0
    e = 7
    x = v >> 8
    while x > 0 and e < MAX_EXP:
        x >>= 1
        e += 1
    if e >= MAX_EXP:
        return NBUCKETS - 1
    return LINEAR + (e - 7) * SUB + (v >> (e - 6)) - SUB


def bucket_values(n: int = NBUCKETS) -> np.ndarray:
    """The value each bucket stands for (its midpoint), as int64 ns."""
    out = np.arange(n, dtype=np.int64)
    i = out[LINEAR:] - LINEAR
    e = 7 + i // SUB
    m = SUB + i % SUB
    lo = m << (e - 6)
    out[LINEAR:] = lo + ((np.int64(1) << (e - 6)) >> 1)
    return out


def percentile_of_counts(counts: np.ndarray, pct: float) -> int:
    """A percentile straight from bucket counts (for live progress); 0 if empty."""
    total = int(counts.sum())
    if total == 0:
        return 0
    target = max(1, int(np.ceil(total * pct / 100.0)))
    idx = int(np.searchsorted(np.cumsum(counts), target))
    return int(bucket_values()[min(idx, len(counts) - 1)])


def to_hdr(counts: np.ndarray):
    """An HdrHistogram (3 significant digits) of summed bucket counts. Its range holds
    every bucket's value, the overflow bucket's too: no sample is dropped."""
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, int(bucket_values()[-1]), 3)
    c = counts if counts.ndim == 1 else counts.sum(axis=0)
    vals = bucket_values(len(c))
    for i in np.nonzero(c)[0]:
        h.record_value(max(1, int(vals[i])), int(c[i]))
    return h


PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99))


def summary(h) -> dict:
    """{p50, p90, p99, p999, p9999, max, count} in ns."""
    out = {k: int(h.get_value_at_percentile(p)) for k, p in PERCENTILES}
    out["max"] = int(h.get_max_value())
    out["count"] = int(h.get_total_count())
    return out


def write_hgrm(h, path: str) -> None:
    """The standard .hgrm percentile distribution, values in microseconds."""
    with open(path, "wb") as f:   # the hdrh package writes bytes
        h.output_percentile_distribution(f, 1000.0)


def write_plot(h, path: str, title: str) -> None:
    """Percentile distribution PNG: x = percentile on a log 1/(1-p) axis, y = latency in us."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = []
    for item in h.get_percentile_iterator(5):
        p = item.percentile_level_iterated_to / 100.0
        if p >= 1.0:
            break
        pts.append((1.0 / (1.0 - p), item.value_iterated_to / 1000.0))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, drawstyle="steps-post")
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10_000, 100_000]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("tick-to-trade (us)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

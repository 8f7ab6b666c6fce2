"""Tick-to-trade latency: log-linear bucket counts recorded in numba, merged into HdrHistogram.

Buckets (about 1.6% wide: 64 sub-buckets per power of two, exact below 128 ns)::

    v < 128              bucket v
    2^e <= v < 2^(e+1)   bucket 128 + (e - 7) * 64 + (v >> (e - 6)) - 64,  e = 7 .. 42

Each producer owns one row of the shared histogram segment and is its only writer; the
supervisor reads rows (a torn read costs one sample) and merges them with `to_hdr`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SUB = 64
LINEAR = 128
MAX_EXP = 42                         # ~73 minutes
NBUCKETS = LINEAR + (MAX_EXP - 7 + 1) * SUB


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
    """An HdrHistogram (1 ns .. 1 hour, 3 significant digits) of summed bucket counts."""
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 3_600_000_000_000, 3)
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

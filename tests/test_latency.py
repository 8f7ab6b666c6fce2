"""shmex.engine.latency: bucket arithmetic and percentiles from bucket counts."""

from __future__ import annotations

import numpy as np
import pytest

from shmex.engine import latency
from shmex.engine.latency import (LINEAR, MAX_EXP, NBUCKETS, SUB, bucket_of, bucket_values,
                                  percentile_of_counts, summary, to_hdr)

VALUES = bucket_values()
OVERFLOW = NBUCKETS - 1
# buckets a value can land in: the linear ones, the rows e = 7 .. MAX_EXP - 1, the overflow
LAST_LOG = LINEAR + (MAX_EXP - 7) * SUB - 1
REACHABLE = list(range(LAST_LOG + 1)) + [OVERFLOW]


def bucket_bounds(b: int) -> tuple[int, int]:
    """[lo, hi) of the values that land in log-region bucket b (from the docstring's formula)."""
    i = b - LINEAR
    e, m = 7 + i // SUB, SUB + i % SUB
    return m << (e - 6), (m + 1) << (e - 6)


def sample_values() -> list[int]:
    """Every value below 4096, then each power of two and its neighbours, and a spread."""
    out = list(range(-3, 4096))
    for e in range(12, MAX_EXP + 3):
        out += [(1 << e) - 1, 1 << e, (1 << e) + 1, 3 << (e - 1)]
    rng = np.random.default_rng(11)
    out += [int(x) for x in np.exp(rng.uniform(0, np.log(2.0 ** 43), 2000))]
    return out


def test_sizes():
    assert NBUCKETS == LINEAR + (MAX_EXP - 7 + 1) * SUB
    assert len(VALUES) == NBUCKETS and VALUES.dtype == np.int64


@pytest.mark.parametrize("v", range(LINEAR))
def test_linear_region_is_exact(v):
    assert bucket_of(v) == v
    assert VALUES[v] == v


@pytest.mark.parametrize("v", [0, -1, -1000, -(1 << 62)])
def test_zero_and_negative_land_in_bucket_zero(v):
    assert bucket_of(v) == 0


def test_bucket_values_are_inverse_of_bucket_of():
    for b in REACHABLE:
        assert bucket_of(int(VALUES[b])) == b, b


def test_the_row_above_the_last_exponent_is_only_overflow():
    # the e = MAX_EXP row: every value there is >= 2^MAX_EXP and goes to the overflow bucket
    for b in range(LAST_LOG + 1, NBUCKETS):
        assert VALUES[b] >= 1 << MAX_EXP
        assert bucket_of(int(VALUES[b])) == OVERFLOW


def test_bucket_values_strictly_increase():
    assert np.all(np.diff(VALUES) > 0)


def test_bucket_of_is_monotone_and_in_range():
    vs = sorted(sample_values())
    bs = [bucket_of(v) for v in vs]
    assert all(0 <= b < NBUCKETS for b in bs)
    assert all(a <= b for a, b in zip(bs, bs[1:]))
    assert {b for b in bs} <= set(REACHABLE)


def test_overflow():
    for v in [1 << MAX_EXP, (1 << MAX_EXP) + 1, 1 << 50, (1 << 63) - 1]:
        assert bucket_of(v) == OVERFLOW
    assert bucket_of((1 << MAX_EXP) - 1) == LAST_LOG


@pytest.mark.parametrize("b", [LINEAR, LINEAR + 1, LINEAR + SUB - 1, LINEAR + SUB, 1000, LAST_LOG])
def test_log_bucket_bounds(b):
    lo, hi = bucket_bounds(b)
    assert bucket_of(lo) == b and bucket_of(hi - 1) == b
    assert bucket_of(lo - 1) == b - 1
    assert bucket_of(hi) == (b + 1 if b < LAST_LOG else OVERFLOW)
    assert lo <= VALUES[b] < hi
    assert (hi - lo) / lo <= 1 / SUB   # "about 1.6% wide"


def test_each_value_is_inside_its_bucket_with_bounded_error():
    for v in sample_values():
        if v <= 0 or v >= 1 << MAX_EXP:
            continue
        b = bucket_of(v)
        rep = int(VALUES[b])
        if b < LINEAR:
            assert rep == v
            continue
        lo, hi = bucket_bounds(b)
        assert lo <= v < hi and lo <= rep < hi
        # the midpoint stands for the bucket: within half a bucket, 1/(2*SUB) of the value
        assert abs(rep - v) / v <= 1 / (2 * SUB), (v, rep)


def test_bucket_values_of_a_prefix():
    assert np.array_equal(bucket_values(200), VALUES[:200])


# --- percentiles from bucket counts --------------------------------------------------------

def counts_of(pairs: dict[int, int]) -> np.ndarray:
    """Bucket counts with `n` samples of value `v` for each v: n in pairs."""
    c = np.zeros(NBUCKETS, dtype=np.int64)
    for v, n in pairs.items():
        c[bucket_of(v)] += n
    return c


def test_percentile_of_empty_counts_is_zero():
    assert percentile_of_counts(np.zeros(NBUCKETS, dtype=np.int64), 50.0) == 0


@pytest.mark.parametrize("pct, expected", [
    (0.0, 10), (1.0, 10), (25.0, 10), (25.1, 20), (50.0, 20), (75.0, 30), (75.1, 40),
    (99.0, 40), (100.0, 40),
])
def test_percentile_of_known_counts(pct, expected):
    c = counts_of({10: 1, 20: 1, 30: 1, 40: 1})
    assert percentile_of_counts(c, pct) == expected


def test_percentile_weights_by_count():
    c = counts_of({50: 90, 100: 9, 120: 1})
    assert percentile_of_counts(c, 50.0) == 50
    assert percentile_of_counts(c, 90.0) == 50
    assert percentile_of_counts(c, 90.5) == 100
    assert percentile_of_counts(c, 99.0) == 100
    assert percentile_of_counts(c, 99.5) == 120


def test_percentile_in_the_log_region_is_the_bucket_value():
    v = 1_234_567
    c = counts_of({v: 7})
    got = percentile_of_counts(c, 99.0)
    assert got == VALUES[bucket_of(v)]
    assert abs(got - v) / v <= 1 / (2 * SUB)


def test_summary_of_known_counts():
    c = counts_of({50: 90, 100: 9, 1000: 1})
    top = int(VALUES[bucket_of(1000)])   # 1000 is past the linear region: its bucket's midpoint
    assert top == 1004
    s = summary(to_hdr(c))
    assert s == {"p50": 50, "p90": 50, "p99": 100, "p999": top, "p9999": top,
                 "max": top, "count": 100}


def test_summary_keys_follow_percentiles():
    s = summary(to_hdr(counts_of({77: 1})))
    assert set(s) == {k for k, _ in latency.PERCENTILES} | {"max", "count"}
    assert all(s[k] == 77 for k, _ in latency.PERCENTILES) and s["count"] == 1


def test_to_hdr_sums_rows():
    rows = np.stack([counts_of({10: 3}), counts_of({20: 1}), counts_of({10: 1, 30: 5})])
    s = summary(to_hdr(rows))
    assert s["count"] == 10 and s["max"] == 30
    assert s["p50"] == 20 and s["p90"] == 30   # 4 at 10, 1 at 20, 5 at 30
    assert summary(to_hdr(rows.sum(axis=0))) == s


def test_to_hdr_of_log_region_values_stays_within_its_precision():
    v = 987_654_321   # ~1 s
    h = to_hdr(counts_of({v: 3}))
    rep = int(VALUES[bucket_of(v)])
    assert h.get_total_count() == 3
    # HdrHistogram at 3 significant digits: within 0.1% of the bucket value
    assert abs(summary(h)["p50"] - rep) / rep <= 1e-3


def test_to_hdr_records_bucket_zero_as_one_ns():
    s = summary(to_hdr(counts_of({0: 4})))
    assert s["count"] == 4 and s["max"] == 1


def test_to_hdr_keeps_the_top_buckets():
    # the largest bucket values (past an hour) and the overflow bucket are samples too
    c = np.zeros(NBUCKETS, dtype=np.int64)
    c[100], c[LAST_LOG], c[OVERFLOW] = 5, 1, 2
    h = to_hdr(c)
    assert h.get_total_count() == 8
    assert abs(h.get_max_value() - int(VALUES[OVERFLOW])) / VALUES[OVERFLOW] <= 1e-3

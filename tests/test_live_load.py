"""The (c) load's arithmetic: latency percentiles by period of the load."""

from __future__ import annotations

import math

from benchmarks.live_load import p99_by_period, percentile


def test_each_period_gets_the_p99_of_the_samples_sent_in_it():
    # (send time, latency): 100 samples in the first 10 s (1..100 ms), none in the second, two in the third
    samples = [(1000.0 + i * 0.09, (i + 1) / 1000) for i in range(100)] + [(1021.0, 0.5), (1025.0, 0.2)]
    first, empty, third = p99_by_period(samples, 10.0)
    assert first == 99.0  # nearest rank: the 99th of 100
    assert math.isnan(empty)
    assert third == 500.0


def test_no_samples_no_periods():
    assert p99_by_period([], 10.0) == []


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unordered on purpose
    assert percentile(values, 0.99) == 99.0  # rank ceil(0.99 × 100) = 99
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile(values[:98], 0.99) == 100.0  # 98 values (100..3): rank ceil(97.02) = 98, the largest

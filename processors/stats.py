"""Plain counters and histograms the pipeline keeps; ``sinks.metrics`` exposes them to Prometheus."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics) without a client library dependency."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def dead_letter_reason(error: str) -> str:
    """A bounded label for a dead-letter reason."""
    if error.startswith("not JSON"):
        return "not_json"
    if "byte limit" in error:
        return "too_large"
    if "JSON object" in error:
        return "not_object"
    if error.startswith("kind:"):
        return "bad_kind"
    if "occurred_at" in error:
        return "bad_time"
    return "invalid_field"


class WorkerStats:
    """What the stream processors count."""

    def __init__(self) -> None:
        self.accepted: Counter = Counter()  # by kind
        self.duplicates = 0
        self.late = 0
        self.dead_letters: Counter = Counter()  # by reason
        self.alert_changes: Counter = Counter()  # (rule, severity, status)
        self.indicator_rows = 0
        self.processing_latency = Histogram()  # produced → indicator row emitted
        self.alert_latency = Histogram()  # produced → alert state change emitted

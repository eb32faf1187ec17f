"""Plain counters and histograms the pipeline keeps; ``sinks.metrics`` exposes them to Prometheus."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, deque

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


class Progress:
    """Whether a consumer is stuck: records waiting for it (the high watermark its fetches report is ahead
    of its position) for ``after`` seconds on end, while it took fewer than one in a hundred of them.
    On the embedded broker a partition can stop being served, or served only a trickle (README, "Tansu
    under a sustained live load"): this is how the pipeline notices and says so. A consumer that is
    merely behind, working through a backlog, takes far more than that."""

    __slots__ = ("after", "samples")

    def __init__(self, after: float = 30.0) -> None:
        self.after = after
        self.samples: deque[tuple[float, int]] = deque()  # (when, position), while records were waiting

    def stuck(self, now: float, position: int | None, highwater: int | None) -> tuple[float, int, int] | None:
        """(seconds, records taken in them, records waiting) when stuck; else None."""
        if position is None or highwater is None or highwater <= position:
            self.samples.clear()
            return None
        samples = self.samples
        samples.append((now, position))
        while len(samples) > 1 and now - samples[1][0] >= self.after:
            samples.popleft()  # keep one sample at least ``after`` old
        since, then = samples[0]
        waiting = highwater - position
        if now - since >= self.after and position - then < max(1, waiting // 100):
            return now - since, position - then, waiting
        return None


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

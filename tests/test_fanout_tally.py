"""Benchmark (g)'s accounting: each receipt is matched with its own record on the alerts topic."""

from __future__ import annotations

import orjson

from benchmarks.fanout import Subscriber, rss_after_warm_up, rss_slope, tally

FIRE = ("fp1", "2026-12-01", "firing", "info", "firing", None)
RETRACT = ("fp1", "2026-12-01", "retracted", "info", "resolved", "2026-12-01")
OTHER = ("fp2", "2026-12-01", "firing", "warning", "firing", None)


def test_a_change_announced_again_is_timed_against_its_own_record():
    """An alert flapping within a day announces the same change twice: the second receipt is measured from
    the second record, not the first (which made a prompt delivery look seconds late)."""
    expected = {FIRE: [(10.0, 9.9), (14.0, 13.9)], RETRACT: [(12.0, 11.9)]}
    received = [(10.2, FIRE), (12.3, RETRACT), (14.1, FIRE)]
    missed, twice, delivery, end_to_end = tally(received, expected)
    assert (missed, twice) == (0, 0)
    assert [(t, round(d, 3)) for t, d in delivery] == [(10.0, 0.2), (12.0, 0.3), (14.0, 0.1)]
    assert [round(d, 3) for d in end_to_end] == [0.3, 0.4, 0.2]


def test_missed_and_received_twice_are_counted_per_key():
    expected = {FIRE: [(10.0, None)], OTHER: [(11.0, None)]}
    received = [(10.5, FIRE), (10.6, FIRE)]  # FIRE once too often, OTHER never
    missed, twice, delivery, end_to_end = tally(received, expected)
    assert (missed, twice) == (1, 1)
    assert [round(d, 3) for _, d in delivery] == [0.5]  # the extra receipt has no record of its own
    assert end_to_end == []


def alert_event(fields: tuple, position: str) -> bytes:
    names = ("fingerprint", "starts_at", "change", "severity", "status", "ends_at")
    return b"id: " + position.encode() + b"\r\nevent: alert\r\ndata: " + orjson.dumps(dict(zip(names, fields))) + b"\r\n\r\n"


def test_an_event_arrives_with_the_chunk_that_completes_it():
    """Chunks are kept as read and parsed after the run; an event split across chunks counts from the last."""
    sub = Subscriber()
    ready = b"id: 0:0\r\nevent: ready\r\ndata: {}\r\n\r\n"
    fire, other = alert_event(FIRE, "0:1"), alert_event(OTHER, "0:2")
    sub.chunks = [(1.0, ready + fire[:20]), (2.0, fire[20:] + b": ping - now\r\n\r\n"), (3.0, other)]
    assert sub.received() == [(2.0, FIRE), (3.0, OTHER)]
    assert sub.last == 3.0


def test_rss_flatness_is_the_least_squares_slope_after_warm_up():
    assert rss_slope([(20.0, 250.0), (21.0, 251.0), (22.0, 252.0)]) == 1.0
    samples = [(t, 200.0 + (7.0 if t % 2 else 0.0)) for t in range(10, 61)]  # swings, no trend
    assert abs(rss_slope([s for s in samples if s[0] >= 20])) < 0.01
    assert rss_after_warm_up(samples).startswith("; after warm-up (20–60 s) 200–207 MB, slope +0.00 MB/s")

"""Benchmark (g)'s accounting: each receipt is matched with its own record on the alerts topic."""

from __future__ import annotations

from benchmarks.fanout import tally

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
    assert [round(d, 3) for d in delivery] == [0.2, 0.3, 0.1]
    assert [round(d, 3) for d in end_to_end] == [0.3, 0.4, 0.2]


def test_missed_and_received_twice_are_counted_per_key():
    expected = {FIRE: [(10.0, None)], OTHER: [(11.0, None)]}
    received = [(10.5, FIRE), (10.6, FIRE)]  # FIRE once too often, OTHER never
    missed, twice, delivery, end_to_end = tally(received, expected)
    assert (missed, twice) == (1, 1)
    assert [round(d, 3) for d in delivery] == [0.5]  # the extra receipt has no record of its own
    assert end_to_end == []

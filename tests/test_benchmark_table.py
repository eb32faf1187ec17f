"""The benchmark table gives each backfill run against the (a) run just before it, beside the ratio of the medians."""

from benchmarks.run import _pairs


def test_backfill_runs_are_given_against_their_own_baseline_run():
    b = {"runs": [30_000.0, 20_000.0, 27_000.0], "baseline_runs": [60_000.0, 80_000.0, 45_000.0]}
    assert _pairs(b) == " (run by run: 0.50 / 0.25 / 0.60)"


def test_one_run_or_unmatched_runs_give_nothing():
    assert _pairs({"runs": [30_000.0], "baseline_runs": [60_000.0]}) == ""
    assert _pairs({"runs": [1.0, 2.0], "baseline_runs": [1.0]}) == ""
    assert _pairs({}) == ""

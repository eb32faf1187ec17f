"""Synthetic events name fictional organisations only: never a company of the bundled real data."""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta
from functools import lru_cache
from importlib import resources

import orjson

from aisignals.live import trickle
from streams.companies import normalizer
from streams.synthetic import SCENARIOS, fictional_names, generate


@lru_cache(maxsize=1)
def real_company_ids() -> frozenset[str]:
    """Every organisation the bundled real data names (each one of a comma-separated Epoch list), after
    alias normalisation, read from the installed package's data."""
    companies = normalizer()
    real = resources.files("aisignals.data.real")
    names: set[str] = set()
    with real.joinpath("epoch_notable_ai_models.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            names.update(o for o in (row.get("Organization") or "").split(","))
            names.add(row.get("Organization") or "")
    with real.joinpath("aiwatch_positions.csv").open(newline="", encoding="utf-8") as fh:
        names.update(row.get("organization") or "" for row in csv.DictReader(fh))
    return frozenset(companies.company_id(n) for n in names if n.strip() and companies.company_id(n))


def named(event: dict) -> set[str]:
    companies = normalizer()
    out = {companies.company_id(event["company"])}
    for key in ("to_company", "from_company"):
        if event.get(key):
            out.add(companies.company_id(event[key]))
    out.update(companies.company_id(i) for i in event.get("investors") or ())
    return out


def test_the_real_data_names_many_companies():
    ids = real_company_ids()
    assert len(ids) > 500 and {"openai", "anthropic", "google-deepmind", "meta"} <= ids


def test_fictional_names_are_unique_and_not_real():
    names = fictional_names(1000)
    assert len(set(names)) == 1000
    ids = {normalizer().company_id(n) for n in names}
    assert len(ids) == 1000 and not ids & real_company_ids()


def test_every_scenario_and_the_live_trickle_name_no_real_company():
    events = [e for s in SCENARIOS for e in generate(s, 3000, 7, date(2024, 1, 1), 120)]
    live = [orjson.loads(item.value) for item in trickle(500, 3)]
    assert len(live) == 500 and all(e["source"] == "synthetic" for e in live)
    for event in events + live:
        if event.get("company") == "Broken":  # conformance-mix's invalid records
            continue
        assert event["source"] == "synthetic"
        assert not named(event) & real_company_ids(), event


def test_the_live_trickle_of_a_later_run_is_not_taken_for_duplicates(monkeypatch):
    """Every run of `up` counts its trickle from the same seeds: its ids must still differ from an earlier
    run's on the same DuckDB file, or the sequencer drops them all as duplicates."""
    import aisignals.live as live

    first = {orjson.loads(item.value)["event_id"] for item in trickle(20, 1)}

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(minutes=5)

    monkeypatch.setattr(live, "datetime", Later)
    later = {orjson.loads(item.value)["event_id"] for item in trickle(20, 1)}
    assert len(first) == len(later) == 20 and not first & later

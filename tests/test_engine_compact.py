"""The compact company state against brute force: sliding window totals, packed evidence ids, wide sums."""

from __future__ import annotations

import random

import pytest

from processors.engine import Engine
from processors.facts import DEPARTURE, FUNDING, HIRING, MICROS, MODEL_RELEASE, Fact
from processors.rules import load_rules
from processors.timeline import (ATTRITION_AND_HIRES, DEPARTURES, FUNDINGS, LAYOFFS, PEOPLE, RELEASES, CompanyTimeline,
                                 LAYOFF)

DAY0 = 739_000


def fact(event_id: str, kind: int, day: int, headcount: int = 1, *, layoff: bool = False, key: bool = False,
         amount_micro: int = 0, counterparty: str | None = None, company: str = "acme") -> Fact:
    return Fact(event_id, kind, company, counterparty, day, 0, headcount, key, amount_micro, layoff, company.title(),
                counterparty)


ODD_IDS = ["", ",", '"', "ü", "\\", "\x00", "\ud800", ',"x",1,']  # event ids are any string


def random_facts(rng: random.Random, n: int, days: int) -> list[Fact]:
    out = []
    for i in range(n):
        kind = rng.choice([HIRING, DEPARTURE, DEPARTURE, FUNDING, MODEL_RELEASE])
        layoff = kind == DEPARTURE and rng.random() < 0.2
        out.append(fact(f"e{i}-{rng.choice(ODD_IDS)}", kind,
                        DAY0 + rng.randrange(days), rng.randint(1, 5), layoff=layoff,
                        key=kind == DEPARTURE and not layoff and rng.random() < 0.3,
                        amount_micro=rng.randint(0, 10**9) if kind == FUNDING else 0,
                        counterparty=rng.choice([None, "rival", "other", "acme"]) if kind == DEPARTURE else None))
    return out


def brute_totals(facts: list[Fact], window: int, day: int) -> tuple:
    inside = [f for f in facts if day - window < f.day <= day]
    hires = sum(f.headcount for f in inside if f.kind == HIRING)
    departures = sum(f.headcount for f in inside if f.kind == DEPARTURE)
    key = sum(f.headcount for f in inside if f.kind == DEPARTURE and f.key)
    funding = sum(f.amount_micro for f in inside if f.kind == FUNDING)
    rounds = sum(1 for f in inside if f.kind == FUNDING)
    releases = sum(1 for f in inside if f.kind == MODEL_RELEASE)
    layoffs = sum(f.headcount for f in inside if f.kind == DEPARTURE and f.layoff)
    return hires, departures, key, funding, rounds, releases, layoffs


def evidence_class(f: Fact) -> int:
    return LAYOFF if f.layoff else f.kind


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sliding_totals_equal_brute_force_for_any_query_days(seed):
    """Shuffled arrival (days inserted between others), then sorted query days with gaps, repeats and days
    without data: sliding and fresh sums must agree with a recount."""
    rng = random.Random(seed)
    facts = random_facts(rng, 400, 200)
    timeline = CompanyTimeline("acme")
    for f in facts:
        timeline.add(f)
    for window in (1, 7, 30, 90):
        queries = sorted(rng.sample(range(DAY0 - 10, DAY0 + 320), 120) + [DAY0 + 5] * 3)
        got = timeline.totals_on(window, queries)
        assert [tuple(t) for t in got] == [brute_totals(facts, window, q) for q in queries]
        assert [tuple(timeline.totals(window, q)) for q in queries] == [brute_totals(facts, window, q) for q in queries]


@pytest.mark.parametrize("kinds", [PEOPLE, ATTRITION_AND_HIRES, DEPARTURES, LAYOFFS, FUNDINGS, RELEASES])
def test_evidence_is_every_real_event_id_in_event_time_then_arrival_order(kinds):
    rng = random.Random(len(kinds))
    facts = random_facts(rng, 600, 120)
    timeline = CompanyTimeline("acme")
    for f in facts:
        timeline.add(f)
    for window, day in ((30, DAY0 + 60), (90, DAY0 + 119), (5, DAY0 + 3), (30, DAY0 - 1)):
        inside = sorted((f for f in facts if day - window < f.day <= day), key=lambda f: f.day)  # stable: arrival order
        expected = [f.event_id for f in inside if evidence_class(f) in kinds]
        assert timeline.event_ids(window, day, kinds) == (expected[:100], len(expected))


def test_poaching_evidence_lists_only_departures_to_that_counterparty():
    rng = random.Random(9)
    facts = random_facts(rng, 2000, 60)
    timeline = CompanyTimeline("acme")
    for f in facts:
        timeline.add(f)
    for counterparty in ("rival", "other"):
        inside = sorted((f for f in facts if DAY0 + 59 - 90 < f.day <= DAY0 + 59), key=lambda f: f.day)
        expected = [f.event_id for f in inside
                    if f.kind == DEPARTURE and not f.layoff and f.counterparty_id == counterparty]
        assert len(expected) > 100
        assert timeline.event_ids(90, DAY0 + 59, DEPARTURES, counterparty) == (expected[:100], len(expected))
    assert timeline.event_ids(90, DAY0 + 59, DEPARTURES, "acme") == ([], 0)  # leaving for yourself is not poaching


def test_funding_beyond_64_bits_a_day_stays_exact():
    """amount_usd may reach 1e15 (SPEC §2 validation): three such rounds on one day exceed a signed 64-bit sum."""
    engine = Engine(load_rules())
    huge = 10**15 * MICROS
    for i in range(3):
        engine.add(fact(f"f{i}", FUNDING, DAY0, amount_micro=huge))
    engine.add(fact("f3", FUNDING, DAY0 - 1, amount_micro=huge))  # inserted before: the wide slot shifts too
    engine.advance(DAY0)
    rows, alerts = engine.flush()
    by_key = {(r["window_days"], r["window_end"]): r for r in rows}
    assert {r["funding_rounds"] for r in rows} >= {4}
    last = [r for r in rows if r["window_days"] == 30 and r["funding_rounds"] == 4][0]
    assert last["funding_usd"] == 4 * huge / MICROS and len(by_key) == 4
    from processors.alerts import iso_day
    assert [(a["rule"], a["severity"], a["starts_at"], a["evidence"]["event_ids"]) for a in alerts] == [
        ("funding_surge", "critical", iso_day(DAY0 - 1), ["f3"])]
    assert engine.timelines["acme"].totals(30, DAY0).funding_micro == 4 * huge


def test_a_poaching_alert_resolves_when_its_window_empties_without_new_events():
    """A quiet pair is skipped without reading its days, yet still resolves K days after its window empties."""
    rules = load_rules()
    engine = Engine(rules)
    for i in range(3):
        engine.add(fact(f"d{i}", DEPARTURE, DAY0 + i, counterparty="rival"))
    changes = []
    for day in range(DAY0 + 2, DAY0 + 200, 3):
        engine.advance(day)
        changes += [(a["change"], a["starts_at"], a["ends_at"]) for a in engine.flush()[1] if a["rule"] == "talent_poaching"]
    w, k = rules.talent_poaching.window_days, rules.talent_poaching.keep_firing_for_days
    from processors.alerts import iso_day
    assert changes == [("firing", iso_day(DAY0 + 2), None), ("resolved", iso_day(DAY0 + 2), iso_day(DAY0 + 2 + w - 2 + k))]


def test_flush_gives_the_garbage_collector_back_as_it_found_it():
    import gc

    engine = Engine(load_rules())
    engine.add(fact("h1", HIRING, DAY0))
    engine.advance(DAY0)
    assert gc.isenabled()
    engine.flush()
    assert gc.isenabled()
    gc.disable()
    try:
        engine.add(fact("h2", HIRING, DAY0 + 1))
        engine.advance(DAY0 + 1)
        engine.flush()
        assert not gc.isenabled()  # a caller that paused it keeps it paused
    finally:
        gc.enable()

"""The pure core against the brute-force reference, including out-of-order arrival."""

from __future__ import annotations

import random
from datetime import date

import orjson
import pytest

from processors.engine import Engine
from processors.facts import fact_from_event
from processors.rules import RuleSet, load_rules
from processors.sequencer import Sequencer, Verdict
from streams.companies import normalizer
from streams.events import InvalidEvent, parse_event
from streams.synthetic import generate
from tests import reference

FIELDS = ("hires", "departures", "layoffs", "attrition", "key_departures", "net_talent_flow", "talent_drain_ratio", "funding_usd",
          "funding_rounds", "model_releases")


def run_engine(lines: list[bytes], rules: RuleSet, batch: int = 1, sort: bool = True, lateness_days: float = 7.0):
    """Drive Sequencer + Engine as the agents do: arrival order, flush every ``batch`` events."""
    events = [parse_event(line) for line in lines]
    if sort:
        events.sort(key=lambda e: e.occurred_at)
    seq, engine = Sequencer(lateness_days), Engine(rules)
    rows, instances = {}, {}
    for i, event in enumerate(events, 1):
        fact = fact_from_event(event, normalizer())
        if seq.admit(fact.event_id, fact.time_us) is Verdict.ACCEPTED:
            engine.add(fact)
            engine.advance(fact.day)
        if i % batch == 0 or i == len(events):
            new_rows, changes = engine.flush()
            for r in new_rows:
                rows[(r["company_id"], r["window_days"], r["window_end"])] = r
            for a in changes:
                if a.get("previous_starts_at"):
                    instances.pop((a["fingerprint"], a["previous_starts_at"]), None)
                if a["change"] == "retracted":
                    instances.pop((a["fingerprint"], a["starts_at"]), None)
                else:
                    instances[(a["fingerprint"], a["starts_at"])] = a
    return seq, rows, instances


def with_hysteresis(rules: RuleSet, for_days: int, keep_days: int) -> RuleSet:
    """The same rules with every rule's F and K set."""
    return RuleSet(**{name: getattr(rules, name).model_copy(update={"for_days": for_days, "keep_firing_for_days": keep_days})
                      for name in RuleSet.model_fields})


def with_reasons(events: list[dict], seed: int) -> list[dict]:
    """Give synthetic departures every kind of reason, and some layoffs large enough for workforce_reduction."""
    rng = random.Random(seed)
    for e in events:
        if e.get("kind") != "departure":
            continue
        roll = rng.random()
        if roll < 0.2:
            e.update(reason="layoff", headcount=rng.choice([1, 5, 40, 120, 400]))
        elif roll < 0.3:
            e["reason"] = "acquihire"
        elif roll < 0.6:
            e["reason"] = "voluntary"
        elif roll < 0.7:
            e["reason"] = rng.choice(["unknown", None])
    return events


def key_of(a):
    return (a["rule"], a["company_id"], a["counterparty_id"] or "", a["starts_at"], a["ends_at"] or "", a["severity"])


def compare(lines, rules, **kw):
    seq, rows, instances = run_engine(lines, rules, **kw)
    ref_events, *_ = reference.accepted_events([lines] if kw.get("sort", True) else [[l] for l in lines],
                                               kw.get("lateness_days", 7.0))
    expected_rows = reference.indicators(ref_events)
    assert set(rows) == {(c, w, d) for c, w, d in expected_rows}
    for k, exp in expected_rows.items():
        for f in FIELDS:
            assert rows[k][f] == pytest.approx(exp[f], rel=1e-12, abs=1e-9), (k, f)
    stream_day = max(e.occurred_at for e in ref_events).date()
    expected = sorted(key_of(a) for a in reference.alerts(ref_events, rules, stream_day))
    got = sorted(key_of(a) for a in instances.values())
    assert got == expected
    return len(expected)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 97])
def test_engine_matches_reference_on_synthetic(seed, batch):
    lines = [orjson.dumps(e) for e in generate("conformance-mix", 1500, seed, date(2024, 1, 1), 200)
             if not (e.get("kind") == "funding" and e.get("amount_usd", 0) < 0)]
    assert compare(lines, load_rules(), batch=batch) > 0


def test_out_of_order_arrival_matches_reference():
    """Events arrive shuffled within the allowed lateness: every stored row and alert is corrected."""
    rng = random.Random(7)
    events = list(generate("talent-war", 1200, 5, date(2024, 1, 1), 150))
    # shuffle locally: each event moves by at most a few positions (hours to a couple of days)
    for i in range(len(events) - 1, 0, -1):
        j = max(0, i - rng.randrange(0, 15))
        events[i], events[j] = events[j], events[i]
    lines = [orjson.dumps(e) for e in events]
    # with lateness 30 days none of these is late, so the result must equal the sorted batch
    seq, rows, instances = run_engine(lines, load_rules(), batch=13, sort=False, lateness_days=30)
    ref_events, *_ = reference.accepted_events([lines])
    assert len(seq.seen) == len(ref_events)
    expected_rows = reference.indicators(ref_events)
    assert set(rows) == set(expected_rows)
    for k, exp in expected_rows.items():
        for f in FIELDS:
            assert rows[k][f] == pytest.approx(exp[f], rel=1e-12, abs=1e-9), (k, f)
    stream_day = max(e.occurred_at for e in ref_events).date()
    expected = sorted(key_of(a) for a in reference.alerts(ref_events, load_rules(), stream_day))
    assert sorted(key_of(a) for a in instances.values()) == expected
    assert any(a["rule"] == "talent_drain" for a in instances.values())


def test_alert_resolves_when_window_empties_without_new_events():
    """Delta's releases leave the window while only another company's events move time forward."""
    def ev(i, company, day, **kw):
        return orjson.dumps({"event_id": f"e{i}", "company": company, "occurred_at": day, **kw})
    lines = [ev(i, "Delta", d, kind="model_release", model_name=f"m{i}") for i, d in
             enumerate(["2024-03-01", "2024-03-02", "2024-03-03"])]
    lines.append(ev(9, "Other", "2024-05-01", kind="hiring"))
    seq, rows, instances = run_engine(lines, load_rules(), batch=1)
    (burst,) = [a for a in instances.values() if a["rule"] == "release_burst"]
    # the window stops meeting the condition on 03-31; K = 14 more failing days resolve it
    assert (burst["starts_at"], burst["ends_at"], burst["status"]) == ("2024-03-03", "2024-04-14", "resolved")
    seq, rows, instances = run_engine(lines, with_hysteresis(load_rules(), 1, 0), batch=1)
    (burst,) = [a for a in instances.values() if a["rule"] == "release_burst"]
    assert (burst["starts_at"], burst["ends_at"], burst["status"]) == ("2024-03-03", "2024-03-31", "resolved")


def test_alerts_published_before_a_rollback_are_held_until_the_replay_reaches_them():
    """A killed backfill published a firing → resolved instance (days 10 → 20). The replay that finishes
    it must not announce a transient "corrected"/"retracted" on its way there, only real differences."""
    from processors.alerts import AlertSeries, Instance

    def replayed(through: int, held_until: int | None, end: int | None = 20) -> list[str]:
        series = AlertSeries("talent_drain", "x", None, 30, provisional_until=held_until)
        series.published[10] = ("warning", 20)
        changes = []
        for day in range(5, through + 1):  # the replay's instance as it looks on each day
            series.instances = [] if day < 10 else [Instance(10, end if end is not None and day >= end else None,
                                                             "warning", [(10, "warning")])]
            changes += [change for change, _, _ in series.changes(day)]
        return changes

    assert replayed(25, held_until=25) == []  # the replay ends where the killed run had got: nothing to say
    assert replayed(25, held_until=None) == ["retracted", "firing", "resolved"]  # without the hold
    assert replayed(25, held_until=25, end=None) == ["corrected"]  # a real difference is still sent


class Subscriber:
    """What the sink and a webhook receiver end with: the alerts table (one row per instance, latest state)
    and every state announced, counted."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], dict] = {}
        self.announced: dict[tuple, int] = {}
        self.stream_time: str | None = None  # the latest stream time of an announced change

    def take(self, changes: list[dict]) -> None:
        for a in changes:
            if a.get("previous_starts_at"):
                self.table.pop((a["fingerprint"], a["previous_starts_at"]), None)
            if a["change"] == "retracted":
                self.table.pop((a["fingerprint"], a["starts_at"]), None)
            else:
                self.table[(a["fingerprint"], a["starts_at"])] = a
            state = (a["fingerprint"], a["starts_at"], a["status"], a["severity"], a["ends_at"])
            self.announced[state] = self.announced.get(state, 0) + 1
            self.stream_time = max(self.stream_time or "", a["stream_time"])

    def rows(self) -> set[tuple]:
        return {(a["fingerprint"], a["starts_at"], a["status"], a["severity"], a["ends_at"]) for a in self.table.values()}


@pytest.mark.parametrize("seed", [5, 1])
def test_interrupted_runs_resumed_end_exactly_like_a_clean_run(seed):
    """The crash harness in pure Python: runs of the same stream are cut after a random number of events,
    and the subscriber got only some of what was announced (the sink lags); each next run starts from
    the alerts table held until it passes how far the interrupted runs had got (their events and their
    announced stream time), replays everything, and must end with the clean run's table, having
    announced every final state and none twice. (A state the clean run announced and later corrected
    may be skipped by a resumed run that was held past the correction: it was never a final state.)"""
    rules = load_rules(None)
    facts = []
    for raw in generate("conformance-mix", 4000, 11, date(2024, 1, 1), 240):
        try:
            facts.append(fact_from_event(parse_event(orjson.dumps(raw)), normalizer()))
        except InvalidEvent:
            continue
    batch = 25

    def play(engine, subscriber, stop=None, delivered=None):
        """Feed facts in arrival order; announce to the subscriber only the first ``delivered`` flushes."""
        seq, flushes = Sequencer(7.0), 0
        for i, fact in enumerate(facts[:stop], 1):
            if seq.admit(fact.event_id, fact.time_us) is Verdict.ACCEPTED:
                engine.add(fact)
                engine.advance(fact.day)
            if i % batch == 0 or i == len(facts):
                _, changes = engine.flush(end_of_input=i == len(facts))  # a backfill's end (its barrier)
                flushes += 1
                if delivered is None or flushes <= delivered:
                    subscriber.take(changes)

    clean = Subscriber()
    play(Engine(rules), clean)
    rng = random.Random(seed)
    for trial in range(20):
        subscriber = Subscriber()
        held_until = None
        for _ in range(rng.choice([1, 2, 3])):  # interrupted runs
            engine = Engine(rules)
            for a in subscriber.table.values():
                engine.restore_published(a["rule"], a["company_id"], a["counterparty_id"],
                                         date.fromisoformat(a["starts_at"]).toordinal(), a["severity"],
                                         date.fromisoformat(a["ends_at"]).toordinal() if a["ends_at"] else None)
            if held_until is not None:
                engine.hold(held_until)
            stop = rng.randrange(batch, len(facts))
            play(engine, subscriber, stop, delivered=rng.randrange(stop // batch + 1))
            stored = facts[:rng.randrange(max(1, stop - 2 * batch), stop + 1)]  # what the sink had stored (it lags a little)
            announced = date.fromisoformat(subscriber.stream_time).toordinal() if subscriber.stream_time else 0
            held_until = max(max(f.day for f in stored), announced)
        engine = Engine(rules)
        for a in subscriber.table.values():
            engine.restore_published(a["rule"], a["company_id"], a["counterparty_id"],
                                     date.fromisoformat(a["starts_at"]).toordinal(), a["severity"],
                                     date.fromisoformat(a["ends_at"]).toordinal() if a["ends_at"] else None)
        engine.hold(held_until)
        play(engine, subscriber)
        assert subscriber.rows() == clean.rows(), trial
        assert clean.rows() <= set(subscriber.announced), trial  # every final state was announced
        assert [s for s, n in subscriber.announced.items() if n > 1] == [], trial


def test_a_change_is_named_by_the_state_it_announces():
    """Resolved, reopened by an out-of-order event, resolved on another day: two "resolved" changes of one
    instance, both to be stored and delivered; the same change sent again (a replay) keeps its name."""
    from processors.alerts import change_id
    from sinks.delivery import delivery_id

    first = {"fingerprint": "f", "starts_at": "2024-03-29", "change": "resolved", "severity": "critical",
             "status": "resolved", "ends_at": "2024-04-10"}
    second = {**first, "ends_at": "2024-04-12"}
    assert change_id(first) != change_id(second)
    assert change_id(first) == change_id({**first, "stream_time": "2024-05-01", "evidence": None})
    assert delivery_id("r", first) != delivery_id("r", second) and delivery_id("r", first) != delivery_id("s", first)


@pytest.mark.parametrize("for_days,keep_days", [(1, 0), (1, 14), (2, 3), (3, 0), (1, 5), (4, 9)])
@pytest.mark.parametrize("seed", [21, 22])
def test_hysteresis_matches_reference_on_shuffled_input(for_days, keep_days, seed):
    """Several F and K, layoffs and every other reason, events shuffled within the lateness: the engine's
    instances equal the day-by-day state machine of the reference, and its rows the plain sums."""
    rng = random.Random(seed)
    events = with_reasons(list(generate("talent-war", 1500, seed, date(2024, 1, 1), 200)), seed)
    for i in range(len(events) - 1, 0, -1):
        j = max(0, i - rng.randrange(0, 25))
        events[i], events[j] = events[j], events[i]
    lines = [orjson.dumps(e) for e in events]
    rules = with_hysteresis(load_rules(), for_days, keep_days)
    rules = rules.model_copy(update={"workforce_reduction": rules.workforce_reduction.model_copy(
        update={"min_layoffs": 150, "critical_layoffs": 500})})
    n = compare(lines, rules, batch=rng.choice([1, 7, 50]), sort=False, lateness_days=30)
    assert n > 0
    _, _, instances = run_engine(lines, rules, batch=7, sort=False, lateness_days=30)
    assert {a["rule"] for a in instances.values()} >= {"talent_drain", "workforce_reduction", "talent_poaching"}


def test_k_zero_reproduces_fire_on_first_holding_day_resolve_on_first_failing_day():
    """F = 1, K = 0 is the revision 1.0 behaviour: one instance per maximal run of holding days."""
    rng = random.Random(3)
    for _ in range(200):
        levels = [rng.choice([None, None, "info", "warning", "critical"]) for _ in range(rng.randrange(1, 40))]
        runs, i = [], 0
        while i < len(levels):
            if levels[i] is None:
                i += 1
                continue
            j = i
            while j < len(levels) and levels[j] is not None:
                j += 1
            worst = max(levels[i:j], key=reference.RANK.__getitem__)
            runs.append((i, j if j < len(levels) else None, worst))
            i = j
        assert reference.hysteresis(levels, 1, 0) == runs


def _drain_lines(extra: list[tuple[str, str, str, int]]) -> list[bytes]:
    """Acme: 2 hires and 5 departures on 01-10 (ratio 2.5: a drain), plus ``extra`` (id, kind, day, headcount)."""
    base = [("h1", "hiring", "2024-01-10", 2), ("d1", "departure", "2024-01-10", 5)]
    return [orjson.dumps({"event_id": i, "kind": k, "company": "Acme", "occurred_at": d, "headcount": n})
            for i, k, d, n in base + extra]


def _drains(lines: list[bytes], rules: RuleSet, batch: int = 1) -> list[tuple]:
    _, _, instances = run_engine(lines, rules, batch=batch, sort=False, lateness_days=30)
    return sorted((a["starts_at"], a["ends_at"]) for a in instances.values() if a["rule"] == "talent_drain")


def test_an_out_of_order_event_merges_two_instances_and_splits_one():
    """K = 3. A hire on 01-20 pauses the drain (5/3 < 2); a departure on 01-30 resumes it (6/3): a pause of
    10 failing days is two instances. A departure that arrives late, dated 01-22, leaves a 2-day pause: one
    instance (merged; with K = 1 still two). Then a hire dated 01-12 arriving last ends the drain early."""
    rules = with_hysteresis(load_rules(), 1, 3)
    pause = [("h2", "hiring", "2024-01-20", 1), ("d2", "departure", "2024-01-30", 1), ("z", "hiring", "2024-02-05", 1)]
    assert _drains(_drain_lines(pause), rules) == [("2024-01-10", "2024-01-23"), ("2024-01-30", None)]
    merged = pause + [("d3", "departure", "2024-01-22", 1)]
    # 01-22: 6 departures against 3 hires again: failing only on 01-20 and 01-21, then 6/3 holds
    assert _drains(_drain_lines(merged), rules) == [("2024-01-10", None)]
    assert _drains(_drain_lines(merged), with_hysteresis(load_rules(), 1, 1)) == [("2024-01-10", "2024-01-21"),
                                                                                 ("2024-01-22", None)]
    assert _drains(_drain_lines(merged), with_hysteresis(load_rules(), 1, 0)) == [("2024-01-10", "2024-01-20"),
                                                                                 ("2024-01-22", "2024-02-05")]
    split = merged + [("h3", "hiring", "2024-01-12", 2)]  # 6/5 from 01-12 on, 7/5 from 01-30: no drain after 01-12
    assert _drains(_drain_lines(split), rules) == [("2024-01-10", "2024-01-15")]
    # and every step against the reference, delivered one event at a time
    for lines in (_drain_lines(pause), _drain_lines(merged), _drain_lines(split)):
        compare(lines, rules, batch=1, sort=False, lateness_days=30)


def test_for_days_delays_firing_and_a_short_blip_never_fires():
    """F = 3: the condition must hold three days in a row; a drain that lasts two days raises nothing."""
    rules = with_hysteresis(load_rules(), 3, 0)
    lines = _drain_lines([("h2", "hiring", "2024-01-20", 1)])
    assert _drains(lines, rules) == [("2024-01-12", "2024-01-20")]
    blip = _drain_lines([("h2", "hiring", "2024-01-11", 1)])
    assert _drains(blip, rules) == []


def test_layoffs_are_a_workforce_reduction_not_a_drain():
    """1,200 laid off with no hires: no talent_drain, no poaching pair, a critical workforce_reduction; a
    senior layoff is not a key departure."""
    lines = [orjson.dumps({"event_id": "l1", "kind": "departure", "company": "Acme", "occurred_at": "2024-01-10",
                           "headcount": 1200, "reason": "layoff", "seniority": "vp", "to_company": "Other"}),
             orjson.dumps({"event_id": "v1", "kind": "departure", "company": "Acme", "occurred_at": "2024-01-11",
                           "reason": "voluntary", "seniority": "vp"})]
    _, rows, instances = run_engine(lines, load_rules(), batch=1)
    row = rows[("acme", 30, "2024-01-11")]
    assert (row["departures"], row["layoffs"], row["attrition"], row["key_departures"]) == (1201, 1200, 1, 1)
    assert row["talent_drain_ratio"] == 1.0
    (alert,) = instances.values()
    assert (alert["rule"], alert["severity"]) == ("workforce_reduction", "critical")
    assert alert["annotations"]["summary"] == "Acme cut 1,200 jobs in 30 days"
    assert alert["evidence"] == {"event_ids": ["l1"], "count": 1}


def test_a_merge_retracts_the_later_instance_with_its_own_severity():
    """K = 3: two drains, then a late departure closes the gap; the later instance is retracted as merged into
    the first, at the severity it was published with."""
    rules = with_hysteresis(load_rules(), 1, 3)
    events = _drain_lines([("h2", "hiring", "2024-01-20", 1), ("d2", "departure", "2024-01-30", 1),
                           ("z", "hiring", "2024-02-05", 1), ("d3", "departure", "2024-01-22", 1)])
    events = [parse_event(line) for line in events]
    seq, engine, changes = Sequencer(30.0), Engine(rules), []
    for event in events:
        fact = fact_from_event(event, normalizer())
        if seq.admit(fact.event_id, fact.time_us) is Verdict.ACCEPTED:
            engine.add(fact)
            engine.advance(fact.day)
        changes += [a for a in engine.flush()[1] if a["rule"] == "talent_drain"]
    (retracted,) = [a for a in changes if a["change"] == "retracted"]
    assert (retracted["starts_at"], retracted["severity"]) == ("2024-01-30", "warning")
    assert retracted["annotations"]["summary"].startswith("merged into the alert that started on 2024-01-10")
    assert changes[-2]["change"] == "corrected" and changes[-2]["ends_at"] is None  # the first one reopened


def _poaching_lines(pairs: int) -> list[bytes]:
    """Acme loses three people to each of ``pairs`` labs on 2024-01-10 (every pair fires talent_poaching),
    then, from 01-20 to 06-30, one person a week to the first lab only."""
    lines, i = [], 0
    for p in range(pairs):
        for _ in range(3):
            lines.append(orjson.dumps({"event_id": f"p{i}", "kind": "departure", "company": "Acme Labs",
                                       "occurred_at": "2024-01-10", "to_company": f"Lab {p}", "reason": "voluntary"}))
            i += 1
    day = date(2024, 1, 20)
    while day <= date(2024, 6, 30):
        lines.append(orjson.dumps({"event_id": f"w{i}", "kind": "departure", "company": "Acme Labs",
                                   "occurred_at": day.isoformat(), "to_company": "Lab 0", "reason": "voluntary"}))
        day, i = date.fromordinal(day.toordinal() + 7), i + 1
    return lines


def test_a_flush_visits_only_the_pairs_that_got_facts_or_are_due(monkeypatch):
    """A company's counterparty pairs without new facts are not read again before the day they can change:
    a fact for one of 40 pairs reads that pair only."""
    from processors.alerts import AlertSeries

    engine = Engine(load_rules())
    lines = _poaching_lines(40)
    for line in lines[:120]:  # the 01-10 departures
        fact = fact_from_event(parse_event(line), normalizer())
        engine.add(fact)
        engine.advance(fact.day)
    engine.flush()
    visited = []

    def recording(original):
        def read(self, *args):
            visited.append(self.counterparty_id)
            return original(self, *args)
        return read

    for name in ("skip_quiet", "evaluate"):  # every visit of a series calls one of them
        monkeypatch.setattr(AlertSeries, name, recording(getattr(AlertSeries, name)))
    fact = fact_from_event(parse_event(lines[120]), normalizer())  # 01-20, to Lab 0
    engine.add(fact)
    engine.advance(fact.day)
    engine.flush()
    assert {cp for cp in visited if cp is not None} == {"lab-0"}


def test_pairs_left_unread_still_resolve_on_their_day():
    """Lab 1 … Lab 39 get no facts after 01-10: each still resolves when its window empties (04-09) plus
    K = 14 days, flushed a day at a time as in a live run, exactly as the reference says."""
    lines = _poaching_lines(40)
    compare(lines, load_rules(), batch=1)  # every row and alert as the reference has them
    seq, rows, instances = run_engine(lines, load_rules(), batch=1)
    ended = {a["counterparty_id"]: (a["status"], a["ends_at"]) for a in instances.values() if a["rule"] == "talent_poaching"}
    assert ended["lab-1"] == ended["lab-39"] == ("resolved", "2024-04-23")
    assert ended["lab-0"][0] == "firing"


def _funding(event_id: str, company: str, day: str, amount: float) -> bytes:
    return orjson.dumps({"event_id": event_id, "kind": "funding", "company": company, "occurred_at": day,
                         "amount_usd": amount})


def test_a_late_event_that_raises_a_resolved_alert_announces_it_resolved():
    """K = 0: a surge fires on 01-01 and resolves on 01-31 (its window empties); a round dated 01-30 that
    arrives after that makes it critical. The correction says so and keeps it resolved on 01-31: it must
    not announce the instance firing again, which no later change would ever resolve."""
    rules = load_rules()
    rules = rules.model_copy(update={"funding_surge": rules.funding_surge.model_copy(update={"keep_firing_for_days": 0})})
    lines = [_funding("a1", "Acme", "2024-01-01", 9_999_999_999), _funding("o1", "Other", "2024-02-01", 1),
             _funding("a2", "Acme", "2024-01-30", 1), _funding("o2", "Other", "2024-03-15", 1)]
    seq, engine, changes = Sequencer(7.0), Engine(rules), []
    for line in lines:
        fact = fact_from_event(parse_event(line), normalizer())
        assert seq.admit(fact.event_id, fact.time_us) is Verdict.ACCEPTED
        engine.add(fact)
        engine.advance(max(engine.stream_day or fact.day, fact.day))
        changes += [(a["change"], a["status"], a["severity"], a["ends_at"]) for a in engine.flush()[1]
                    if a["company_id"] == "acme"]
    assert changes == [("firing", "firing", "warning", None), ("resolved", "resolved", "warning", "2024-01-31"),
                       ("corrected", "resolved", "critical", "2024-01-31")]
    compare(lines, rules, batch=1, sort=False)


def _small_world(rng: random.Random, n: int) -> list[dict]:
    """Two companies over four months with thresholds low enough that every rule fires, resolves and is
    corrected by events arriving out of order."""
    events = []
    for i in range(n):
        kind = rng.choice(["hiring", "departure", "funding", "model_release"])
        day = date.fromordinal(date(2024, 1, 1).toordinal() + rng.randrange(0, 120))
        e = {"event_id": f"e{i}", "kind": kind, "company": rng.choice(["A", "B"]),
             "occurred_at": f"{day.isoformat()}T{rng.randrange(24):02d}:00:00Z"}
        if kind in ("hiring", "departure"):
            e.update(headcount=rng.randint(1, 3), seniority=rng.choice(["vp", "mid", "founder", "junior"]))
        if kind == "departure":
            e["reason"] = rng.choice(["voluntary", "layoff", "unknown", None, "acquihire"])
            if rng.random() < 0.6:
                e["to_company"] = rng.choice(["X", "B"])
        elif kind == "hiring" and rng.random() < 0.5:
            e["from_company"] = rng.choice(["X", "B"])
        elif kind == "funding":
            e["amount_usd"] = rng.choice([1.0, 5.0, 10.0, 20.0])
        elif kind == "model_release":
            e["model_name"] = "m"
        events.append(e)
    events.sort(key=lambda e: e["occurred_at"])
    for i in range(len(events) - 1, 0, -1):  # out of order, mostly within the lateness
        j = max(0, i - rng.randrange(0, 8))
        events[i], events[j] = events[j], events[i]
    return events


@pytest.mark.parametrize("seed", range(60))
def test_late_corrections_with_short_hysteresis_match_reference(seed):
    """K shorter than the allowed lateness lets a correction arrive after an instance resolved: whatever
    the engine announced last for each instance is the reference's final state, resolved ones included."""
    rng = random.Random(seed)
    f, k = rng.randint(1, 3), rng.randint(0, 4)
    rules = RuleSet.model_validate({
        "talent_drain": dict(min_attrition=3, min_ratio=1.0, critical_ratio=2.5, critical_key_departures=2),
        "talent_poaching": dict(min_departures=2),
        "workforce_reduction": dict(min_layoffs=3, critical_layoffs=6),
        "funding_surge": dict(min_usd=10.0, critical_usd=25.0),
        "release_burst": dict(min_releases=2),
        "hiring_spree": dict(min_hires=3, min_hires_per_departure=2.0),
    })
    rules = with_hysteresis(rules, f, k)
    lines = [orjson.dumps(e) for e in _small_world(rng, rng.randint(40, 160))]
    for batch in (1, rng.choice([3, 11])):
        compare(lines, rules, batch=batch, sort=False)

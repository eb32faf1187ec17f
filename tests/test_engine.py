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

FIELDS = ("hires", "departures", "key_departures", "net_talent_flow", "talent_drain_ratio", "funding_usd",
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


def key_of(a):
    return (a["rule"], a["company_id"], a["counterparty_id"] or "", a["starts_at"], a["ends_at"] or "", a["severity"])


def compare(lines, rules, **kw):
    seq, rows, instances = run_engine(lines, rules, **kw)
    ref_events, *_ = reference.accepted_events([lines] if kw.get("sort", True) else [[l] for l in lines])
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


def test_interrupted_runs_resumed_end_exactly_like_a_clean_run():
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
    rng = random.Random(5)
    windows = {name: w for name, w, _, _ in rules.company_rules()} | {"talent_poaching": rules.talent_poaching.window_days}
    for trial in range(20):
        subscriber = Subscriber()
        held_until = None
        for _ in range(rng.choice([1, 2, 3])):  # interrupted runs
            engine = Engine(rules)
            for a in subscriber.table.values():
                engine.restore_published(a["rule"], a["company_id"], a["counterparty_id"], windows[a["rule"]],
                                         date.fromisoformat(a["starts_at"]).toordinal(), a["severity"],
                                         date.fromisoformat(a["ends_at"]).toordinal() if a["ends_at"] else None, held_until)
            stop = rng.randrange(batch, len(facts))
            play(engine, subscriber, stop, delivered=rng.randrange(stop // batch + 1))
            stored = facts[:rng.randrange(max(1, stop - 2 * batch), stop + 1)]  # what the sink had stored (it lags a little)
            announced = date.fromisoformat(subscriber.stream_time).toordinal() if subscriber.stream_time else 0
            held_until = max(max(f.day for f in stored), announced)
        engine = Engine(rules)
        for a in subscriber.table.values():
            engine.restore_published(a["rule"], a["company_id"], a["counterparty_id"], windows[a["rule"]],
                                     date.fromisoformat(a["starts_at"]).toordinal(), a["severity"],
                                     date.fromisoformat(a["ends_at"]).toordinal() if a["ends_at"] else None, held_until)
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

"""End to end through the real broker, Faust worker and DuckDB file, via the real command line."""

from __future__ import annotations

import asyncio
from datetime import date

import orjson
import pytest

from aisignals.pipeline import Pipeline
from processors.rules import load_rules
from sinks.database import SinkError
from streams.events import parse_event
from streams.reader import RawLine, replay_files, replay_order
from streams.settings import Settings
from streams.synthetic import generate
from tests import reference
from tests.conftest import (CONFORMANCE, INDICATOR_COLS, aisignals, alert_table, assert_conformance_tables, fetch,
                            indicator_table, read_topic)

pytestmark = pytest.mark.e2e

def test_conformance_vectors(tmp_path):
    db = tmp_path / "c.duckdb"
    first = aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db))
    assert first.stderr == ""  # nothing said, nothing left behind by a process that skips its teardown
    out = aisignals("backfill", str(CONFORMANCE / "late.jsonl"), str(CONFORMANCE / "bad.jsonl"), "--db", str(db))
    assert "dead letters" in out.stdout

    assert_conformance_tables(db)

    assert fetch(db, "SELECT late, count(*) FROM events GROUP BY late ORDER BY late") == [(False, 47), (True, 2)]
    assert fetch(db, "SELECT reason, count(*) FROM events GROUP BY ALL ORDER BY ALL") == [
        ("acquihire", 2), ("layoff", 4), ("unknown", 16), ("voluntary", 5), (None, 22)]
    assert fetch(db, "SELECT count(*) FROM events WHERE (reason IS NULL) <> (kind <> 'departure')")[0][0] == 0
    assert fetch(db, "SELECT count(*) FROM dead_letters")[0][0] == 8
    assert {r[0] for r in fetch(db, "SELECT error FROM dead_letters")} >= {
        "amount_usd: Input should be greater than or equal to 0",
        "kind: missing or not one of hiring, departure, funding, model_release",
        "reason: Input should be 'voluntary', 'layoff', 'acquihire' or 'unknown'"}
    # the alert carries its evidence
    (evidence,) = fetch(db, "SELECT evidence FROM alerts WHERE rule = 'talent_poaching' AND company_id = 'alpha-ai'")[0]
    assert orjson.loads(evidence) == {"event_ids": ["a-d1", "a-d2", "a-d3"], "count": 3}
    # typed columns mirror the payload (modality only where the event has one)
    assert fetch(db, "SELECT count(*) FROM events WHERE modality IS DISTINCT FROM payload->>'modality'")[0][0] == 0
    assert fetch(db, "SELECT modality, count(*) FROM events WHERE kind = 'model_release' GROUP BY ALL ORDER BY ALL") == [("language", 3), (None, 1)]


def test_second_backfill_late_and_rerun_changes_nothing(tmp_path):
    db = tmp_path / "r.duckdb"
    stream = CONFORMANCE / "stream.jsonl"
    aisignals("backfill", str(stream), "--db", str(db))
    before = (indicator_table(db), alert_table(db), fetch(db, "SELECT count(*) FROM events")[0][0])
    out = aisignals("backfill", str(stream), str(CONFORMANCE / "late.jsonl"), "--db", str(db))
    assert "late" in out.stdout
    assert (indicator_table(db), alert_table(db)) == before[:2]
    assert fetch(db, "SELECT count(*) FROM events")[0][0] == before[2] + 2
    assert fetch(db, "SELECT count(*) FROM events WHERE late")[0][0] == 2
    summary = orjson.loads(fetch(db, "SELECT summary FROM backfills ORDER BY finished_at DESC LIMIT 1")[0][0])
    assert summary == {"accepted": 0, "duplicates": 50, "late": 2, "dead_letters": 0}


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mix") / "mix.jsonl"
    with open(path, "wb") as fh:
        for e in generate("conformance-mix", 3000, 11, date(2024, 1, 1), 240):
            fh.write(orjson.dumps(e) + b"\n")
        fh.write(b"not json at all\n")
    return path


def test_partitions_1_and_4_identical_and_equal_reference(tmp_path, mixed_file):
    tables = []
    for n in (1, 4):
        db = tmp_path / f"p{n}.duckdb"
        aisignals("backfill", str(mixed_file), "--db", str(db), "--partitions", str(n))
        tables.append((indicator_table(db), alert_table(db),
                       fetch(db, "SELECT event_id, late FROM events ORDER BY event_id"),
                       fetch(db, "SELECT origin, error FROM dead_letters ORDER BY origin")))
    assert tables[0] == tables[1]
    lines = mixed_file.read_bytes().splitlines()
    accepted, late, dead, dups = reference.accepted_events([lines])
    ind, alerts, events, dead_rows = tables[0]
    assert len(events) == len(accepted) + len(late) and len(dead_rows) == len(dead) > 0
    exp = reference.indicators(accepted)
    assert set(ind) == set(exp)
    for k, row in exp.items():
        for col in INDICATOR_COLS:
            assert ind[k][col] == pytest.approx(row[col], rel=1e-12, abs=1e-9)
    stream_day = max(e.occurred_at for e in accepted).date()
    ref_alerts = sorted((a["rule"], a["company_id"], a["counterparty_id"] or "", a["severity"],
                         "firing" if a["ends_at"] is None else "resolved", a["starts_at"], a["ends_at"] or "")
                        for a in reference.alerts(accepted, load_rules(), stream_day))
    assert alerts == ref_alerts and len(alerts) > 0


def test_facts_handed_over_in_memory_give_the_same_tables(tmp_path, mixed_file):
    """`up`'s shape (worker, engines and sink in one process on its own embedded broker) hands the
    sequencer's facts to the engines in memory; a backfill's engines read them off the facts topic in a
    process of their own. Same input, same tables."""
    topic_db, memory_db = tmp_path / "topic.duckdb", tmp_path / "memory.duckdb"
    aisignals("backfill", str(mixed_file), "--db", str(topic_db))

    async def in_one_process(db) -> bool:
        pipeline = Pipeline(Settings(db=db, log_dir=tmp_path))
        pipeline.start_broker()
        try:
            await pipeline.start()
            await pipeline.replay(replay_files([mixed_file]))
            local = pipeline.worker.local_facts
            await pipeline.stop()
            return local
        finally:
            pipeline.stop_broker()

    assert asyncio.run(in_one_process(memory_db))
    tables = [(indicator_table(db), alert_table(db), fetch(db, "SELECT event_id, late FROM events ORDER BY event_id"),
               fetch(db, "SELECT fingerprint, change, severity, status, starts_at, ends_at FROM alert_history ORDER BY ALL"))
              for db in (topic_db, memory_db)]
    assert tables[0] == tables[1] and len(tables[0][1]) > 0 and len(tables[0][3]) > len(tables[0][1])


def test_other_client_reads_spec_events(tmp_path, broker):
    """With --bootstrap, another Kafka client (aiokafka) reads valid SPEC §2 JSON off the events topic."""
    db = tmp_path / "b.duckdb"
    aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db), "--bootstrap", broker.bootstrap)

    records = read_topic(broker.bootstrap, "aisignals.events", include_control=True)
    events = [r for r in records if not any(k == "aisignals-control" for k, _ in (r.headers or ()))]
    assert len(events) == 47
    companies = {r[0] for r in fetch(db, "SELECT DISTINCT company_id FROM events")}
    for r in events:
        event = parse_event(r.value)  # valid SPEC §2
        assert r.key.decode() in companies
        assert event.event_id
        assert abs(r.timestamp - event.occurred_at.timestamp() * 1000) < 1


def test_rules_file_backtests_other_hysteresis(tmp_path):
    """--rules with K = 0 and F = 2 on the conformance stream: the alerts equal the reference under those rules
    (Mu Research's, Kappa AI's and Nu Dynamics' paused drains become two instances each)."""
    rules_file = tmp_path / "k0.toml"
    rules_file.write_text("".join(f"[{name}]\nfor_days = 2\nkeep_firing_for_days = 0\n\n"
                                  for name in ("talent_drain", "talent_poaching", "workforce_reduction", "funding_surge",
                                               "release_burst", "hiring_spree")))
    db = tmp_path / "k0.duckdb"
    aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db), "--rules", str(rules_file))
    lines = (CONFORMANCE / "stream.jsonl").read_bytes().splitlines()
    accepted, *_ = reference.accepted_events([lines])
    rules = load_rules(rules_file)
    stream_day = max(e.occurred_at for e in accepted).date()
    expected = sorted((a["rule"], a["company_id"], a["counterparty_id"] or "", a["severity"],
                       "firing" if a["ends_at"] is None else "resolved", a["starts_at"], a["ends_at"] or "")
                      for a in reference.alerts(accepted, rules, stream_day))
    assert alert_table(db) == expected
    drains = [a for a in expected if a[0] == "talent_drain" and a[1] in ("mu-research", "kappa-ai", "nu-dynamics")]
    assert len(drains) == 6


def test_replay_overlapping_a_failed_start_stops_and_says_why(tmp_path):
    """A backfill produces while the worker joins its group; when the start fails, producing stops
    early and the start's error is what the command reports."""
    pipeline = Pipeline(Settings(db=tmp_path / "x.duckdb"), sink_process=True)
    pipeline.start_broker()
    events = generate("steady", 50_000, 3, date(2023, 1, 1), 365)
    items = replay_order(RawLine(f"t:{i}", orjson.dumps(e)) for i, e in enumerate(events))
    sent: list[int] = []

    async def replay() -> None:
        async def start() -> None:
            raise SinkError("cannot start")

        await pipeline.replay(items, sent.append, starting=asyncio.ensure_future(start()))

    try:
        with pytest.raises(SinkError, match="cannot start"):
            asyncio.run(replay())
    finally:
        pipeline.stop_broker()
    assert sum(sent) < len(items) / 2


def test_input_read_beside_the_start_that_fails_stops_the_start_and_says_why(tmp_path):
    """Input read in other processes is read from the very beginning, beside the broker's start and the
    worker's; when reading fails, the start is let finish, everything stops, and the reading's error is
    what the command reports."""
    import multiprocessing
    import threading

    from aisignals.pipeline import backfill
    from streams.reader import InputFileError

    called = threading.Event()

    def unreadable():
        called.set()
        raise InputFileError("cannot read events.jsonl: Permission denied")

    with pytest.raises(InputFileError, match="Permission denied"):
        asyncio.run(backfill(Settings(db=tmp_path / "x.duckdb", log_dir=tmp_path), unreadable, reads_elsewhere=True))
    assert called.is_set()
    assert multiprocessing.active_children() == []  # the sink and engines processes have stopped

"""A flush stores exactly what the records say, once, with the offsets they cover, whichever insert path it takes."""

from __future__ import annotations

from datetime import timezone
from types import SimpleNamespace

import orjson

from aisignals.live import bundled_events
from processors.alerts import change_id
from sinks.duckdb_sink import ROW_GROUP_ROWS, DuckDBSink, EventRecords
from streams.adapters import Accounting
from streams.companies import CompanyNormalizer
from streams.events import InvalidEvent, dict_to_wire, parse_event, parse_lines, to_wire
from streams.topics import BATCH, FORMAT, Topics
from streams.topics import LINES as MANY_EVENTS
from tests.conftest import fetch
from tests.test_sink_batch import LINES, expected_row

TOPICS = Topics()


def record(offset: int, value: bytes, batch: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, value=value, headers=[(BATCH, batch.encode())] if batch else [])


def wire(event_id: str, company: str = "Acme", day: int = 1) -> bytes:
    return to_wire(parse_event(orjson.dumps({"event_id": event_id, "kind": "hiring", "company": company,
                                             "occurred_at": f"2024-01-{day:02d}"})))


def stored_events(db) -> dict[str, dict]:
    rows = fetch(db, "SELECT event_id, company, occurred_at FROM events")
    return {r[0]: {"company": r[1], "day": r[2].day} for r in rows}


def test_a_redelivered_event_keeps_its_first_row_and_the_rest_is_stored(tmp_path):
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")
    sink.add(TOPICS.events, 0, [record(i, wire(event_id)) for i, event_id in enumerate(["a", "b", "c"])])
    sink.flush()
    # after a crash the worker sends b and c again (one with other content), then new events
    sink.add(TOPICS.events, 0, [record(3 + i, wire(event_id, company, day=2)) for i, (event_id, company)
                                in enumerate([("b", "Other"), ("c", "Acme"), ("d", "Acme"), ("e", "Acme")])])
    sink.add(TOPICS.dead_letters, 0, [record(0, orjson.dumps({
        "dead_letter_id": "dl", "received_at": "2024-01-01T00:00:00Z", "origin": "x", "raw": "{", "error": "not JSON"}))])
    sink.flush()
    events = stored_events(db)
    assert sorted(events) == ["a", "b", "c", "d", "e"]
    assert events["b"] == {"company": "Acme", "day": 1} and events["d"]["day"] == 2
    assert fetch(db, "SELECT count(*) FROM dead_letters") == [(1,)]
    assert fetch(db, "SELECT topic, partition, next_offset FROM sink_offsets ORDER BY topic") == [
        (TOPICS.dead_letters, 0, 1), (TOPICS.events, 0, 7)]
    assert sink.flushes == 2 and sink.flush_failures == 0


def test_stored_rows_are_the_row_by_row_definition_on_the_bundled_real_data(tmp_path):
    companies = CompanyNormalizer()
    lines = [orjson.dumps(e) for _, e in bundled_events(Accounting())] + LINES
    wires = [dict_to_wire(e) for e in parse_lines(lines) if not isinstance(e, InvalidEvent)]
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, companies, "run")
    order = []  # each partition's records come as one list, in order: the events', then the late ones'
    for topic, late in ((TOPICS.events, False), (TOPICS.late, True)):
        part = [i for i in range(len(wires)) if (i % 5 == 1) == late]
        sink.add(topic, 0, [record(i, wires[i], "b1" if i % 2 else None) for i in part])
        order += part
    sink.flush()
    columns = [c for (c,) in fetch(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'"
                                       " ORDER BY ordinal_position")]
    stored = {r[0]: dict(zip(columns, r)) for r in fetch(db, "SELECT * FROM events")}
    first: dict[str, dict] = {}
    for i in order:
        row = expected_row(wires[i], i % 5 == 1, "b1" if i % 2 else None, companies, 0)
        first.setdefault(row["event_id"], row)
    assert len(stored) == len(first) > 10_000
    for event_id, want in first.items():
        got = stored[event_id]
        got["occurred_at"] = got["occurred_at"].astimezone(timezone.utc)
        got["ingested_at"] = want["ingested_at"] = None
        assert got == want, event_id


def indicator(company: str, day: str, hires: int, ratio: float = 0.1) -> dict:
    return {"company_id": company, "window_days": 30, "window_end": day, "hires": hires, "departures": 3, "layoffs": 1,
            "attrition": 2, "key_departures": 0, "net_talent_flow": hires - 3, "talent_drain_ratio": ratio,
            "funding_usd": 1234567.891, "funding_rounds": 1, "model_releases": 0}


def test_indicator_rows_last_one_wins_and_values_are_exact(tmp_path):
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")
    sink.add(TOPICS.indicators, 0, [record(0, orjson.dumps([indicator("a", "2024-01-01", 1), indicator("b", "2024-01-01", 7)]))])
    sink.flush()
    sink.add(TOPICS.indicators, 0, [record(1, orjson.dumps([indicator("a", "2024-01-01", 2), indicator("a", "2024-01-01", 3)]))])
    sink.add(TOPICS.indicators, 1, [record(0, orjson.dumps([indicator("c", "2024-01-02", 4, 2 / 3)]))])
    sink.add(TOPICS.indicators, 0, [record(2, orjson.dumps([indicator("a", "2024-01-01", 5, 0.1 + 0.2)]))])
    sink.flush()
    rows = fetch(db, "SELECT * FROM indicators ORDER BY company_id")
    columns = [c for (c,) in fetch(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'indicators'"
                                       " ORDER BY ordinal_position")]
    got = [dict(zip(columns, r), window_end=r[columns.index("window_end")].isoformat()) for r in rows]
    assert got == [indicator("a", "2024-01-01", 5, 0.1 + 0.2), indicator("b", "2024-01-01", 7), indicator("c", "2024-01-02", 4, 2 / 3)]
    assert sink.rows_written["indicators"] == 4


def test_indicator_rows_stored_are_the_last_of_each_key_over_many_flushes(tmp_path):
    """Keys repeat within a record, across records of a flush and across flushes (a day's row is sent again
    when the day gets more events): the table holds the last row sent for each key, as an upsert would."""
    import random

    rnd = random.Random(5)
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")
    expected: dict[tuple, dict] = {}
    offsets = [0, 0]
    for flush in range(4):
        for _ in range(rnd.randint(1, 4)):
            partition = rnd.randrange(2)
            rows = [indicator(f"c{rnd.randrange(6)}", f"2024-01-{rnd.randint(1, 9):02d}", rnd.randrange(1000), rnd.random())
                    for _ in range(rnd.randint(1, 40))]
            sink.add(TOPICS.indicators, partition, [record(offsets[partition], orjson.dumps(rows))])
            offsets[partition] += 1
            for row in rows:
                expected[(row["company_id"], row["window_end"])] = row
        sink.flush()
    columns = [c for (c,) in fetch(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'indicators'"
                                       " ORDER BY ordinal_position")]
    got = {(r[0], r[2].isoformat()): dict(zip(columns, r), window_end=r[2].isoformat())
           for r in fetch(db, "SELECT * FROM indicators")}
    assert got == expected and len(expected) > 20
    assert sink.flushes == 4 and sink.flush_failures == 0


def test_a_finished_backfill_is_written_and_announced_once_while_the_next_batch_fills(tmp_path):
    """The run loop writes one batch in a thread while it reads the next: the barriers a write takes are
    not taken again by the next one, and the backfill is announced after its own write only."""
    from streams.topics import BARRIER, CONTROL

    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")
    info = orjson.dumps({"batch_id": "b1", "accepted": 1, "duplicates": 0, "late": 0, "dead_letters": 0})
    barrier_topics = [(t, p) for t in (TOPICS.events, TOPICS.indicators, TOPICS.alerts) for p in range(TOPICS.partitions)]
    barrier_topics += [(TOPICS.late, 0), (TOPICS.dead_letters, 0)]
    for topic, partition in barrier_topics:
        barrier = SimpleNamespace(offset=1, value=info, headers=[(CONTROL, BARRIER), (BATCH, b"b1")])
        # the first partition's barrier comes after an event record, in one list
        sink.add(topic, partition, [record(0, wire("a"), "b1"), barrier] if (topic, partition) == (TOPICS.events, 0) else [barrier])
    assert sink._barrier_complete()
    batch, done = sink.take()
    assert [d[0] for d in done] == ["b1"] and not sink._barrier_complete()
    sink.add(TOPICS.events, 0, [record(2, wire("b"))])  # the next batch fills while the first is written
    sink.write(batch, done)
    assert sink.finished == []  # announced only once its write is committed
    sink._written(batch, done)
    assert sink.finished == [("b1", {"accepted": 1, "duplicates": 0, "late": 0, "dead_letters": 0})]
    later, none = sink.take()
    assert none == [] and len(later) == 1
    sink.write(later, none)
    assert sorted(stored_events(db)) == ["a", "b"]
    assert fetch(db, "SELECT batch_id FROM backfills") == [("b1",)]


def test_a_holding_sink_keeps_the_file_open_only_while_behind_and_within_its_bounds(tmp_path, monkeypatch):
    from sinks import duckdb_sink

    sink = DuckDBSink(tmp_path / "x.duckdb", TOPICS, CompanyNormalizer(), "run", hold=True)
    monkeypatch.setattr(duckdb_sink, "HOLD_ROWS", 3)

    def flush_two(offset: int, busy: bool = True, finished: bool = False) -> bool:
        sink.add(TOPICS.events, 0, [record(offset + i, wire(f"e{offset + i}")) for i in range(2)])
        batch, done = sink.take()
        keep = sink._keep(batch, [("b", {})] if finished else done, busy)
        sink.write(batch, done, keep)
        return keep

    assert flush_two(0) is True and sink.db.holding
    assert flush_two(2) is False and not sink.db.holding  # 4 rows held: past HOLD_ROWS, closed
    assert flush_two(4, busy=False) is False and not sink.db.holding  # nothing more coming: readers come first
    assert flush_two(6, finished=True) is False  # a backfill ends: its tables are checkpointed at once
    sink.hold = False
    assert flush_two(8) is False
    assert len(stored_events(tmp_path / "x.duckdb")) == 10


def test_split_tail_hands_over_the_last_records_with_where_each_partition_resumes():
    records = EventRecords()
    p0, p1 = (TOPICS.events, 0), (TOPICS.events, 1)
    records.extend([b"a0", b"a1", b"a2"], False, [b"x", None, b"x"], p0, [10, 11, 12])
    records.extend([b"b0", b"b1"], False, [None, None], p1, [50, 51])
    records.extend([b"c0", b"c1"], True, [b"y", b"y"], p0, [13, 14])
    tail, first = records.split_tail(5)
    assert first == {p0: 12, p1: 50}  # p0 resumes at its first record held over, not at its later run
    assert records.values() == [b"a0", b"a1"] and records.positions.tolist() == [10, 11]
    assert records.late == [False, False] and records.batch_ids == ["x", None] and records.runs == [(0, p0)]
    assert tail.values() == [b"a2", b"b0", b"b1", b"c0", b"c1"]
    assert tail.positions.tolist() == [12, 50, 51, 13, 14] and tail.late == [False, False, False, True, True]
    assert tail.batch_ids == ["x", None, None, "y", "y"] and tail.runs == [(0, p0), (1, p1), (3, p0)]
    assert records.split_tail(2)[1] == {p0: 10} and len(records) == 0


def test_a_busy_backfill_sink_writes_whole_row_groups_and_holds_the_rest_over(tmp_path):
    """Rows past the last whole row group wait for the next batch, and the offsets stored with a batch
    cover exactly the rows it wrote, so that a sink that stops between the two reads the rest again."""
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run", hold=True)
    late = (TOPICS.late, 0)
    sink.add(TOPICS.events, 0, [record(i, wire(f"p0-{i}")) for i in range(15_000)])
    sink.add(TOPICS.events, 1, [record(100 + i, wire(f"p1-{i}"), "b1") for i in range(12_000)])
    sink.add(TOPICS.late, 0, [record(i, wire(f"late-{i}")) for i in range(500)])
    batch, done = sink.take(whole_row_groups=True)
    assert len(batch.events) == ROW_GROUP_ROWS == 20_480 and not done
    # 7,020 held over: p1's last 6,520 records (from offset 100 + 5,480) and the 500 late ones
    assert batch.offsets == {(TOPICS.events, 0): 15_000, (TOPICS.events, 1): 5_580, late: 0}
    assert len(sink.batch) == len(sink.batch.events) == 7_020
    assert sink.batch.offsets == {(TOPICS.events, 1): 12_100, late: 500}
    sink.write(batch, done)
    sink._written(batch, done)
    assert fetch(db, "SELECT row_group_id, max(count) FROM pragma_storage_info('events') WHERE column_name = 'event_id'"
                     " GROUP BY ALL") == [(0, 20_480)]
    assert fetch(db, "SELECT count(*) FROM events WHERE event_id LIKE 'p1-%'") == [(5_480,)]
    assert dict(((t, p), o) for t, p, o in fetch(db, "SELECT topic, partition, next_offset FROM sink_offsets")) \
        == {(TOPICS.events, 0): 15_000, (TOPICS.events, 1): 5_580, late: 0}
    sink.flush()  # not busy any more: everything
    assert fetch(db, "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (late),"
                     " count(*) FILTER (batch_id = 'b1') FROM events") == [(27_500, 27_500, 500, 12_000)]
    assert dict(((t, p), o) for t, p, o in fetch(db, "SELECT topic, partition, next_offset FROM sink_offsets")) \
        == {(TOPICS.events, 0): 15_000, (TOPICS.events, 1): 12_100, late: 500}


def test_a_live_sink_adds_rows_in_duckdbs_own_row_groups(tmp_path):
    """Only a backfill's sink, which writes whole row groups, asks for smaller ones; a live writer's rows
    go on filling DuckDB's default row group, as before."""
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")
    sink.add(TOPICS.events, 0, [record(i, wire(f"e{i}")) for i in range(25_000)])
    sink.flush()
    assert fetch(db, "SELECT row_group_id, max(count) FROM pragma_storage_info('events') WHERE column_name = 'event_id'"
                     " GROUP BY ALL") == [(0, 25_000)]


def lines_record(offset: int, values: list[bytes], batch: str | None = None) -> SimpleNamespace:
    """A record of many events, a line each, as the worker sends them on a backfill's private broker."""
    headers = [(FORMAT, MANY_EVENTS)] + ([(BATCH, batch.encode())] if batch else [])
    return SimpleNamespace(offset=offset, value=b"\n".join(values), headers=headers)


def test_records_of_many_events_store_what_one_event_a_record_does(tmp_path):
    values = [wire(f"e{i}", company=f"Lab {i % 3}", day=1 + i % 5) for i in range(10)]
    one = DuckDBSink(tmp_path / "one.duckdb", TOPICS, CompanyNormalizer(), "run")
    one.add(TOPICS.events, 0, [record(i, value, "b1") for i, value in enumerate(values[:7])])
    one.add(TOPICS.events, 1, [record(i, value) for i, value in enumerate(values[7:])])
    many = DuckDBSink(tmp_path / "many.duckdb", TOPICS, CompanyNormalizer(), "run")
    many.add(TOPICS.events, 0, [lines_record(0, values[:4], "b1"), lines_record(1, values[4:7], "b1")])
    many.add(TOPICS.events, 1, [lines_record(0, values[7:])])
    assert len(many.batch) == len(one.batch) == 10  # a flush's size counts events, not records
    for sink in (one, many):
        sink.flush()
    query = "SELECT * EXCLUDE (ingested_at) FROM events ORDER BY event_id"
    assert fetch(tmp_path / "many.duckdb", query) == fetch(tmp_path / "one.duckdb", query)
    assert fetch(tmp_path / "many.duckdb", "SELECT count(*) FILTER (batch_id = 'b1'), count(*) FROM events") == [(7, 10)]
    assert fetch(tmp_path / "many.duckdb", "SELECT partition, next_offset FROM sink_offsets ORDER BY 1") == [(0, 2), (1, 1)]


def test_rows_held_over_from_inside_a_record_of_many_are_read_again_from_that_record(tmp_path):
    """The cut of whole row groups may fall inside a record of many events: the batch written stores
    that record's offset (a sink that stops then reads it again, its stored rows skipped as redelivered)."""
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run", hold=True)
    values = [wire(f"e{i}") for i in range(30_000)]
    sink.add(TOPICS.events, 0, [lines_record(offset, values[offset * 10_000:(offset + 1) * 10_000]) for offset in range(3)])
    batch, done = sink.take(whole_row_groups=True)
    assert len(batch.events) == ROW_GROUP_ROWS and batch.offsets == {(TOPICS.events, 0): 2}
    assert len(sink.batch) == 30_000 - ROW_GROUP_ROWS and sink.batch.offsets == {(TOPICS.events, 0): 3}
    sink.write(batch, done)
    again = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")  # stopped here: reads from the stored offset
    assert again.stored_offsets() == {(TOPICS.events, 0): 2}
    again.add(TOPICS.events, 0, [lines_record(2, values[20_000:])])
    again.flush()
    assert fetch(db, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(30_000, 30_000)]


def _alert_changes() -> list[dict]:
    """The alert changes the company engines announce for the conformance stream, in order."""
    from processors.engine import Engine
    from processors.facts import fact_from_event
    from processors.rules import load_rules
    from tests.conftest import CONFORMANCE

    events = sorted((parse_event(line) for line in (CONFORMANCE / "stream.jsonl").read_bytes().splitlines() if line.strip()),
                    key=lambda e: e.occurred_at)
    engine, changes, companies = Engine(load_rules(None)), [], CompanyNormalizer()
    for event in events:
        fact = fact_from_event(event, companies)
        engine.add(fact)
        engine.advance(fact.day)
        changes += engine.flush()[1]
    return changes


def test_an_alert_change_read_again_is_stored_once_and_the_rest_of_its_flush_too(tmp_path):
    """Alert changes go in with a plain INSERT; a change stored already (its record read again after a
    crash) fails it, and the flush is run again skipping stored changes, as for events."""
    changes = _alert_changes()
    assert len(changes) >= 6
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run")
    first = changes[:3]
    sink.add(TOPICS.alerts, 0, [record(i, orjson.dumps(a)) for i, a in enumerate(first)])
    sink.flush()
    again = first + changes[3:]  # the first three again, then the rest
    sink.add(TOPICS.alerts, 0, [record(3 + i, orjson.dumps(a)) for i, a in enumerate(again)])
    sink.flush()
    stored = fetch(db, "SELECT change_id, fingerprint, change, status FROM alert_history")
    assert sorted(stored) == sorted({(change_id(a), a["fingerprint"], a["change"], a["status"]) for a in changes})
    assert sink.flushes == 2 and sink.flush_failures == 0
    assert fetch(db, "SELECT next_offset FROM sink_offsets") == [(3 + len(again),)]


def test_a_sink_told_to_stop_does_not_wait_out_its_fetch():
    """The sink's loop waits for records with ``_unless``: ``stop`` set ends the wait at once (the
    fetch cancelled, None returned); a fetch that comes first gives its records."""
    import asyncio

    from sinks.duckdb_sink import _unless

    async def scenario() -> tuple:
        stop = asyncio.Event()
        never: asyncio.Future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        stopped = await asyncio.wait_for(_unless(stopping, never), 5)
        waiting = asyncio.ensure_future(asyncio.Event().wait())
        fetched = await _unless(waiting, asyncio.sleep(0.01, result={"records": 1}))
        waiting.cancel()
        return stopped, never.cancelled(), fetched

    assert asyncio.run(scenario()) == (None, True, {"records": 1})

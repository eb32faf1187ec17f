"""The sink builds ``events`` rows per batch in DuckDB; each row must be what the SPEC says of its record."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import orjson

from sinks.database import Database
from sinks.duckdb_sink import EventRecords, event_rows
from streams.companies import CompanyNormalizer
from streams.events import parse_event, to_wire

LINES = [
    b'{"event_id":"a","kind":"departure","company":"Google DeepMind","occurred_at":"2024-04-12T23:30:00.250-05:00",'
    b'"to_company":"FAIR","seniority":"vp","headcount":3,"custom":{"nested":[1,{"x":"y"}]}}',
    b'{"event_id":"b","kind":"hiring","company":"\xc3\x89cole IA","occurred_at":"1969-07-20","from_company":"OpenAI"}',
    b'{"event_id":"c","kind":"funding","company":"X","occurred_at":"2024-01-01T00:00:00Z","amount_usd":5,'
    b'"investors":["a","b"],"round":"seed"}',
    b'{"event_id":"d","kind":"model_release","company":"X","occurred_at":"2024-01-02","model_name":"m\\"1\\n",'
    b'"modality":"vision","parameters":7e9,"open_weights":true}',
    b'{"event_id":"e","kind":"departure","company":"Y","occurred_at":"2024-01-03","to_company":"","from_company":"Z"}',
    b'{"kind":"hiring","company":"\xe6\x99\xba\xe8\xb0\xb1 AI","occurred_at":"2024-01-04","from_company":"---"}',
    # fields another kind defines, as extra fields of any type: a column keeps one only where its type fits
    b'{"event_id":"f","kind":"funding","company":"X","occurred_at":"2024-01-06","amount_usd":1e15,"headcount":1.5,'
    b'"seniority":{"x":1},"model_name":5,"modality":["v"],"to_company":7,"from_company":"FAIR","reason":"layoff"}',
    b'{"event_id":"g","kind":"hiring","company":"X","occurred_at":"2024-01-07","amount_usd":"lots","model_name":"m",'
    b'"modality":"text","to_company":"OpenAI","reason":{"why":1}}',
    b'{"event_id":"h","kind":"model_release","company":"X","occurred_at":"2024-01-08","model_name":"n",'
    b'"headcount":99999999999,"amount_usd":true,"seniority":"vp"}',
    b'{"event_id":"i","kind":"departure","company":"X","occurred_at":"2024-01-09","reason":"layoff","headcount":300,'
    b'"amount_usd":12345678901234567890123,"model_name":null}',
    b'{"event_id":"a","kind":"hiring","company":"Other","occurred_at":"2024-01-05"}',  # the same id again: dropped
]
COLUMN_TYPES = {"headcount": int, "seniority": str, "amount_usd": (int, float), "model_name": str, "modality": str,
                "to_company": str, "from_company": str}


def fitting(d: dict, field: str):
    """The field if its JSON type fits the column (and an integer fits INTEGER), else None."""
    value = d.get(field)
    if isinstance(value, bool) or not isinstance(value, COLUMN_TYPES[field]):
        return None
    if field == "headcount" and not -2**31 <= value < 2**31:
        return None
    return float(value) if field == "amount_usd" else value


def expected_row(wire: bytes, late: bool, batch: str | None, companies: CompanyNormalizer, now_us: int) -> dict:
    """What the sink stored per record before it worked per batch."""
    d = orjson.loads(wire)
    # the counterparty is the field the event's kind defines; on other kinds these are extra fields
    other = fitting(d, {"departure": "to_company", "hiring": "from_company"}[d["kind"]]) if d["kind"] in ("departure", "hiring") else None
    return {
        "event_id": d["event_id"], "kind": d["kind"], "company_id": companies.company_id(d["company"]),
        "company": d["company"], "counterparty_id": companies.company_id(other) if other else None,
        "occurred_at": datetime.fromisoformat(d["occurred_at"]),
        "ingested_at": datetime.fromtimestamp(now_us / 1e6, timezone.utc), "headcount": fitting(d, "headcount"),
        "seniority": fitting(d, "seniority"), "reason": d.get("reason", "unknown") if d["kind"] == "departure" else None,
        "amount_usd": fitting(d, "amount_usd"), "model_name": fitting(d, "model_name"),
        "modality": fitting(d, "modality"), "source": d.get("source"), "region": d.get("region"), "late": late,
        "payload": wire.decode(), "batch_id": batch,
    }


def test_events_table_matches_the_row_by_row_definition():
    companies = CompanyNormalizer()
    records = EventRecords()
    wires = [to_wire(parse_event(line)) for line in LINES]
    for i, wire in enumerate(wires):
        records.add(wire, i % 3 == 1, b"b1" if i % 2 else None)  # the batch header, as it comes
    now_us = 1_700_000_000_123_456
    rows = event_rows(records, companies.company_id, datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=now_us))
    expected = [expected_row(w, i % 3 == 1, "b1" if i % 2 else None, companies, now_us)
                for i, w in enumerate(wires[:-1])]
    for row in rows:
        row["occurred_at"] = row["occurred_at"].astimezone(timezone.utc)
        row["ingested_at"] = row["ingested_at"].astimezone(timezone.utc)
    assert rows == expected
    assert rows[0]["company_id"] == "google-deepmind" and rows[0]["counterparty_id"] == "meta"
    # a departure's empty to_company is none (its from_company is an extra field); a name without letters
    assert rows[4]["counterparty_id"] is None and rows[5]["counterparty_id"] == ""
    # a funding's to_company / from_company and a hiring's to_company are extra fields, not counterparties
    assert rows[6]["counterparty_id"] is None and rows[6]["headcount"] is None and rows[6]["amount_usd"] == 1e15
    assert rows[7]["counterparty_id"] is None and rows[1]["counterparty_id"] == "openai"
    assert rows[9]["reason"] == "layoff" and rows[9]["amount_usd"] == 12345678901234567890123.0


def test_a_restart_restores_the_facts_the_events_made(tmp_path):
    """What a restarting worker reads back from the stored events is, fact for fact, what the events gave
    the first time: the counterparty only from the field the event's kind defines, never from an extra one."""
    from processors.facts import fact_from_event
    from sinks.database import Database
    from sinks.duckdb_sink import DuckDBSink
    from sinks.state import load_worker_state
    from streams.topics import Topics

    companies = CompanyNormalizer()
    extra = b'{"event_id":"j","kind":"funding","company":"X","occurred_at":"2024-01-10","amount_usd":3,"headcount":5}'
    events = [parse_event(line) for line in LINES[:-1] + [extra]]
    sink = DuckDBSink(tmp_path / "s.duckdb", Topics(), companies, "run")
    for event in events:
        sink.batch.events.add(to_wire(event), False, None)
    sink.batch.records = len(events)
    sink.flush()
    seen, _, facts, _ = load_worker_state(Database(tmp_path / "s.duckdb"))
    assert sorted(seen) == sorted(e.event_id for e in events)
    expected = {f.event_id: f for f in (fact_from_event(e, companies) for e in events)}
    assert {f.event_id: f for f in facts} == expected
    assert expected["g"].counterparty_id is None and expected["a"].counterparty_name == "FAIR"


def test_event_records_hold_one_buffer_not_an_object_per_record():
    """A sink's batch holds tens of thousands of records until it is written: their bytes are copied into
    one buffer, so the consumer's record objects are freed as they are read."""
    records = EventRecords()
    wire = to_wire(parse_event(LINES[0]))
    before = sys.getallocatedblocks()
    for i in range(10_000):
        records.add(wire + b" " * (i % 7), i % 5 == 0, b"b1" if i % 2 else None)  # a new object each, as consumed
    assert sys.getallocatedblocks() - before < 1_000
    values = records.values()
    assert len(records) == len(values) == 10_000
    assert values[3] == wire + b"   " and values[9_999] == wire + b"   " and values[7] == wire
    assert records.late[:6] == [True, False, False, False, False, True]
    assert records.batch_ids[:3] == [None, "b1", None] and records.batch_names == [None, "b1"]


def test_each_record_keeps_its_late_flag_and_batch_id_whatever_their_mix():
    """A line's code holds both (two digits from the fifth batch id on): a batch mixing a dozen batch ids,
    late and on time, within one extend and across extends, gives each row its own."""
    companies = CompanyNormalizer()
    records = EventRecords()
    expected = []
    for chunk in range(6):
        late = chunk % 2 == 1
        ids = [None if i % 5 == 0 else f"batch-{(chunk * 7 + i) % 12}".encode() for i in range(9)]
        wires = [to_wire(parse_event(b'{"event_id":"%d-%d","kind":"hiring","company":"X","occurred_at":"2024-01-01"}'
                                     % (chunk, i))) for i in range(9)]
        records.extend(wires, late, ids, ("t", chunk % 2), list(range(9)))
        expected += [(f"{chunk}-{i}", late, b.decode() if b else None) for i, b in enumerate(ids)]
    assert len(records.batch_names) == 13 and records.values()[10].startswith(b'{"')
    rows = event_rows(records, companies.company_id, datetime.now(timezone.utc))
    assert [(r["event_id"], r["late"], r["batch_id"]) for r in rows] == expected
    tail, _ = records.split_tail(20)  # held over: the codes still name the same batch ids
    assert [(r["event_id"], r["late"], r["batch_id"]) for r in event_rows(tail, companies.company_id,
                                                                           datetime.now(timezone.utc))] == expected[-20:]


def test_a_batch_is_read_from_a_file_that_is_gone_at_once(tmp_path):
    """DuckDB reads a batch's lines from a scratch file that is unlinked before it is read (through this
    process's descriptor): a sink killed in the middle of a write leaves nothing behind."""
    import duckdb

    from sinks.duckdb_sink import SCRATCH_DIR, scratch_file

    before = set(os.listdir(SCRATCH_DIR))
    with scratch_file(b"1\x01a\n2\x01b\n") as path:
        assert set(os.listdir(SCRATCH_DIR)) == before
        got = duckdb.connect().execute(f"SELECT * FROM read_csv('{path}', delim = '\x01', header = false,"
                                       " columns = {'n': 'INTEGER', 'v': 'VARCHAR'})").fetchall()
    assert got == [(1, "a"), (2, "b")] and not os.path.exists(path)


def test_the_sink_writes_every_table_without_arrow(tmp_path):
    """The sink's process never imports pyarrow (~35 MB of modules, and its allocator's pool): events,
    indicators, alerts and their history, dead letters and offsets all go to DuckDB as text it parses."""
    script = f"""
import sys, orjson
from pathlib import Path
from sinks.duckdb_sink import DuckDBSink
from streams.companies import CompanyNormalizer
from streams.events import parse_event, to_wire
from streams.topics import Topics
sink = DuckDBSink(Path({str(tmp_path / "s.duckdb")!r}), Topics(), CompanyNormalizer(), "run")
b = sink.batch
for line in {LINES[:3]!r}:
    b.events.add(to_wire(parse_event(line)), False, b"b1")
b.indicators.append(orjson.dumps([{{"company_id": "x", "window_days": 30, "window_end": "2024-01-01", "hires": 1,
    "departures": 0, "layoffs": 0, "attrition": 0, "key_departures": 0, "net_talent_flow": 1, "talent_drain_ratio": 0.0,
    "funding_usd": 0.0, "funding_rounds": 0, "model_releases": 0}}]))
alert = {{"fingerprint": "f", "rule": "r", "company_id": "x", "counterparty_id": None, "severity": "warning",
    "status": "firing", "starts_at": "2024-01-01", "ends_at": None, "evidence": {{"event_ids": ["a"]}}, "labels": {{}},
    "annotations": {{}}, "change": "fired"}}
b.alerts[("f", "2024-01-01")] = alert
b.history.append(alert)
b.dead_letters["d"] = {{"dead_letter_id": "d", "received_at": "2024-01-01T00:00:00Z", "origin": "o", "raw": "x", "error": "e"}}
b.offsets[("aisignals.events", 0)] = 3
b.records = 3
sink.flush()
print(dict(sink.rows_written), "pyarrow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["{'events':", "3,", "'indicators':", "1,", "'alerts':", "1,", "'dead_letters':", "1}", "False"]
    with Database(tmp_path / "s.duckdb").reader() as con:
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("events", "indicators", "alerts", "alert_history", "dead_letters", "sink_offsets")]
    assert counts == [3, 1, 1, 1, 1, 1]


def test_a_scratch_directory_without_room_gives_way_to_the_temp_directory(tmp_path, monkeypatch):
    """Where the memory-backed directory cannot take a batch (full, or not writable), the batch is written
    to the temp directory instead: the write goes on."""
    import duckdb

    import sinks.duckdb_sink as sink_module

    monkeypatch.setattr(sink_module, "SCRATCH_DIR", str(tmp_path / "missing"))  # mkstemp fails there
    monkeypatch.setattr(sink_module.tempfile, "tempdir", str(tmp_path))
    with sink_module.scratch_file(b"7\x01x\n") as path:
        got = duckdb.connect().execute(f"SELECT * FROM read_csv('{path}', delim = '\x01', header = false,"
                                       " columns = {'n': 'INTEGER', 'v': 'VARCHAR'})").fetchall()
    assert got == [(7, "x")] and os.listdir(tmp_path) == []


def test_a_record_laid_out_over_lines_is_stored_whole():
    """The buffer holds a record a line; JSON written over several lines (not the worker's compact JSON, but
    valid on the wire) is stored as the same event."""
    companies = CompanyNormalizer()
    records = EventRecords()
    spread = b'{\n  "event_id": "m",\n  "kind": "hiring",\n  "company": "X",\n  "occurred_at": "2024-01-01T00:00:00Z"\n}'
    records.extend([to_wire(parse_event(LINES[2])), spread], False, [None, b"b1"])
    rows = event_rows(records, companies.company_id, datetime.now(timezone.utc))
    assert [(r["event_id"], r["kind"], r["company_id"], r["batch_id"]) for r in rows] == [("c", "funding", "x", None),
                                                                                       ("m", "hiring", "x", "b1")]
    assert orjson.loads(rows[1]["payload"]) == orjson.loads(spread) and len(records.values()) == 2

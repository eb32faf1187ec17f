"""Poison input: generated bad events never crash or stall the ingest paths; each gets a reason."""

from __future__ import annotations

import json
import random
from datetime import date

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.http import split_body
from streams.events import InvalidEvent, parse_event
from streams.synthetic import steady
from tests.conftest import aisignals, fetch

FIELDS = ["event_id", "kind", "company", "occurred_at", "headcount", "seniority", "amount_usd", "model_name",
          "to_company", "investors", "open_weights", "parameters", "schema_version"]
ODD = ["\u202e", "\u200b", "\ufeff", "💥", "\x00", "é", "\U0010ffff", "ß" * 3, "\u0301"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def base_event(rng: random.Random) -> dict:
    return next(iter(steady(1, rng.randrange(10**6), date(2024, 1, 1), 30)))


def mutate(rng: random.Random, event: dict) -> bytes:
    """One kind of damage per line."""
    e = dict(event)
    choice = rng.randrange(12)
    if choice == 0:  # wrong type for a field
        e[rng.choice(FIELDS)] = rng.choice([123, 4.5, ["x"], {"a": 1}, True, "not-a-number"])
        if e.get("kind") in ("hiring", "departure", "funding", "model_release") and rng.random() < 0.5:
            e["kind"] = 7
    elif choice == 1:  # huge string
        e[rng.choice(["company", "model_name", "role"])] = "x" * rng.choice([201, 70_000])
    elif choice == 2:  # odd unicode in a required field, plus a missing one
        e["company"] = "".join(rng.choice(ODD) for _ in range(3))
        e.pop("occurred_at", None)
    elif choice == 3:  # deep nesting (written as text: too deep for a serialiser)
        depth = rng.choice([300, 5000])
        e["kind"] = "unknown-kind"
        return orjson.dumps(e)[:-1] + b',"extra": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    elif choice == 4:
        return orjson.dumps(e)[:-1] + b',"amount_usd": NaN}'
    elif choice == 5:
        return orjson.dumps(e)[:-1] + b',"headcount": Infinity}'
    elif choice == 6:  # far past / future
        e["occurred_at"] = rng.choice(["0001-01-01", "1066-10-14", "9999-12-31T23:59:59Z", "2400-01-01"])
    elif choice == 7:  # duplicate keys
        return b'{"kind": "hiring", "kind": "funding", ' + orjson.dumps(e)[1:]
    elif choice == 8:  # wrong encodings
        text = orjson.dumps({**e, "company": "Société Générale"}).decode()
        return text.encode(rng.choice(["latin-1", "utf-16"]))
    elif choice == 9:  # not an object
        return orjson.dumps(rng.choice([[e], "event", 42, None]))
    elif choice == 10:  # broken JSON
        raw = orjson.dumps(e)
        return raw[: rng.randrange(1, len(raw) - 1)]
    else:  # negative or zero numbers
        e["kind"] = "funding"
        e["amount_usd"] = -rng.random() * 1e9
    return orjson.dumps(e)


def bad_lines(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        line = mutate(rng, base_event(rng))
        try:
            parse_event(line)
        except InvalidEvent:
            out.append(line)
    return out


@settings(max_examples=3_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(FIELDS + ["extra"]), json_values, max_size=10))
def test_parse_event_never_crashes_on_generated_objects(obj):
    try:
        event = parse_event(json.dumps(obj))  # stdlib: also writes integers beyond 64 bits
    except InvalidEvent as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert event.event_id


@settings(max_examples=2_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_parse_event_never_crashes_on_bytes(raw):
    try:
        parse_event(raw)
    except InvalidEvent as exc:
        assert "\n" not in str(exc)


def test_mutated_events_each_have_a_reason():
    rng = random.Random(1)
    reasons = set()
    for _ in range(2000):
        line = mutate(rng, base_event(rng))
        try:
            parse_event(line)
        except InvalidEvent as exc:
            reasons.add(str(exc).split(":")[0])
    assert {"not JSON", "duplicate key 'kind'"} <= reasons or len(reasons) > 5


def test_http_body_splitting_never_crashes():
    rng = random.Random(2)
    for _ in range(500):
        items = [mutate(rng, base_event(rng)) for _ in range(rng.randrange(1, 6))]
        body = b"\n".join(i.replace(b"\n", b" ") for i in items)
        try:
            parts = split_body(body, rng.choice(["application/json", "application/x-ndjson", ""]))
        except Exception as exc:  # noqa: BLE001 - only HTTP errors are allowed out
            assert type(exc).__name__ == "HTTPException"
            continue
        for part in parts:
            try:
                parse_event(part)
            except InvalidEvent:
                pass


@pytest.mark.e2e
def test_ten_thousand_bad_lines_in_a_backfill_are_all_dead_lettered(tmp_path):
    bad = bad_lines(10_000, 3)
    good = [orjson.dumps(e) for e in steady(1000, 5, date(2024, 1, 1), 60)]
    rng = random.Random(4)
    lines = bad + good
    rng.shuffle(lines)
    path = tmp_path / "poison.jsonl"
    # one physical line per record: a newline inside a bad record would make two records
    path.write_bytes(b"\n".join(l.replace(b"\n", b" ").replace(b"\r", b" ") for l in lines) + b"\n")
    db = tmp_path / "p.duckdb"
    aisignals("backfill", str(path), "--db", str(db), timeout=600)
    assert fetch(db, "SELECT count(*) FROM events")[0][0] == 1000
    assert fetch(db, "SELECT count(*) FROM dead_letters")[0][0] == 10_000
    assert fetch(db, "SELECT count(*) FROM dead_letters WHERE error = '' OR error IS NULL")[0][0] == 0


def test_a_line_cut_short_by_the_producer_is_dead_lettered_with_its_whole_length():
    """The producer sends a line over RAW_LIMIT cut short, with its length (in the pack, or a header when
    alone): its dead letter keeps what came and gives the length the line had."""
    from collections import defaultdict
    from types import SimpleNamespace

    from processors.app import Outputs, Worker
    from processors.rules import load_rules
    from streams.companies import normalizer
    from streams.events import RAW_LIMIT
    from streams.topics import CUT, FORMAT, ORIGIN, Topics

    topics = Topics("cut", 1)
    worker = Worker("127.0.0.1:1", topics, load_rules(None), normalizer())  # never started: no broker needed
    kept = ("[" + "1," * (RAW_LIMIT // 2))[:RAW_LIMIT]
    good = orjson.dumps({"kind": "hiring", "company": "Fictional Co", "occurred_at": "2024-01-01"}).decode()
    pack = SimpleNamespace(value=orjson.dumps({"origins": ["f:1", "f:2"], "lines": [kept, good], "cut": {"f:1": 30_000_000}}))
    alone = SimpleNamespace(value=kept.encode())
    reasons = []
    for message, headers in ((pack, {FORMAT: b"batch"}), (alone, {ORIGIN: b"f:3", CUT: b"12345678"})):
        out = Outputs()
        worker._admit(out, defaultdict(list), worker._raw_items(message, headers), "", None)
        (letter,) = [orjson.loads(v) for (_, v, _, _) in out.records[(topics.dead_letters, 0)]]
        assert letter["raw"] == kept
        reasons.append((letter["origin"], letter["error"]))
    assert reasons == [("f:1", f"line is 30000000 bytes, over the 65536-byte limit; its first {RAW_LIMIT} bytes are kept"),
                       ("f:3", f"line is 12345678 bytes, over the 65536-byte limit; its first {RAW_LIMIT} bytes are kept")]


@pytest.mark.e2e
def test_a_backfill_of_long_lines_and_a_file_sized_line_loses_nothing(tmp_path):
    """Lines just under 64 KiB fill many ingest records, and one 9 MB line (more than a Kafka record takes)
    is a dead letter with its length; so is a 2 MB line that is not UTF-8 (kept in its backslash form, as
    any such dead letter). The backfill does not fail."""
    lines = [orjson.dumps({"event_id": f"long-{i}", "kind": "hiring", "company": "Fictional Long Co",
                           "occurred_at": f"2024-01-{1 + i % 28:02d}", "note": "x" * 60_000}) for i in range(300)]
    lines.append(orjson.dumps({"event_id": "huge", "kind": "hiring", "company": "Fictional Long Co",
                               "occurred_at": "2024-02-01", "note": "y" * 9_000_000}))
    lines.append(b"\xff" * 2_000_000)
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "l.duckdb"
    aisignals("backfill", str(path), "--db", str(db), timeout=300)
    assert fetch(db, "SELECT count(*), min(length(payload ->> 'note')) FROM events") == [(300, 60_000)]
    kept = "its first 1048576 bytes are kept"
    assert fetch(db, "SELECT origin, length(raw), error FROM dead_letters ORDER BY origin") == [
        ("long.jsonl:301", 1024 * 1024, f"line is {len(lines[-2])} bytes, over the 65536-byte limit; {kept}"),
        ("long.jsonl:302", 4 * 1024 * 1024, f"line is 2000000 bytes, over the 65536-byte limit; {kept}")]

"""The sequencer's batch parser (plain dicts) against the models, line by line, on generated input."""

from __future__ import annotations

import json
import random

import orjson

from processors.facts import fact_from_event, fact_row, fact_tuple
from streams.companies import normalizer
from streams.events import InvalidEvent, dict_to_wire, parse_event, parse_lines, to_wire

FIELDS = ["event_id", "kind", "company", "occurred_at", "headcount", "seniority", "amount_usd", "model_name", "to_company",
          "from_company", "investors", "open_weights", "parameters", "schema_version", "reason", "source", "region", "person",
          "role", "round", "modality", "extra"]
BASE = [
    {"event_id": "a", "kind": "hiring", "company": "Acme AI", "occurred_at": "2024-01-01T10:00:00Z", "from_company": "Beta"},
    {"kind": "departure", "company": "Acme", "occurred_at": "2024-01-01", "seniority": "vp", "to_company": "Gamma"},
    {"kind": "departure", "company": "Acme", "occurred_at": "2024-01-01T10:00:00+02:00", "reason": "layoff", "headcount": 30},
    {"kind": "funding", "company": "Zeta", "occurred_at": "2024-02-02", "amount_usd": 1.5e9, "investors": ["x"]},
    {"kind": "model_release", "company": "智谱", "occurred_at": "2024-03-03", "model_name": "m", "parameters": 7e9},
]


def _value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(9 if depth < 2 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice([0, -1, 1, 3, 2**63, 2**64 + 5, -2**70, 10**30])
    if choice == 3:
        return rng.choice([0.0, -0.0, 1.5, 1e15, 1e16, 1e-7, 0.1, 1e21, 5e-324, 123456789.125])
    if choice == 4:
        return "".join(rng.choice(["a", "Z", "1", " ", "\u202e", "é", "💥", "\x00", "\x1f", "/", '"', "-"])
                       for _ in range(rng.randrange(0, 8)))
    if choice == 5:
        return rng.choice(["2024-01-01", "2024-01-01T10:00:00", "2024-02-30", "1899-12-31", " 2024-03-03 ", "hiring",
                           "departure", "funding", "model_release", "layoff", "vp", "unknown", ""])
    if choice in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))]
    return {rng.choice(["a", "kind", "é"]): _value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}


def generated_lines(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        obj = dict(rng.choice(BASE))
        for _ in range(rng.randrange(0, 3)):
            obj[rng.choice(FIELDS)] = _value(rng)
        if rng.random() < 0.2:
            obj.pop(rng.choice(FIELDS), None)
        lines.append(json.dumps(obj, ensure_ascii=rng.random() < 0.5, separators=rng.choice([(",", ":"), (", ", ": ")])).encode())
    return lines


def _by_models(line: bytes):
    try:
        event = parse_event(line)
    except InvalidEvent as exc:
        return "invalid", str(exc)
    return "ok", to_wire(event), fact_tuple(fact_from_event(event, normalizer()))


def _by_dicts(parsed):
    if isinstance(parsed, InvalidEvent):
        return "invalid", str(parsed)
    return "ok", dict_to_wire(parsed), fact_row(parsed, normalizer())


def test_batch_dicts_match_the_models_line_by_line():
    lines = generated_lines(4000, 9)
    expected = [_by_models(line) for line in lines]
    assert 500 < sum(e[0] == "ok" for e in expected) < 3500  # both outcomes are exercised
    for size in (1, 37, 4000):  # batches with and without an invalid line
        got = []
        for i in range(0, len(lines), size):
            got += [_by_dicts(p) for p in parse_lines(lines[i : i + size])]
        assert got == expected


def test_extra_fields_named_like_other_kinds_fields_do_not_reach_the_fact():
    line = orjson.dumps({"kind": "funding", "company": "Acme", "occurred_at": "2024-01-01", "amount_usd": 5,
                         "to_company": "Beta", "headcount": 9, "reason": "layoff", "seniority": "vp"})
    row = fact_row(parse_lines([line])[0], normalizer())
    assert row[3] is None and row[6] == 1 and row[7] is False and row[9] is False and row[11] is None
    assert row == fact_tuple(fact_from_event(parse_event(line), normalizer()))

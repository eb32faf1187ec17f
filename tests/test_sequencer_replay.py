"""The replay order of a backfill: invalid lines first, then by event time, ties in file order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import orjson

from streams.reader import RawLine, replay_order


def test_replay_order_is_a_stable_sort_by_time():
    rng = random.Random(5)
    start = datetime(1969, 12, 25, tzinfo=timezone.utc)  # times before the epoch too
    lines = []
    for i in range(3000):
        if rng.random() < 0.05:
            lines.append(RawLine(f"in:{i}", b"not json"))
            continue
        at = start + timedelta(seconds=rng.choice([0, 1, 2, 86_400 * 30]) + rng.randrange(3) * 1e-6)
        lines.append(RawLine(f"in:{i}", orjson.dumps({"kind": "hiring", "company": "X", "occurred_at": at.isoformat(), "n": i})))
    plan = replay_order(lines)
    got = [item.origin for item in plan]
    bad = [line.origin for line in lines if line.raw == b"not json"]
    good = [line for line in lines if line.raw != b"not json"]
    good.sort(key=lambda line: orjson.loads(line.raw)["occurred_at"])  # ISO text in one zone sorts as time
    assert got == bad + [line.origin for line in good]
    assert len(set(got)) == len(lines)


def test_an_empty_replay():
    assert list(replay_order([])) == []

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


def test_lines_made_in_memory_come_back_with_their_origins():
    origins = ["a.csv:1", "a.csv:2", "live", "b:c:7", "x:007", "x:0", "x:", ":5", "é:12", "big:4294967296", "a.csv:3"]
    lines = [RawLine(o, orjson.dumps({"kind": "hiring", "company": "X", "occurred_at": f"2024-01-{i + 1:02d}", "o": o}))
             for i, o in enumerate(origins)]
    lines.insert(3, RawLine("bad:9", b'{"kind": broken'))
    plan = replay_order(lines)
    items = list(plan)
    assert [(i.origin, i.value) for i in items] == [("bad:9", b'{"kind": broken')] + [
        (line.origin, line.raw) for line in lines if line.origin != "bad:9"]
    assert list(plan) == items  # and again: the spill file is read, not consumed


def test_input_already_in_time_order_keeps_its_order():
    lines = [RawLine(f"in:{i}", orjson.dumps({"kind": "hiring", "company": "X", "occurred_at": f"2024-01-{1 + i // 3:02d}"}))
             for i in range(30)]
    lines.insert(7, RawLine("in:bad", b"[]"))
    assert [item.origin for item in replay_order(lines)] == ["in:bad"] + [f"in:{i}" for i in range(30)]


def test_lines_read_again_from_their_files_in_spans_are_exact(tmp_path, monkeypatch):
    """Neighbouring lines are read back with one read per span: every line comes back byte for byte, whatever
    lies between them (line breaks of either kind, blank runs longer than a gap, padding) and however long."""
    from streams import reader
    from streams.reader import jsonl_lines

    rng = random.Random(11)
    path = tmp_path / "in.jsonl"
    chunks, expected = [], {}
    for i in range(2000):
        day = 1 + i // 80 if rng.random() < 0.9 else rng.randrange(1, 28)  # mostly in order, some not
        extra = "x" * (rng.choice([0, 0, 0, 50, 3000]) if i != 1234 else 70_000)
        line = orjson.dumps({"kind": "hiring", "company": "X", "occurred_at": f"2024-01-{day:02d}", "i": i, "pad": extra})
        if rng.random() < 0.1:
            line = b"not json " + line  # dead letters come first, read the same way
        chunks.append(rng.choice([b"", b"  ", b"\t"]) + line + rng.choice([b"\n", b"\r\n", b" \n"]))
        if rng.random() < 0.02:
            chunks.append(b"\n" * rng.choice([1, 5000]))  # blank lines: a gap, sometimes longer than READ_GAP
    path.write_bytes(b"".join(chunks))
    lines = list(jsonl_lines(path))
    expected = {line.origin: line.raw for line in lines}
    for span in (reader.READ_SPAN, 64 * 1024, 100):
        monkeypatch.setattr(reader, "READ_SPAN", span)
        items = list(replay_order(jsonl_lines(path)))
        assert len(items) == len(lines) == 2000
        assert all(item.value == expected[item.origin] for item in items)
        bad = [line.origin for line in lines if reader.replay_time_us(line.raw) is None]  # incl. the over-long line
        assert len(bad) > 100 and [item.origin for item in items[:len(bad)]] == bad


def test_files_read_straight_into_the_plan_give_the_same_replay(tmp_path):
    """``replay_files`` (what a JSON Lines backfill reads with) makes exactly the plan of ``replay_order`` over
    ``jsonl_lines``: origins, bytes and order, over several files with blank lines, padding, both line breaks,
    bad lines and times before the epoch."""
    from streams.reader import jsonl_lines, replay_files

    rng = random.Random(3)
    paths = []
    for f in range(3):
        path = tmp_path / f"part{f}.jsonl"
        chunks = []
        for i in range(700):
            at = datetime(1969, 12, 30, tzinfo=timezone.utc) + timedelta(hours=rng.randrange(200), microseconds=rng.randrange(3))
            line = orjson.dumps({"kind": "hiring", "company": "X", "occurred_at": at.isoformat(), "f": f, "i": i})
            if rng.random() < 0.05:
                line = rng.choice([b"[]", b"{broken", b'{"occurred_at": "yesterday"}'])
            chunks.append(rng.choice([b"", b" ", b"\t "]) + line + rng.choice([b"\n", b"\r\n", b" \n", b"\n\n\n"]))
        chunks.append(b"   ")  # a last line of blanks, no line break
        path.write_bytes(b"".join(chunks))
        paths.append(path)
    plan = replay_files(paths)
    reference = replay_order(line for path in paths for line in jsonl_lines(path))
    assert len(plan) == len(reference) == 2100
    assert [(i.origin, i.value, i.time_ms) for i in plan] == [(i.origin, i.value, i.time_ms) for i in reference]

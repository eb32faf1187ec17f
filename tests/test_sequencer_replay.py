"""The replay order of a backfill: invalid lines first, then by event time, ties in file order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from streams.lines import MAX_LINE_BYTES, to_utc
from streams.reader import RawLine, replay_order, replay_time_us


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


def _mixed_jsonl(path, n: int, seed: int, pad: bytes = b"") -> None:
    """Lines in no time order, with blank lines, padding, both line breaks and bad lines."""
    rng = random.Random(seed)
    chunks = []
    for i in range(n):
        at = datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(10_000))
        line = orjson.dumps({"kind": "hiring", "company": "X", "occurred_at": at.isoformat(), "i": i, "pad": pad.decode()})
        if rng.random() < 0.03:
            line = rng.choice([b"[]", b"{broken", b'{"occurred_at": "yesterday"}'])
        chunks.append(rng.choice([b"", b" "]) + line + rng.choice([b"\n", b"\r\n", b"\n\n"]))
    path.write_bytes(b"".join(chunks))


def test_a_file_read_in_ranges_gives_the_plan_of_one_read(tmp_path):
    """Cut into ranges at line starts and read apart (as ``read_jsonl`` does in other processes), the files
    give exactly the plan of reading each in one piece: line numbers, offsets, times and order."""
    from streams.reader import file_ranges, replay_files

    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "empty.jsonl"]
    _mixed_jsonl(paths[0], 3000, 1)
    _mixed_jsonl(paths[1], 1000, 2)
    paths[2].write_bytes(b"")
    ranges = file_ranges(paths, 4, min_bytes=1000)
    assert [r.number for r in ranges].count(0) == 4 and [r.number for r in ranges].count(1) == 4
    for path in paths:  # the ranges cover each file exactly, each beginning at a line start
        mine = [r for r in ranges if r.path == path]
        data = path.read_bytes()
        assert mine[0].start == 0 and mine[-1].end == len(data)
        assert all(a.end == b.start and data[b.start - 1:b.start] == b"\n" for a, b in zip(mine, mine[1:]))
    whole = replay_files(paths)
    pieces = replay_files(paths, 4, min_piece_bytes=1000)
    assert len(whole) == len(pieces) > 3900
    assert [(i.origin, i.value, i.time_ms) for i in pieces] == [(i.origin, i.value, i.time_ms) for i in whole]


def test_read_jsonl_reads_a_large_file_in_other_processes_into_the_same_plan(tmp_path):
    """Above the size worth it, ``read_jsonl`` reads the ranges in a process pool: the same plan."""
    from aisignals.children import read_jsonl
    from streams.reader import file_ranges, replay_files

    path = tmp_path / "large.jsonl"
    _mixed_jsonl(path, 20_000, 3, pad=b"x" * 400)
    assert len(file_ranges([path], 2)) == 2  # big enough to be read in two processes
    plan = read_jsonl([path], processes=2)
    whole = replay_files([path])
    assert [(i.origin, i.value, i.time_ms) for i in plan] == [(i.origin, i.value, i.time_ms) for i in whole]


def test_the_input_readers_import_no_event_models():
    """The processes that read a backfill's input start on the command's critical path: what they import
    (the reader, the line limits, the time parser) leaves out pydantic and the event models."""
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys, streams.reader; print(sorted("
                             "m for m in ('pydantic', 'streams.events') if m in sys.modules))"],
                            capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent).stdout
    assert loaded.strip() == "[]"


def _time_read_whole(raw: bytes) -> int | None:
    """The reference: the whole line parsed by orjson, its ``occurred_at`` read as the validator reads it."""
    if len(raw) > MAX_LINE_BYTES:
        return None
    try:
        delta = to_utc(orjson.loads(raw)["occurred_at"]) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def test_the_replay_time_of_a_line_is_the_time_the_whole_parse_reads():
    """``replay_time_us`` reads only ``occurred_at`` (msgspec); on every kind of line it gives the time, or
    None, that parsing the whole line gives, but for a number beyond a float's range in another field."""
    conformance = Path(__file__).parent / "data" / "conformance"
    lines = [line.strip() for path in sorted(conformance.glob("*.jsonl")) for line in path.read_bytes().splitlines()]
    lines += [
        b'{"occurred_at":"2022-01-01T00:00:00Z","occurred_at":"2023-06-01T12:00:00+05:30"}',  # the last one wins
        b'{"occurred_at":"2024-02-29T23:59:59.999999-08:00","x":[1,{"y":null}]}',
        b'{"occurred_at":"1969-12-31T23:59:59.5Z"}', b'{"occurred_at":"2024-01-01"}', b'{"occurred_at":"2024-01-01 "}',
        b'{"occurred_at":"\\u0032024-01-01"}', b'{"occurred_at":"2024-01-01","x":"caf\xc3\xa9"}',
        b'{"occurred_at":"2024-01-01","x":"\xff\xfe"}',  # not UTF-8: not an event
        b'{"occurred_at":"2024-01-01","x":"\\ud800"}', b'{"occurred_at":"2024-01-01","x":NaN}',
        b'{"occurred_at":"2024-01-01","x":01}', b'{"occurred_at":"2024-01-01","x":"a\tb"}',
        b'{"occurred_at":"2024-01-01",}', b'{"occurred_at":"2024-01-01"} x', b'\xef\xbb\xbf{"occurred_at":"2024-01-01"}',
        b'{"occurred_at":null}', b'{"occurred_at":20240101}', b'{"occurred_at":["2024-01-01"]}', b'{"occurred_at":"0001-01-01"}',
        b'{"occurred_at":"2024-13-01"}', b'{"x":{"occurred_at":"2024-01-01"}}', b'{"Occurred_at":"2024-01-01"}',
        b'["occurred_at"]', b'"2024-01-01"', b'{}', b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"occurred_at":"2024-01-01","pad":"' + b"x" * 70_000 + b'"}',  # too long to be an event
    ]
    assert len(lines) > 40
    assert sum(_time_read_whole(line) is None for line in lines) > 20  # the corpus has both kinds
    for line in lines:
        assert replay_time_us(line) == _time_read_whole(line), line[:80]
    beyond = b'{"occurred_at":"2024-01-01","x":1e400}'  # orjson refuses the number; the line is ordered by its time
    assert _time_read_whole(beyond) is None and replay_time_us(beyond) == _time_read_whole(b'{"occurred_at":"2024-01-01"}')

"""Producing a bulk replay to a real broker: packed records, all of them delivered, a bounded number in flight."""

from __future__ import annotations

import orjson

from streams import producer as producer_module
from streams.admin import ensure_topics
from streams.companies import CompanyNormalizer
from streams.producer import EventProducer
from streams.reader import ReplayItem
from streams.topics import CUT, FORMAT, Topics
from tests.conftest import read_topic


def test_a_bulk_replay_keeps_few_records_unacknowledged_and_delivers_all(broker, monkeypatch):
    """kafka-python 3 buffers without bound: the producer waits for the oldest record once IN_FLIGHT are
    unacknowledged, and every line still arrives, in order, packed per_record to a record."""
    monkeypatch.setattr(producer_module, "IN_FLIGHT", 3)
    topics = Topics("prod", 1)
    ensure_topics(broker.bootstrap, topics)
    producer = EventProducer(broker.bootstrap, topics, CompanyNormalizer())
    futures, most = [], [0]
    send = producer.producer.send

    def counting_send(*args, **kwargs):
        futures.append(send(*args, **kwargs))
        most[0] = max(most[0], sum(not f.is_done for f in futures))
        return futures[-1]

    producer.producer.send = counting_send
    items = [ReplayItem(f"in:{i}", orjson.dumps({"i": i}), None, None) for i in range(230)]
    try:
        assert producer.send_packed(items, per_record=10) == 230
        producer.flush()
    finally:
        producer.close()
    assert len(futures) == 23 and most[0] <= 3 + 1  # the one just sent, and at most IN_FLIGHT before it
    records = read_topic(broker.bootstrap, topics.ingest)
    packs = [orjson.loads(r.value) for r in records if dict(r.headers or ()).get(FORMAT) == b"batch"]
    assert [line for p in packs for line in p["lines"]] == [item.value.decode() for item in items]


def test_packs_stay_within_their_byte_bound_and_a_line_too_long_for_kafka_is_cut(broker):
    """Lines of a valid size (under 64 KiB) still fill many packs: each pack closes at PACK_BYTES, so
    none outgrows what the broker takes. A line over RAW_LIMIT (a file with no newlines) goes on cut
    short, with its length, packed or sent alone."""
    topics = Topics("big", 1)
    ensure_topics(broker.bootstrap, topics)
    producer = EventProducer(broker.bootstrap, topics, CompanyNormalizer())
    line = orjson.dumps({"kind": "hiring", "company": "Fictional Co", "occurred_at": "2024-01-01", "note": "x" * 60_000})
    huge = b"[" + b"1," * 5_000_000 + b"1]"  # 10 MB: over max_request_size (8 MiB) on its own
    items = [ReplayItem(f"in:{i}", line, None, None) for i in range(300)] + [ReplayItem("in:300", huge, None, None)]
    try:
        assert producer.send_packed(items) == 301
        producer.send(ReplayItem("alone:1", huge, None, None))
        producer.flush()
    finally:
        producer.close()
    records = read_topic(broker.bootstrap, topics.ingest)
    packs = [orjson.loads(r.value) for r in records if dict(r.headers or ()).get(FORMAT) == b"batch"]
    # a pack closes once it holds PACK_BYTES: at most one line (cut to RAW_LIMIT) over, and JSON's quoting
    bound = producer_module.PACK_BYTES + producer_module.RAW_LIMIT + 65_536
    assert len(packs) > 1 and max(len(r.value) for r in records) < bound < 8 * 1024 * 1024
    assert [line for p in packs for line in p["lines"]][:300] == [line.decode()] * 300
    assert packs[-1]["lines"][-1] == huge[: producer_module.RAW_LIMIT].decode()
    assert packs[-1]["cut"] == {"in:300": len(huge)} and all("cut" not in p for p in packs[:-1])
    (alone,) = [r for r in records if dict(r.headers or ()).get(FORMAT) != b"batch"]
    assert alone.value == huge[: producer_module.RAW_LIMIT] and dict(alone.headers)[CUT] == str(len(huge)).encode()


def test_a_plan_sends_lines_that_follow_each_other_in_a_file_as_its_bytes(broker, tmp_path):
    """A replay plan's packs of lines that follow each other in one file, a line break apart, go as the
    file's bytes (``aisignals-format: lines``); any other pack (lines out of order, a blank line between,
    a CRLF ending, bytes that are not UTF-8) as a JSON pack. The sequencer reads the same lines with the
    same origins from both, in the plan's order."""
    from processors.app import Worker
    from streams.reader import replay_files

    def line(day: int, **extra) -> bytes:
        return orjson.dumps({"kind": "hiring", "company": "Fictional Co", "occurred_at": f"2024-01-{day:02d}", **extra})

    text = b"\n".join(line(1 + i // 100, n=i) for i in range(1_000)) + b"\n"  # in time order
    text += line(12) + b"\r\n" + line(12) + b"\n\n" + line(12, note="\xff".encode("latin-1").decode("latin-1")) + b"\n"
    text += line(13)[:-1] + b',"bad":"\xff"}\n'  # not UTF-8
    text += b"\n".join(line(14 + i // 100, n=i) for i in range(250)) + b"\n" + line(2) + b"\n"  # the last one is earlier
    path = tmp_path / "in.jsonl"
    path.write_bytes(text)
    plan = replay_files([path])
    topics = Topics("runs", 1)
    ensure_topics(broker.bootstrap, topics)
    producer = EventProducer(broker.bootstrap, topics, CompanyNormalizer())
    try:
        assert producer.send_packed(plan, per_record=100) == len(plan) == 1_255
        producer.flush()
    finally:
        producer.close()
    records = read_topic(broker.bootstrap, topics.ingest)
    formats = [dict(r.headers or ()).get(FORMAT) for r in records]
    assert formats.count(b"lines") >= 10 and formats.count(b"batch") >= 1
    got = []
    for record in records:
        lines = Worker._raw_items(record, dict(record.headers or ()))
        got += [(lines.origins[i], raw) for i, raw in enumerate(lines.raws)]
        if dict(record.headers or ()).get(FORMAT) == b"lines":
            assert record.value in text and 0 < len(lines.raws) <= 100
    # what a JSON pack carries of each line (bytes that are not UTF-8 come escaped), in the plan's order
    assert got == [(item.origin, item.value.decode("utf-8", "backslashreplace").encode()) for item in plan]
    assert got[0] == ("in.jsonl:1005", line(13)[:-1] + b',"bad":"\\xff"}')  # no valid time: first
    assert got[1][0] == "in.jsonl:1" and got[201][0] == "in.jsonl:1256"  # last in the file, ordered by its day (2)

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

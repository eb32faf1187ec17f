"""Producing a bulk replay to a real broker: packed records, all of them delivered, a bounded number in flight."""

from __future__ import annotations

import orjson

from streams import producer as producer_module
from streams.companies import CompanyNormalizer
from streams.producer import EventProducer
from streams.reader import ReplayItem
from streams.topics import FORMAT, Topics, ensure_topics
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

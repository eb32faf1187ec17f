"""The topic check a part runs when its broker is back, against a real broker that comes back empty.

Deterministic: the broker is restarted before the check runs (the outage e2e tests reach this path
only when the restart falls between two readiness polls)."""

from __future__ import annotations

import asyncio
import logging

from kafka.admin import KafkaAdminClient

from aisignals.pipeline import Pipeline
from streams.broker import EmbeddedBroker
from streams.settings import Settings


def partitions_on(bootstrap: str) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-admin")
    try:
        names = [t for t in admin.list_topics() if t.startswith("aisignals.")]
        return {m.get("name") or m.get("topic"): len(m["partitions"]) for m in admin.describe_topics(names)}
    finally:
        admin.close()


def test_topics_are_created_again_on_a_broker_that_came_back_empty(tmp_path, caplog):
    first = EmbeddedBroker(tmp_path / "first.log")
    first.start()
    again = None
    try:
        pipeline = Pipeline(Settings(bootstrap=first.bootstrap, db=tmp_path / "t.duckdb", partitions=3))
        pipeline.start_broker()
        layout = pipeline.topics.layout()
        assert partitions_on(first.bootstrap) == layout
        run_id = pipeline.run_id

        first.stop()
        again = EmbeddedBroker(tmp_path / "again.log", port=first.port)
        again.start()
        assert partitions_on(again.bootstrap) == {}  # Tansu's memory engine came back empty

        with caplog.at_level(logging.WARNING, logger="aisignals"):
            checked = asyncio.run(pipeline.check_topics())
        assert checked, caplog.text
        assert "topics not checked" not in caplog.text
        assert partitions_on(again.bootstrap) == layout
        if any(pipeline.topic_ids.values()):  # the broker names its topics: the offsets of the old logs are void
            assert pipeline.run_id != run_id and "topics created anew" in caplog.text
    finally:
        first.stop()
        if again is not None:
            again.stop()


def test_a_check_against_no_broker_is_reported_not_raised(tmp_path, caplog):
    broker = EmbeddedBroker(tmp_path / "b.log")
    broker.start()
    try:
        pipeline = Pipeline(Settings(bootstrap=broker.bootstrap, db=tmp_path / "t.duckdb"))
        pipeline.start_broker()
    finally:
        broker.stop()
    with caplog.at_level(logging.WARNING, logger="aisignals"):
        assert asyncio.run(pipeline.check_topics()) is False
    assert "topics not checked" in caplog.text and "Unrecognized" not in caplog.text

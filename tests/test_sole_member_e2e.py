"""A stage that is the only member its consumer group will ever have (a backfill's, on its private broker)
takes every partition of its topics without a group join, which the embedded broker answers only after
a second: records from every partition reach its agent, its offsets are committed as before, and the
consumer never joined (a join gives it a generation)."""

from __future__ import annotations

import asyncio

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processors.app import TablelessTableManager  # also applies the Faust tuning, as the worker does
from streams.admin import ensure_topics
from streams.topics import Topics

pytestmark = pytest.mark.e2e
PARTITIONS = 4


def app_on(bootstrap: str, datadir, topic_name: str, sole_member: bool):
    app = faust.App("sole-member-test", broker=f"kafka://{bootstrap}", autodiscover=False, web_enabled=False,
                    store="memory://", datadir=str(datadir), topic_allow_declare=False, topic_disable_leader=True,
                    TableManager=TablelessTableManager, consumer_auto_offset_reset="earliest",
                    broker_session_timeout=2.0, broker_heartbeat_interval=0.3)
    if sole_member:
        app.aisignals_sole_member = {topic_name: PARTITIONS}
    return app


async def consume_each_partition(bootstrap: str, datadir, topic_name: str, sole_member: bool):
    """Send one record to each partition, run an app until its agent has them all; returns what it got,
    the consumer's generation and assignment, and the offsets committed for its group once stopped."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in range(PARTITIONS):
            await producer.send_and_wait(topic_name, f"record {p}".encode(), partition=p)
    finally:
        await producer.stop()
    app = app_on(bootstrap, datadir, topic_name, sole_member)
    got: list[tuple[int, bytes]] = []

    async def collect(stream):
        async for event in stream.events():
            got.append((event.message.partition, event.value))

    app.agent(app.topic(topic_name, partitions=PARTITIONS, key_serializer="raw", value_serializer="raw"),
              name="collect")(collect)
    await app.start()
    try:
        for _ in range(300):
            if len(got) == PARTITIONS:
                break
            await asyncio.sleep(0.1)
        consumer = app.consumer._thread._ensure_consumer()
        generation, assignment = consumer._coordinator.generation, consumer.assignment()
        await asyncio.sleep(0.2)  # the last record is acknowledged once its agent asks for the next
        assert await app.consumer.commit()
    finally:
        await app.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="sole-member-test", enable_auto_commit=False)
    await reader.start()
    try:
        committed = {p: await reader.committed(TopicPartition(topic_name, p)) for p in range(PARTITIONS)}
    finally:
        await reader.stop()
    return sorted(got), generation, assignment, committed


@pytest.mark.parametrize("sole_member", [True, False], ids=["sole member", "member of a group (the control)"])
def test_a_sole_member_takes_every_partition_without_a_join(tmp_path, broker, sole_member):
    """Without the setting (``up``, or a Kafka cluster) the same app joins its group: a generation."""
    topics = Topics(partitions=PARTITIONS)
    ensure_topics(broker.bootstrap, topics)
    got, generation, assignment, committed = asyncio.run(
        consume_each_partition(broker.bootstrap, tmp_path, topics.facts, sole_member))
    assert got == [(p, f"record {p}".encode()) for p in range(PARTITIONS)]
    assert assignment == {TopicPartition(topics.facts, p) for p in range(PARTITIONS)}
    assert committed == {p: 1 for p in range(PARTITIONS)}
    if sole_member:
        assert generation == -1  # it never joined the group
    else:
        assert generation >= 0

"""The pipeline's Kafka clients do not create topics by asking about them, against a real broker.

Tansu creates any topic a metadata request names, with 4 partitions, unless the request says not to.
When a broker without durable storage came back empty, the worker's and the sink's clients asked for
their topics before the topic check made them again, and the ingest topic came back with 4 partitions
that every part then refused."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.protocol.metadata import MetadataRequest
from kafka.errors import KafkaTimeoutError as SyncKafkaTimeoutError

from streams.broker import free_port
from streams.companies import CompanyNormalizer
from streams.producer import EventProducer
from streams.security import aiokafka_kwargs, kafka_python_kwargs
from streams.settings import Settings
from streams.topics import Topics
from tests.conftest import aisignals
from tests.test_cluster_parts_e2e import start


async def topics_on(bootstrap: str, create: str | None = None) -> dict[str, int]:
    """Topic → partition count; ``create``: name it in a request that asks for auto-creation first."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        if create:
            await client.send(node, MetadataRequest([create], allow_auto_topic_creation=True))
        listed = (await client.send(node, MetadataRequest(None))).to_object()["topics"]  # all of them
        return {t["topic"]: len(t["partitions"]) for t in listed}
    finally:
        await client.close()


def test_the_broker_would_create_a_topic_a_client_asks_about(broker):
    """The other side of the tests below: the broker does create on request, with 4 partitions."""
    assert asyncio.run(topics_on(broker.bootstrap, create="asked-for")) == {"asked-for": 4}


def test_aiokafka_clients_do_not_create_the_topics_they_ask_about(broker):
    kwargs = aiokafka_kwargs(Settings())

    async def ask() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=2000, **kwargs)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, **kwargs)
        await producer.start()
        await consumer.start()
        consumer.assign([TopicPartition("consumed-topic", 0)])  # as the sink reads its topics
        try:
            with pytest.raises((KafkaTimeoutError, UnknownTopicOrPartitionError)):
                await producer.send_and_wait("produced-topic", b"x")
            await consumer.getmany(timeout_ms=1500)
        finally:
            await consumer.stop()
            await producer.stop()

    asyncio.run(ask())
    assert asyncio.run(topics_on(broker.bootstrap)) == {}


def test_the_event_producer_does_not_create_the_ingest_topic(broker):
    producer = EventProducer(broker.bootstrap, Topics(), CompanyNormalizer(), max_block_ms=1500,
                             **kafka_python_kwargs(Settings()))
    try:
        with pytest.raises(SyncKafkaTimeoutError):
            producer.producer.partitions_for(Topics().ingest)
    finally:
        producer.producer.close(timeout=1)
    assert asyncio.run(topics_on(broker.bootstrap)) == {}


@pytest.mark.e2e
def test_following_the_alerts_before_the_pipeline_creates_its_topics(broker):
    """`alerts tail` and `serve` may start first: they create the topics with the pipeline's layout (a
    client that only asked would wait for them forever), and a layout that differs is one readable line."""
    tail = aisignals("alerts", "tail", "--bootstrap", broker.bootstrap, "--partitions", "3", "--idle", "1", timeout=60)
    assert tail.stdout == ""
    layout = Topics(partitions=3).layout()
    assert asyncio.run(topics_on(broker.bootstrap)) == layout

    wrong = aisignals("alerts", "tail", "--bootstrap", broker.bootstrap, "--idle", "1", check=False, timeout=60)
    assert wrong.returncode != 0 and wrong.stderr.strip().splitlines() == [
        "aisignals: error: topic aisignals.events has 3 partitions, the pipeline expects 4 (use --partitions to"
        " match, or a fresh --topic-prefix)"]


@pytest.mark.e2e
def test_serve_before_the_pipeline_creates_the_topics(broker, tmp_path):
    port = free_port()
    serve = start("serve", "--bootstrap", broker.bootstrap, "--db", str(tmp_path / "s.duckdb"), "--port", str(port),
                  "--partitions", "2")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert asyncio.run(topics_on(broker.bootstrap)) == Topics(partitions=2).layout()
    finally:
        serve.terminate()
        serve.communicate(timeout=60)

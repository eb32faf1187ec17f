"""The pipeline's Kafka clients never create a topic by asking about it.

A broker that creates topics on first mention (Kafka with ``auto.create.topics.enable``; Tansu always)
gives them its default partition count, 4 on Tansu. When a broker without durable storage came back
empty, a client that asked for a topic's metadata before the pipeline had created its topics again
made that topic with the wrong count, and every part then refused the topic. Only the topic admin
(``streams.admin``) creates topics, each with the count the pipeline expects.

aiokafka asks for auto-creation in every metadata request and has no setting for it: its metadata
request's default is turned off here, once per process, for every aiokafka client (Faust's too).
kafka-python's producer takes a setting for it that 3.0.12 does not pass on: ``streams.producer`` sets
it where the metadata requests read it."""

from __future__ import annotations

import functools


def refuse_auto_create() -> None:
    """Make aiokafka's metadata requests say ``allow_auto_topic_creation=False`` (idempotent)."""
    import aiokafka.client
    from aiokafka.protocol.metadata import MetadataRequest

    if isinstance(aiokafka.client.MetadataRequest, functools.partial):
        return
    aiokafka.client.MetadataRequest = functools.partial(MetadataRequest, allow_auto_topic_creation=False)

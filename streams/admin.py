"""Creating and checking the pipeline's topics on a broker (kafka-python's admin client).

Apart from ``streams.topics``: only the process that starts a pipeline (or ``aisignals topics``) does
this, and the sink's and the engines' processes, which import the topic names, do not load
kafka-python (~0.2 s of CPU each at a backfill's start, when both cores are busy)."""

from __future__ import annotations

import hashlib

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.broker import BrokerError
from streams.topics import Topics


class TopicLayoutError(RuntimeError):
    """A topic exists with a partition count the pipeline cannot work with."""


def ensure_topics(bootstrap: str, topics: Topics, client_kwargs: dict | None = None,
                  timeout_ms: int | None = None) -> dict[str, str | None]:
    """Create every topic with the partition count the app expects; check existing ones.

    Returns each topic's id (None where the broker does not tell): a topic created anew — a broker
    without durable storage that restarted — has a new id, so offsets stored for the old one are void.
    ``timeout_ms`` bounds connecting and each request (the client's defaults otherwise)."""
    quick = {"request_timeout_ms": timeout_ms, "bootstrap_timeout_ms": timeout_ms} if timeout_ms else {}
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="aisignals-admin",
                                 **{**(client_kwargs or {}), **quick})
        try:
            return _ensure(admin, topics)
        finally:
            admin.close()
    except KafkaError as exc:
        raise BrokerError(f"cannot talk to the Kafka broker at {bootstrap}: {str(exc).split(': ', 1)[-1]}"
                          " (check --bootstrap and the AISIGNALS_KAFKA_* security settings)") from None


def _ensure(admin: KafkaAdminClient, topics: Topics) -> dict[str, str | None]:
    existing = set(admin.list_topics())
    wanted = topics.layout()
    missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
    if missing:
        try:
            admin.create_topics(missing)
        except TopicAlreadyExistsError:
            pass
    ids: dict[str, str | None] = {}
    for meta in admin.describe_topics(list(wanted)):
        have = len(meta.get("partitions", []))
        name = meta.get("name") or meta.get("topic")
        if name not in wanted:
            continue
        ids[name] = meta.get("topic_id")
        if name in existing and have and have != wanted[name]:
            raise TopicLayoutError(
                f"topic {name} has {have} partitions, the pipeline expects {wanted[name]}"
                " (use --partitions to match, or a fresh --topic-prefix)"
            )
    return ids


def incarnation(topic_ids: dict[str, str | None]) -> str:
    """A short name for one set of topic ids ("" when the broker gives none)."""
    known = sorted(f"{name}={tid}" for name, tid in topic_ids.items() if tid and tid.strip("0-"))
    return hashlib.sha1("\n".join(known).encode()).hexdigest()[:12] if known else ""

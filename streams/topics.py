"""Topic names, partition counts, and explicit creation (the embedded broker must not auto-create)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.broker import BrokerError

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

# record headers
CONTROL = "aisignals-control"  # b"clock" | b"barrier": in-band control records, not events
ORIGIN = "aisignals-origin"  # where a raw line came from, e.g. "file.jsonl:12" or "http"
BATCH = "aisignals-batch"  # id of the backfill a record belongs to
FORMAT = "aisignals-format"  # b"batch": the record holds many raw events (bulk replay)
SENT = "aisignals-sent"  # wall-clock ms when the producer sent the event (for latency metrics)
CUT = "aisignals-cut"  # the length of a raw line sent cut short (streams.events.RAW_LIMIT)
CLOCK, BARRIER = b"clock", b"barrier"


@dataclass(frozen=True)
class Topics:
    """Every topic of the pipeline. Company-keyed topics have ``partitions`` partitions."""

    prefix: str = "aisignals"
    partitions: int = 4

    @property
    def ingest(self) -> str:
        """Raw events from producers; one partition, so that arrival order is global."""
        return f"{self.prefix}.ingest"

    @property
    def events(self) -> str:
        """Accepted events (SPEC §2 JSON), keyed by company_id; also carries in-band clock records."""
        return f"{self.prefix}.events"

    @property
    def facts(self) -> str:
        """Internal: compact per-partition batches of accepted facts and clock records for the company agents."""
        return f"{self.prefix}.facts"

    @property
    def late(self) -> str:
        return f"{self.prefix}.late"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.deadletters"

    @property
    def indicators(self) -> str:
        return f"{self.prefix}.indicators"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def layout(self) -> dict[str, int]:
        n = self.partitions
        return {
            self.ingest: 1,
            self.events: n,
            self.facts: n,
            self.late: 1,
            self.dead_letters: 1,
            self.indicators: n,
            self.alerts: n,
        }


class TopicLayoutError(RuntimeError):
    """A topic exists with a partition count the pipeline cannot work with."""


def ensure_topics(bootstrap: str, topics: Topics, client_kwargs: dict | None = None,
                  timeout_ms: int | None = None) -> dict[str, str | None]:
    """Create every topic with the partition count the app expects; check existing ones.

    Returns each topic's id (None where the broker does not tell): a topic created anew — a broker
    without durable storage that restarted — has a new id, so offsets stored for the old one are void.
    ``timeout_ms`` bounds connecting and each request (the client's defaults otherwise).

    kafka-python is imported here, not with the topic names: the sink's and the engines' processes use
    those and never this, and importing kafka-python cost each of them ~0.2 s of CPU at start."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

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
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

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

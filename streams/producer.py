"""Producing to the pipeline with kafka-python: events to the ingest topic, and backfill barriers."""

from __future__ import annotations

import time
import uuid
from collections import deque
from contextlib import contextmanager
from typing import Iterable, Iterator

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.companies import CompanyNormalizer
from streams.events import RAW_LIMIT
from streams.reader import LineRun, ReplayItem, ReplayPlan, chunks
from streams.topics import BARRIER, BATCH, CONTROL, CUT, FIRST_LINE, FORMAT, LINES, MAX_REQUEST_BYTES, ORIGIN, SENT, Topics

RECORD_BATCH = 1000  # events per ingest record in a bulk replay
# an ingest record of a bulk replay closes at RECORD_BATCH lines or this many bytes of them (a line cut
# to RAW_LIMIT fills one on its own)
PACK_BYTES = RAW_LIMIT
# ingest records a bulk replay may have sent but not yet acknowledged: kafka-python 3 buffers without
# bound, and reading the input outruns the broker (at a million events the backfill's process grew by
# ~250 MB of unsent records). The broker, not this process, holds what the sequencer has yet to read
IN_FLIGHT = 16


class ProduceError(RuntimeError):
    """Records could not be delivered to the broker."""


class EventProducer:
    """Sends replay items to ``ingest``: key = company_id, timestamp = occurred_at, origin in a header.

    Uncompressed, unlike the stages' outputs (``Settings.kafka_compression``): decompressing the input
    raised the sequencer's peak memory by ~30 MB at 1M events and saved no CPU overall
    (docs/performance.md, "Compression")."""

    def __init__(self, bootstrap: str, topics: Topics, companies: CompanyNormalizer, **client_kwargs) -> None:
        self.topics = topics
        self.companies = companies
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="aisignals-producer",
                linger_ms=5,
                batch_size=512 * 1024,
                max_request_size=MAX_REQUEST_BYTES,
                acks="all",
                **client_kwargs,
            )
        except KafkaError as exc:
            raise ProduceError(f"cannot connect to Kafka at {bootstrap}: {exc}") from None
        # no topic is created by sending to it (streams.autocreate): kafka-python 3.0.12 takes the setting
        # allow_auto_create_topics but does not hand it to the metadata that asks for topics
        self.producer._metadata.config["allow_auto_create_topics"] = False

    def send(self, item: ReplayItem, batch_id: str | None = None) -> None:
        headers = [(ORIGIN, item.origin.encode()), (SENT, str(int(time.time() * 1000)).encode())]
        if batch_id:
            headers.append((BATCH, batch_id.encode()))
        value = cut_to_limit(item.value, headers)
        company = item.key if item.key else _company_of(value)
        key = self.companies.company_id(company).encode() if company else None
        self.producer.send(self.topics.ingest, value=value, key=key, headers=headers, timestamp_ms=item.time_ms)

    def send_all(self, items: Iterable[ReplayItem], batch_id: str | None = None, progress=None) -> int:
        sent = 0
        for item in items:
            self.send(item, batch_id)
            sent += 1
            if progress is not None and sent % 1000 == 0:
                progress(1000)
        if progress is not None:
            progress(sent % 1000)
        return sent

    def send_packed(self, items: ReplayPlan | Iterable[ReplayItem], batch_id: str | None = None, progress=None,
                    per_record: int = RECORD_BATCH) -> int:
        """Bulk replay: up to ``per_record`` events, and about PACK_BYTES of them, per ingest record.

        The stream processors then pay Kafka's and Faust's per-record cost once per batch, not per event;
        each event still becomes its own record on the public events topic. A replay plan's lines that
        follow each other in a file go as the file's bytes (header ``aisignals-format: lines``, see
        ``ReplayPlan.packs``); other lines as a JSON pack of lines and origins (``aisignals-format: batch``).
        """
        packs = (items.packs(per_record, PACK_BYTES, RAW_LIMIT) if isinstance(items, ReplayPlan)
                 else chunks(items, per_record, PACK_BYTES))
        sent = 0
        in_flight: deque = deque()
        for pack in packs:
            if isinstance(pack, LineRun):
                in_flight.append(self._send_run(pack, batch_id, progress))
                sent += pack.count
            else:
                in_flight.append(self._send_pack(pack, batch_id, progress))
                sent += len(pack)
            if len(in_flight) > IN_FLIGHT:
                self._acknowledged(in_flight.popleft())
        return sent

    def _acknowledged(self, future, timeout: float = 60.0) -> None:
        with _delivery_errors():
            future.get(timeout)

    def _send_pack(self, chunk: list[ReplayItem], batch_id: str | None, progress):
        pack = {"origins": [i.origin for i in chunk],
                "lines": [i.value[:RAW_LIMIT].decode("utf-8", "backslashreplace") for i in chunk]}
        cut = {i.origin: len(i.value) for i in chunk if len(i.value) > RAW_LIMIT}
        if cut:
            pack["cut"] = cut
        value = orjson.dumps(pack)
        headers = [(FORMAT, b"batch"), (SENT, str(int(time.time() * 1000)).encode())]
        if batch_id:
            headers.append((BATCH, batch_id.encode()))
        future = self.producer.send(self.topics.ingest, value=value, headers=headers)
        if progress is not None:
            progress(len(chunk))
        return future

    def _send_run(self, run: LineRun, batch_id: str | None, progress):
        headers = [(FORMAT, LINES), (ORIGIN, run.name.encode()), (FIRST_LINE, b"%d" % run.first_line),
                   (SENT, str(int(time.time() * 1000)).encode())]
        if batch_id:
            headers.append((BATCH, batch_id.encode()))
        future = self.producer.send(self.topics.ingest, value=run.data, headers=headers)
        if progress is not None:
            progress(run.count)
        return future

    def barrier(self, batch_id: str) -> None:
        """Mark the end of a backfill: every stage forwards it once all records before it are done."""
        value = orjson.dumps({"batch_id": batch_id})
        self.producer.send(self.topics.ingest, value=value, headers=[(CONTROL, BARRIER), (BATCH, batch_id.encode())])

    def flush(self, timeout: float = 60.0) -> None:
        with _delivery_errors():
            self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.close(timeout=5)


def cut_to_limit(value: bytes, headers: list) -> bytes:
    """A raw line as it goes to the ingest topic on its own: whole up to RAW_LIMIT, else its first
    RAW_LIMIT bytes, with its length in an ``aisignals-cut`` header (appended to ``headers``)."""
    if len(value) <= RAW_LIMIT:
        return value
    headers.append((CUT, str(len(value)).encode()))
    return value[:RAW_LIMIT]


@contextmanager
def _delivery_errors() -> Iterator[None]:
    try:
        yield
    except KafkaError as exc:
        raise ProduceError(f"delivery to Kafka failed: {exc}") from None


def _company_of(value: bytes) -> str | None:
    """The company named by a raw event line, for the record key (None if the line is not an event)."""
    try:
        company = orjson.loads(value).get("company")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return company if isinstance(company, str) else None


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]

"""The Faust side: agents that drive the pure core over Kafka topics.

``sequence`` (ingest, one partition) validates raw events, dead-letters bad ones, de-duplicates,
applies the watermark, and forwards accepted events keyed by company, followed by in-band clock
records that carry stream time to every partition (the way Flink propagates watermarks).
``companies`` (events, N partitions) keeps one ``Engine`` per partition and emits indicator rows
and alert state changes. Both read in batches (``take_events``) and write outputs per batch:
the per-event path through Faust is the cost to design around.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Iterable

import faust
import orjson

from processors.engine import Engine
from processors.facts import MICROS, Fact, fact_from_event, fact_from_fields
from processors.partitioning import partition_of
from processors.rules import RuleSet
from processors.sequencer import Sequencer, Verdict
from processors.stats import WorkerStats, dead_letter_reason
from streams.companies import CompanyNormalizer
from streams.events import InvalidEvent, parse_event, to_wire
from streams.topics import BARRIER, BATCH, CLOCK, CONTROL, ORIGIN, SENT, Topics

log = logging.getLogger("aisignals.worker")

FETCH_MAX_WAIT_MS = 50


def _short_fetch_wait() -> None:
    """Faust hard-codes aiokafka's fetch_max_wait_ms=1500; on a broker that holds fetches until that
    timeout (Tansu does) every hop adds up to 1.5 s of latency. Cap it once, for every Faust consumer."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_aisignals_patched", False):
        return
    create = thread._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    thread._create_worker_consumer = _create_worker_consumer
    thread._aisignals_patched = True


_short_fetch_wait()

TAKE = 5000  # records per batch
WITHIN = 0.05  # seconds to wait for a batch to fill
ROWS_PER_MESSAGE = 2000


def _day_of_us(time_us: int) -> int:
    return datetime.fromtimestamp(time_us / MICROS, tz=timezone.utc).date().toordinal()


def dead_letter_record(origin: str, raw: bytes, error: str) -> bytes:
    text = raw.decode("utf-8", "backslashreplace")
    ident = hashlib.sha256(origin.encode() + b"\x00" + raw).hexdigest()[:32]
    return orjson.dumps({
        "dead_letter_id": ident,
        "received_at": datetime.now(timezone.utc).isoformat(),
        "origin": origin,
        "raw": text,
        "error": error,
    })


class Worker:
    """The stream processors: one Faust app, a sequencer, and an engine per events partition."""

    def __init__(self, bootstrap: str, topics: Topics, rules: RuleSet, companies: CompanyNormalizer,
                 windows: tuple[int, ...] = (30, 90), lateness_days: float = 7.0, broker_kwargs: dict | None = None,
                 wall_clock: bool = False):
        self.topics = topics
        self.rules = rules
        self.windows = windows
        self.companies = companies
        self.sequencer = Sequencer(lateness_days)
        self.engines: dict[int, Engine] = {}
        self.counts: dict[str, Counter] = defaultdict(Counter)  # batch id -> verdict counts
        self.stats = WorkerStats()
        self._sent: dict[int, dict[str, float]] = defaultdict(dict)  # partition -> company -> newest produce time
        self.app = faust.App(
            f"{topics.prefix}-worker",
            broker=f"kafka://{bootstrap}",
            autodiscover=False,
            web_enabled=False,
            store="memory://",
            topic_allow_declare=False,
            topic_disable_leader=True,
            broker_session_timeout=10,
            broker_heartbeat_interval=1,
            producer_linger=0.005,
            stream_wait_empty=False,
            consumer_auto_offset_reset="earliest",
            **(broker_kwargs or {}),
        )
        ingest = self.app.topic(topics.ingest, partitions=1, key_serializer="raw", value_serializer="raw")
        events = self.app.topic(topics.events, partitions=topics.partitions, key_serializer="raw", value_serializer="raw")
        self.app.agent(ingest, name="sequence")(self._sequence)
        self.app.agent(events, name="companies")(self._companies)
        self.wall_clock_day: int | None = None
        if wall_clock:
            # live mode: stream time also follows the wall clock, so alerts resolve as real days pass
            self.app.timer(interval=30.0, name="wall_clock")(self._wall_clock)

    async def _wall_clock(self) -> None:
        today = datetime.now(timezone.utc).date().toordinal()
        known = self.sequencer.max_time_us
        if known is not None and _day_of_us(known) >= today:
            return
        if self.wall_clock_day != today:
            self.wall_clock_day = today
            value = orjson.dumps({"stream_day": today})
            for partition in range(self.topics.partitions):
                await self._send(self.topics.events, value, None, partition, None, [(CONTROL, CLOCK)])

    def engine(self, partition: int) -> Engine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = Engine(self.rules, self.windows)
        return engine

    # ---- restore -----------------------------------------------------------------------
    def restore(self, seen_ids: Iterable[str], max_time_us: int | None, facts: Iterable[Fact], published: Iterable[tuple]) -> list[tuple[int, dict]]:
        """Continue from durable state; returns alert corrections the stored state calls for."""
        self.sequencer.restore(seen_ids, max_time_us)
        n = self.topics.partitions
        for fact in facts:
            self.engine(partition_of(fact.company_id, n)).add(fact)
        windows = {name: w for name, w, _, _ in self.rules.company_rules()}
        windows["talent_poaching"] = self.rules.talent_poaching.window_days
        for rule, company_id, counterparty_id, start, severity, end in published:
            if rule in windows:
                self.engine(partition_of(company_id, n)).restore_published(
                    rule, company_id, counterparty_id, windows[rule], start, severity, end)
        pending: list[tuple[int, dict]] = []
        if max_time_us is not None:
            day = _day_of_us(max_time_us)
            for partition, engine in self.engines.items():
                engine.advance(day)
                engine.forget_row_changes()
                _, alerts = engine.flush()
                pending.extend((partition, a) for a in alerts)
        return pending

    # ---- agents ------------------------------------------------------------------------
    async def _send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
                    timestamp: float | None = None, headers=None):
        return await self.app.producer.send(topic, key, value, partition, timestamp, headers)

    async def _sequence(self, stream):
        topics, n = self.topics, self.topics.partitions
        async for batch in stream.take_events(TAKE, within=WITHIN):
            before = self.sequencer.max_time_us
            for event in batch:
                message = event.message
                headers = dict(message.headers or ())
                batch_id = (headers.get(BATCH) or b"").decode()
                if headers.get(CONTROL) == BARRIER:
                    await self._clock(before)
                    before = self.sequencer.max_time_us
                    await self._barrier(batch_id)
                    continue
                raw = message.value or b""
                origin = (headers.get(ORIGIN) or b"kafka").decode("utf-8", "replace")
                try:
                    parsed = parse_event(raw)
                    fact = fact_from_event(parsed, self.companies)
                except InvalidEvent as exc:
                    self._count(batch_id, "dead_letters")
                    self.stats.dead_letters[dead_letter_reason(str(exc))] += 1
                    await self._send(topics.dead_letters, dead_letter_record(origin, raw, str(exc)), partition=0,
                                     headers=[(BATCH, batch_id.encode())] if batch_id else None)
                    continue
                verdict = self.sequencer.admit(fact.event_id, fact.time_us)
                self._count(batch_id, verdict.value)
                if verdict is Verdict.DUPLICATE:
                    self.stats.duplicates += 1
                    continue
                ts = fact.time_us / MICROS if fact.time_us > 0 else None
                wire = to_wire(parsed)
                sent = headers.get(SENT)
                out_headers = [(SENT, sent)] if sent else None
                if verdict is Verdict.ACCEPTED:
                    self.stats.accepted[parsed.kind] += 1
                    await self._send(topics.events, wire, fact.company_id.encode(),
                                     partition_of(fact.company_id, n), ts, out_headers)
                else:
                    self.stats.late += 1
                    await self._send(topics.late, wire, fact.company_id.encode(), 0, ts, out_headers)
            await self._clock(before)

    def _count(self, batch_id: str, what: str) -> None:
        if batch_id:
            self.counts[batch_id][what] += 1

    async def _clock(self, before: int | None) -> None:
        now = self.sequencer.max_time_us
        if now is None or (before is not None and _day_of_us(now) == _day_of_us(before)):
            return
        value = orjson.dumps({"stream_time_us": now})
        for partition in range(self.topics.partitions):
            await self._send(self.topics.events, value, None, partition, None, [(CONTROL, CLOCK)])

    async def _barrier(self, batch_id: str) -> None:
        counts = self.counts.pop(batch_id, Counter())
        value = orjson.dumps({
            "batch_id": batch_id,
            "stream_time_us": self.sequencer.max_time_us,
            "accepted": counts["accepted"], "duplicates": counts["duplicate"],
            "late": counts["late"], "dead_letters": counts["dead_letters"],
        })
        headers = [(CONTROL, BARRIER), (BATCH, batch_id.encode())]
        for partition in range(self.topics.partitions):
            await self._send(self.topics.events, value, None, partition, None, headers)
        await self._send(self.topics.late, value, None, 0, None, headers)
        await self._send(self.topics.dead_letters, value, None, 0, None, headers)

    async def _companies(self, stream):
        async for batch in stream.take_events(TAKE, within=WITHIN):
            by_partition: dict[int, list] = defaultdict(list)
            for event in batch:
                by_partition[event.message.partition].append(event.message)
            for partition, messages in by_partition.items():
                engine = self.engine(partition)
                for message in messages:
                    control = sent = None
                    if message.headers:
                        headers = dict(message.headers)
                        control, sent = headers.get(CONTROL), headers.get(SENT)
                    if control is None:
                        fact = self._fact(message.value)
                        engine.add(fact)
                        if sent:
                            self._sent[partition][fact.company_id] = int(sent) / 1000
                    elif control == CLOCK:
                        clock = orjson.loads(message.value)
                        engine.advance(clock["stream_day"] if "stream_day" in clock else _day_of_us(clock["stream_time_us"]))
                    elif control == BARRIER:
                        info = orjson.loads(message.value)
                        if info.get("stream_time_us") is not None:
                            engine.advance(_day_of_us(info["stream_time_us"]))
                        await self._emit(partition, engine)
                        for topic in (self.topics.indicators, self.topics.alerts):
                            await self._send(topic, message.value, None, partition, None, list(message.headers))
                await self._emit(partition, engine)

    def _fact(self, value: bytes) -> Fact:
        data = orjson.loads(value)
        other = data.get("to_company") or data.get("from_company")
        return fact_from_fields(
            data["event_id"], data["kind"], self.companies.company_id(data["company"]),
            self.companies.company_id(other) if other else None,
            datetime.fromisoformat(data["occurred_at"]), data.get("headcount"), data.get("seniority"),
            data.get("amount_usd"),
        )

    async def _emit(self, partition: int, engine: Engine) -> None:
        rows, alerts = engine.flush()
        await self.publish(partition, rows, alerts)
        sent = self._sent.pop(partition, None)
        if sent:
            now = time.time()
            for when in sent.values():
                self.stats.processing_latency.observe(max(now - when, 0.0))
            for alert in alerts:
                when = sent.get(alert["company_id"])
                if when is not None:
                    self.stats.alert_latency.observe(max(now - when, 0.0))

    async def publish(self, partition: int, rows: list[dict], alerts: list[dict]) -> None:
        for i in range(0, len(rows), ROWS_PER_MESSAGE):
            await self._send(self.topics.indicators, orjson.dumps(rows[i : i + ROWS_PER_MESSAGE]), None, partition)
        self.stats.indicator_rows += len(rows)
        for alert in alerts:
            self.stats.alert_changes[(alert["rule"], alert["severity"], alert["status"])] += 1
            await self._send(self.topics.alerts, orjson.dumps(alert), alert["fingerprint"].encode(), partition)

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.app.start()

    async def stop(self) -> None:
        try:
            await self.app.producer.flush()
        finally:
            await self.app.stop()

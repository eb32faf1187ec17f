"""The Faust side: agents that drive the pure core over Kafka topics.

``sequence`` (ingest, one partition) validates raw events, dead-letters bad ones, de-duplicates,
applies the watermark, and publishes each accepted event on the public events topic (SPEC §2
JSON, keyed by company). For the company agents it also writes one compact record per partition
and batch to the internal facts topic, followed by an in-band clock record that carries stream
time to every partition (the way Flink propagates watermarks). ``companies`` (facts, N
partitions) keeps one ``Engine`` per partition and emits indicator rows and alert state changes.
Where one process runs both on its own embedded broker (``aisignals up``), the sequencer hands those
records to the engines itself (``local_facts``): the topic would be a round trip to the same process.

Faust's per-record cost (~0.1 ms here) is what to design around: bulk replays arrive many events
per ingest record, the company agents read batches, and every output goes through one aiokafka
producer in per-partition record batches (one producer, so records of a partition stay in order).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate, repeat
from operator import add
from typing import Callable, Iterable, Sequence, TypeVar

import faust
import orjson
from aiokafka import AIOKafkaProducer
from faust.tables.manager import TableManager
from faust.types import TP

from processors.engine import Engine
from processors.facts import FACT_WIDTH, Fact, day_of_us, fact_row
from processors.faust_tuning import FETCH_MAX_WAIT_MS, LIVE_FETCH_MAX_WAIT_MS, apply as apply_faust_tuning
from processors.partitioning import partition_of
from processors.rules import RuleSet
from processors.sequencer import Sequencer, Verdict
from processors.stats import Progress, WorkerStats, dead_letter_reason
from streams.companies import CompanyNormalizer
from streams.events import InvalidEvent, dict_to_wire, parse_lines, too_long
from streams.reader import NumberedOrigins
from streams.topics import (BARRIER, BATCH, CLOCK, CONTROL, CUT, FIRST_LINE, FORMAT, LINES, MAX_REQUEST_BYTES, ORIGIN, SENT,
                            Topics)

T = TypeVar("T")  # what a restore returns (``Worker.start_restoring``)
log = logging.getLogger("aisignals.worker")

apply_faust_tuning()


class TablelessTableManager(TableManager):
    """Faust's table manager sleeps a second on start so that agents can still declare tables; these apps
    declare none (the sequencer's and the engines' state is restored from DuckDB), and that second was
    a quarter of a small backfill's wall time. The agents have started by then: the app starts them first."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


TAKE = 5000  # records per batch
WITHIN = 0.05  # seconds to wait for a batch to fill (Faust's take always waits this long unless full)
# live: a take waits this long even for one record. 20 ms measured best for produce → alert at 1k events/s
# (p50 / p99 in ms: 5 → 65-70 / 143-148, 10 → 63 / 123, 20 → 57-60 / 100-119, 40 → 85 / 143): shorter
# takes mean more engine flushes, each evaluating every company the take touched. A take that hands
# over whatever waits, with no window at all, fell behind at 1k events/s (p50 7.8-12 s, measured). With the
# facts handed to the engines in memory (``local_facts``: one take instead of two), 10 ms against 20 gave
# p50 28 / 25 against 32 / 34 ms and p99 104 / 95 against 85 / 96 ms (two interleaved pairs of 60 s runs)
LIVE_WITHIN = 0.02
# how long the worker's producer waits for more records before sending a batch: in bulk a take's outputs
# fill batches anyway; live, a take's few records go at once (produce → alert at 1k events/s, five pairs
# of 30 s runs, interleaved: p50 56.6 / 56.7 / 58.9 / 53.7 / 55.7 ms at 5 ms against 52.5 / 49.5 / 52.4 /
# 47.8 / 53.8 at 0, p99 lower in three of them; two pairs of 60 s: p50 64.4 / 71.8 against 62.5 / 56.7)
LINGER_MS, LIVE_LINGER_MS = 5, 0
ROWS_PER_MESSAGE = 2000
# the sequencer sends its outputs at least every this many records. Larger is cheaper downstream: the
# company engines evaluate rules once per company and batch, so their cost per event falls as batches
# grow (benchmarks.stages --batch); the bound keeps a take's outputs to a few MB
FLUSH_RECORDS = 20_000
# ingest records Faust may hold fetched for a sequencer of its own (a backfill's: each record packs 1000
# events, ~220 KB). Faust's default (4,096) let it fetch ~80 MB ahead of what it had sequenced at 1M events;
# 8 made it wait for records between takes (1M events, interleaved: 41.7 / 35.8 / 40.7 s against 36.3 /
# 30.6 / 37.7 s with 32, the same peak)
INGEST_BUFFER = 32
# what one fetch may bring per partition to an app that runs one agent of a backfill: Faust's default, 1 MiB,
# is ~4 ingest records (1M events, interleaved: 32.4 / 33.4 s against 29.8 / 31.6 s with 8 MiB)
SPLIT_FETCH_BYTES = 8 * 1024 * 1024
# the most bytes of events lines in one record of a backfill's private broker (``pack_lines``): a few
# fit the producer's 1 MiB batches and the sink's 1 MiB fetch per partition
LINES_BYTES = 256 * 1024
# seconds of ingest records waiting, almost none taken, before readiness says the sequencer is stuck
STALL_SECONDS = 30.0


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


def pack_lines(values: list[bytes], limit: int = LINES_BYTES) -> list[bytes]:
    """Values joined by line breaks into as few of at most ``limit`` bytes as they fit (a longer one
    alone), in order: C-level work per value, Python per pack."""
    ends = list(accumulate(map(add, map(len, values), repeat(1)), initial=0))  # ends[k]: k values and their breaks
    packs, start = [], 0
    while start < len(values):
        stop = max(bisect_right(ends, ends[start] + limit + 1, start + 1) - 1, start + 1)
        packs.append(b"\n".join(values[start:stop]))
        start = stop
    return packs


@dataclass(slots=True)
class RawLines:
    """An ingest record's raw lines, their origins (``origins[i]`` is line i's) and the length of each line
    the producer cut short, by origin."""

    raws: list[bytes]
    origins: Sequence[str]
    cut: dict = field(default_factory=dict)

    @classmethod
    def of(cls, items: Iterable[tuple[str, bytes]]) -> "RawLines":
        """From (origin, raw) pairs."""
        pairs = list(items)
        return cls([raw for _, raw in pairs], [origin for origin, _ in pairs])


class Outputs:
    """Records produced while handling one batch, grouped by topic and partition, sent in order."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[tuple[bytes | None, bytes, int | None, list | None]]] = defaultdict(list)
        self.size = 0
        # events to send as records of many, a line each (``Worker.pack_events``), by topic and partition,
        # and their batch's headers; packed before any other record is added, so the order holds
        self.lines: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self.lines_tag: list | None = None

    def pack(self) -> None:
        """The pending lines into records (FORMAT ``LINES``)."""
        if not self.lines:
            return
        headers = [(FORMAT, LINES), *(self.lines_tag or ())]
        for tp, values in self.lines.items():
            self.records[tp].extend((None, value, None, headers) for value in pack_lines(values))
        self.lines.clear()

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes, timestamp_ms: int | None = None,
            headers: list | None = None) -> None:
        self.pack()
        self.records[(topic, partition)].append((key, value, timestamp_ms, headers))
        self.size += 1


async def send_records(producer: AIOKafkaProducer, records: dict[tuple[str, int], list]) -> None:
    """Send ``(key, value, timestamp, headers)`` records: per partition, in record batches, in order."""
    for (topic, partition), items in records.items():
        batch = producer.create_batch()
        for key, value, ts, headers in items:
            while batch.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                if batch.record_count() == 0:
                    raise ValueError(f"a record of {len(value)} bytes does not fit a batch")
                await producer.send_batch(batch, topic, partition=partition)
                batch = producer.create_batch()
        if batch.record_count():
            await producer.send_batch(batch, topic, partition=partition)


async def cancelled(task: asyncio.Future) -> None:
    """Cancel ``task`` and wait for it to end, whatever it raises."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


SEQUENCE, COMPANIES = "sequence", "companies"  # the agents; a worker runs both or one of them


class Worker:
    """The stream processors: one Faust app, a sequencer, and an engine per facts partition.

    ``agents``: both, or one of them when the other runs in another process (as another Faust app:
    its own consumer group). ``sole_member``: nothing else will ever join that group (a backfill's
    private broker), so the app takes every partition without a join."""

    def __init__(self, bootstrap: str, topics: Topics, rules: RuleSet, companies: CompanyNormalizer,
                 windows: tuple[int, ...] = (30, 90), lateness_days: float = 7.0, broker_kwargs: dict | None = None,
                 live: bool = False, client_kwargs: dict | None = None, session_timeout: float = 10.0,
                 agents: tuple[str, ...] = (SEQUENCE, COMPANIES), pack_events: bool = False,
                 local_facts: bool = False, sole_member: bool = False):
        self.bootstrap = bootstrap
        self.pack_events = pack_events  # events records hold many events a line each (``pack_lines``)
        # the sequencer hands its facts to this process's company engines itself, not through the facts
        # topic: one process runs both on its own embedded broker (``aisignals up``), so that topic is a
        # hop with a reader on the same interpreter (docs/performance.md, "Live latency")
        self.local_facts = local_facts and set(agents) == {SEQUENCE, COMPANIES}
        self._sending = asyncio.Lock()  # local facts: engines run and their outputs are sent in order
        self.client_kwargs = client_kwargs or {}  # for its producer: security, compression
        self.topics = topics
        self.rules = rules
        self.windows = windows
        self.companies = companies
        self.sequencer = Sequencer(lateness_days)
        self.engines: dict[int, Engine] = {}
        self._keys: dict[str, tuple[bytes, int]] = {}  # company_id -> (record key, events/facts partition)
        self.hold_until: int | None = None  # after a rollback, until the replay's backfill ends (see Engine.hold)
        self.counts: dict[str, Counter] = defaultdict(Counter)  # batch id -> verdict counts
        self.clock_day: int | None = None  # the last day clock records announced (see ``_clock``)
        self._live_admitted = False  # events outside a backfill since the last clock (see ``_facts_and_clock``)
        self.stats = WorkerStats()
        self.ingest_position: int | None = None  # the next ingest offset the sequencer will take
        self.ingest_progress = Progress(STALL_SECONDS)
        # the agents wait for this: a restore may run (in a thread) while the app starts and joins its group
        self.restored = asyncio.Event()
        self.restored.set()
        self.producer: AIOKafkaProducer | None = None
        self.agents = agents
        both = set(agents) == {SEQUENCE, COMPANIES}
        self.app = faust.App(
            f"{topics.prefix}-worker" if both else f"{topics.prefix}-worker-{'-'.join(agents)}",
            broker=f"kafka://{bootstrap}",
            autodiscover=False,
            web_enabled=False,
            store="memory://",
            topic_allow_declare=False,
            topic_disable_leader=True,
            broker_session_timeout=session_timeout,
            broker_heartbeat_interval=min(1.0, session_timeout / 6),
            stream_wait_empty=False,
            TableManager=TablelessTableManager,
            consumer_auto_offset_reset="earliest",
            stream_buffer_maxsize=INGEST_BUFFER if tuple(agents) == (SEQUENCE,) else 4096,
            **({} if both else {"consumer_max_fetch_size": SPLIT_FETCH_BYTES}),
            **(broker_kwargs or {}),
        )
        self.app.aisignals_fetch_wait_ms = LIVE_FETCH_MAX_WAIT_MS if live else FETCH_MAX_WAIT_MS
        if sole_member:  # the only member its group will ever have: it takes every partition, no join
            self.app.aisignals_sole_member = topics.layout()
        self.within = LIVE_WITHIN if live else WITHIN
        self.linger_ms = LIVE_LINGER_MS if live else LINGER_MS
        ingest = self.app.topic(topics.ingest, partitions=1, key_serializer="raw", value_serializer="raw")
        facts = self.app.topic(topics.facts, partitions=topics.partitions, key_serializer="raw", value_serializer="raw")
        if SEQUENCE in agents:
            self.app.agent(ingest, name="sequence")(self._sequence)
        if COMPANIES in agents and not self.local_facts:
            self.app.agent(facts, name="companies")(self._companies)
        if live and SEQUENCE in agents:
            # live mode: stream time also follows the wall clock, so alerts resolve as real days pass
            self.app.timer(interval=30.0, name="wall_clock")(self._wall_clock)

    def engine(self, partition: int) -> Engine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = Engine(self.rules, self.windows)
            if self.hold_until is not None:
                engine.hold(self.hold_until)
        return engine

    # ---- restore -----------------------------------------------------------------------
    def restore(self, seen_ids: Iterable[str], max_time_us: int | None, facts: Iterable[Fact],
                published: Iterable[tuple], rolled_back_until_us: int | None = None) -> list[tuple[int, list[dict], list[dict]]]:
        """Continue from durable state. Returns, per partition, the indicator rows and alert corrections
        to publish: none of the rows normally; every row after an interrupted backfill was rolled back
        (``rolled_back_until_us``: the latest event time it had reached). Alerts it published are kept
        as they are until the replay that finishes it reaches that time; then only real differences
        are sent."""
        if SEQUENCE not in self.agents:
            seen_ids = ()
        if COMPANIES not in self.agents:
            facts, published = (), ()
        rebuild = rolled_back_until_us is not None
        held_until = day_of_us(rolled_back_until_us) if rebuild else None
        self.sequencer.restore(seen_ids, max_time_us)
        n = self.topics.partitions
        for fact in facts:
            self.engine(partition_of(fact.company_id, n)).add(fact)
        known = {name for name, _ in self.rules.company_rules()} | {"talent_poaching"}
        published = list(published)

        def remember() -> None:
            for rule, company_id, counterparty_id, start, severity, end in published:
                if rule in known:
                    self.engine(partition_of(company_id, n)).restore_published(
                        rule, company_id, counterparty_id, start, severity, end)

        if not rebuild:
            remember()
        pending: list[tuple[int, list[dict], list[dict]]] = []
        if max_time_us is not None:
            day = day_of_us(max_time_us)
            for partition, engine in self.engines.items():
                engine.advance(day)
                if not rebuild:
                    engine.forget_row_changes()
                rows, alerts = engine.flush()
                pending.append((partition, rows, [] if rebuild else alerts))
        if rebuild:
            for engine in self.engines.values():
                for series in engine.series.values():
                    for s in series.values():
                        s.published.clear()
            remember()
            self.hold_until = held_until
            for engine in self.engines.values():
                engine.hold(held_until)
        return pending

    # ---- producing ---------------------------------------------------------------------
    async def _produce(self, out: Outputs) -> None:
        """Send buffered records: per partition, in record batches, in the order they were added. With
        ``local_facts`` the records for the facts topic go to the company engines here, and what they
        emit is sent with the rest (one at a time, so that a partition's outputs keep their order)."""
        out.pack()
        if not self.local_facts:
            await send_records(self.producer, out.records)
        else:
            async with self._sending:
                facts = self.topics.facts
                handed = {tp[1]: out.records.pop(tp) for tp in [tp for tp in out.records if tp[0] == facts]}
                if handed:
                    self._run_engines(out, handed)
                await send_records(self.producer, out.records)
        out.records.clear()
        out.size = 0

    # ---- sequencer ---------------------------------------------------------------------
    @staticmethod
    def _raw_items(message, headers: dict) -> RawLines:
        """An ingest record's raw lines with their origins, and the length of each line the producer cut
        short (to ``streams.events.RAW_LIMIT``), by origin."""
        origin = (headers.get(ORIGIN) or b"kafka").decode("utf-8", "replace")
        raw = message.value or b""
        form = headers.get(FORMAT)
        if form == LINES and (headers.get(FIRST_LINE) or b"").isdigit():  # lines that follow each other in a file
            return RawLines(raw.split(b"\n"), NumberedOrigins(origin, int(headers[FIRST_LINE])))
        if form == b"batch":
            try:
                packed = orjson.loads(raw)
                lines = RawLines([line.encode("utf-8", "surrogatepass") for line in packed["lines"]], packed["origins"])
                if len(lines.origins) != len(lines.raws):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeEncodeError, AttributeError):
                return RawLines([raw], [origin])  # not a batch after all: dead-letter it whole
            cut = packed.get("cut")
            lines.cut = cut if isinstance(cut, dict) else {}
            return lines
        length = headers.get(CUT)
        return RawLines([raw], [origin], {origin: int(length)} if length and length.isdigit() else {})

    async def _sequence(self, stream):
        await self.restored.wait()
        async for batch in stream.take_events(TAKE, within=self.within):
            out = Outputs()
            facts: dict[int, list] = defaultdict(list)
            for event in batch:
                message = event.message
                self.ingest_position = message.offset + 1  # progress, for readiness (a take of packs can be long)
                headers = dict(message.headers or ())
                batch_id = (headers.get(BATCH) or b"").decode()
                if headers.get(CONTROL) == BARRIER:
                    self._facts_and_clock(out, facts)
                    self._barrier(out, batch_id)
                    continue
                self._admit(out, facts, self._raw_items(message, headers), batch_id, headers.get(SENT))
                if out.size >= FLUSH_RECORDS:  # a take may hold thousands of packed records: bound the memory
                    self._facts_and_clock(out, facts)
                    await self._produce(out)
                # the producer sends from this loop: without a turn of it between records (~1,000 events each),
                # outputs handed over mid-take left only when the take ended, and the engines got them late
                await asyncio.sleep(0)
            self._facts_and_clock(out, facts)
            await self._produce(out)

    def ingest_stalled(self) -> str | None:
        """Why the sequencer is stuck, when ingest records have waited ``STALL_SECONDS`` on end and it took
        almost none of them (``Progress``); None otherwise (and in a worker without the sequencer)."""
        if SEQUENCE not in self.agents or not self.app.started:
            return None
        try:
            high = self.app.consumer.highwater(TP(self.topics.ingest, 0))
        except Exception:  # noqa: BLE001 - not assigned (yet), or the consumer is restarting: no verdict
            return None
        stuck = self.ingest_progress.stuck(time.monotonic(), self.ingest_position, high)
        if stuck is None:
            return None
        seconds, taken, waiting = stuck
        return (f"the sequencer took {taken:,} records of {self.topics.ingest} in {seconds:.0f} s with {waiting:,} "
                f"waiting (offset {self.ingest_position} of {high})")

    def _admit(self, out: Outputs, facts: dict[int, list], items: RawLines, batch_id: str, sent: bytes | None) -> None:
        """Validate a packed batch in one call, then decide and route each event in order."""
        topics = self.topics
        tag = [(BATCH, batch_id.encode())] if batch_id else None
        counts = self.counts[batch_id] if batch_id else Counter()
        if not batch_id:
            self._live_admitted = True
        stats, admit, companies = self.stats, self.sequencer.admit, self.companies
        sent_ms = int(sent) if sent else None
        keys, records, accepted_kinds = self._keys, out.records, stats.accepted
        events_topic, partitions = topics.events, topics.partitions
        accepted, duplicate = Verdict.ACCEPTED, Verdict.DUPLICATE
        n_accepted = n_duplicate = n_late = 0
        pack = self.pack_events
        if pack and out.lines_tag != tag:
            out.pack()
            out.lines_tag = tag
        lines = out.lines
        raws, origins, cut = items.raws, items.origins, items.cut
        for number, (raw, parsed) in enumerate(zip(raws, parse_lines(raws))):
            if parsed.__class__ is InvalidEvent:
                origin = origins[number]
                reason = too_long(cut[origin], truncated=True) if origin in cut else str(parsed)
                counts["dead_letters"] += 1
                stats.dead_letters[dead_letter_reason(reason)] += 1
                records[(topics.dead_letters, 0)].append((None, dead_letter_record(origin, raw, reason), None, tag))
                continue
            row = fact_row(parsed, companies, sent_ms)
            at = row[5]
            verdict = admit(row[0], at)
            if verdict is duplicate:
                n_duplicate += 1
                continue
            company_id = row[2]
            routing = keys.get(company_id)
            if routing is None:
                routing = keys[company_id] = (company_id.encode(), partition_of(company_id, partitions))
            key, partition = routing
            if verdict is accepted:
                n_accepted += 1
                accepted_kinds[parsed["kind"]] += 1
                if pack:
                    lines[(events_topic, partition)].append(dict_to_wire(parsed))
                else:
                    records[(events_topic, partition)].append((key, dict_to_wire(parsed), at // 1000 if at > 0 else None, tag))
                facts[partition].append(row)
            else:
                n_late += 1
                records[(topics.late, 0)].append((key, dict_to_wire(parsed), at // 1000 if at > 0 else None, tag))
        out.size += len(raws) - n_duplicate
        for verdict, n in ((accepted, n_accepted), (duplicate, n_duplicate), (Verdict.LATE, n_late)):
            if n:
                counts[verdict.value] += n
        stats.duplicates += n_duplicate
        stats.late += n_late

    def _facts_and_clock(self, out: Outputs, facts: dict[int, list]) -> None:
        """Facts of this batch per partition, then a clock record to every partition if the day the engines
        evaluate alerts through moved.

        A backfill replays its input sorted by ``occurred_at``, so the latest day of a batch may have more
        events to come: its clock stops at the day before, and its barrier brings the last day. The alerts a
        backfill announces (``alert_history``) are then the same whatever its batch boundaries: none fires
        on half a day's events to be retracted by the other half. Live events move the clock to their own
        day: alerts fire as soon as the day's data says so."""
        for partition, items in facts.items():  # handed over in memory (``local_facts``): the rows themselves
            out.add(self.topics.facts, partition, None, items if self.local_facts else orjson.dumps(items))
        facts.clear()
        now = self.sequencer.max_time_us
        if now is not None:
            self._clock(out, day_of_us(now) - (0 if self._live_admitted else 1))
            self._live_admitted = False

    def _clock(self, out: Outputs, day: int) -> None:
        """A clock record to every facts partition, if ``day`` is later than the last one announced: the
        engines read alerts through it."""
        if self.clock_day is not None and day <= self.clock_day:
            return
        self.clock_day = day
        value = orjson.dumps({"stream_day": day})
        for partition in range(self.topics.partitions):
            out.add(self.topics.facts, partition, None, value, headers=[(CONTROL, CLOCK)])

    def _barrier(self, out: Outputs, batch_id: str) -> None:
        counts = self.counts.pop(batch_id, Counter())
        value = orjson.dumps({
            "batch_id": batch_id,
            "stream_time_us": self.sequencer.max_time_us,
            "accepted": counts["accepted"], "duplicates": counts["duplicate"],
            "late": counts["late"], "dead_letters": counts["dead_letters"],
        })
        headers = [(CONTROL, BARRIER), (BATCH, batch_id.encode())]
        for partition in range(self.topics.partitions):
            out.add(self.topics.events, partition, None, value, headers=headers)
            out.add(self.topics.facts, partition, None, value, headers=headers)
        out.add(self.topics.late, 0, None, value, headers=headers)
        out.add(self.topics.dead_letters, 0, None, value, headers=headers)

    async def _wall_clock(self) -> None:
        if not self.restored.is_set():
            return
        today = datetime.now(timezone.utc).date().toordinal()
        known = self.sequencer.max_time_us
        if known is not None and day_of_us(known) >= today:
            return
        out = Outputs()
        self._clock(out, today)
        if out.size:
            await self._produce(out)

    # ---- company agents ----------------------------------------------------------------
    async def _companies(self, stream):
        await self.restored.wait()
        async for batch in stream.take_events(TAKE, within=self.within):
            out = Outputs()
            by_partition: dict[int, list] = defaultdict(list)
            for event in batch:
                message = event.message
                by_partition[message.partition].append((message.key, message.value, None, message.headers))
            self._run_engines(out, by_partition)
            await self._produce(out)

    def _run_engines(self, out: Outputs, by_partition: dict[int, list]) -> None:
        """The facts topic's records of one take, ``(key, value, timestamp, headers)`` by partition, through
        the partitions' engines; their rows and alert changes into ``out``. A facts record's value is its
        JSON list of fact rows, or the list itself when handed over in memory (``local_facts``)."""
        for partition, messages in by_partition.items():
            engine = self.engine(partition)
            sent: dict[str, float] = {}
            for _, value, _, headers in messages:
                control = dict(headers).get(CONTROL) if headers else None
                if control is None:
                    for item in orjson.loads(value) if value.__class__ is bytes else value:
                        engine.add(Fact(*item[:FACT_WIDTH]))
                        if item[FACT_WIDTH]:
                            sent[item[2]] = item[FACT_WIDTH] / 1000
                elif control == CLOCK:
                    clock = orjson.loads(value)
                    # a cluster's facts topic may still hold clock records of earlier versions, with the time
                    engine.advance(clock["stream_day"] if "stream_day" in clock else day_of_us(clock["stream_time_us"]))
                elif control == BARRIER:
                    info = orjson.loads(value)
                    if info.get("stream_time_us") is not None:
                        engine.advance(day_of_us(info["stream_time_us"]))
                    self._emit(out, partition, engine, sent, end_of_input=True)
                    self.hold_until = None
                    sent = {}
                    for topic in (self.topics.indicators, self.topics.alerts):
                        out.add(topic, partition, None, value, headers=list(headers))
            self._emit(out, partition, engine, sent)

    def _emit(self, out: Outputs, partition: int, engine: Engine, sent: dict[str, float],
              end_of_input: bool = False) -> None:
        rows, alerts = engine.flush(end_of_input)
        self.publish(out, partition, rows, alerts, sent)
        if sent:
            now = time.time()
            for when in sent.values():
                self.stats.processing_latency.observe(max(now - when, 0.0))
            for alert in alerts:
                when = sent.get(alert["company_id"])
                if when is not None:
                    self.stats.alert_latency.observe(max(now - when, 0.0))

    def publish(self, out: Outputs, partition: int, rows: list[dict], alerts: list[dict],
                sent: dict[str, float] | None = None) -> None:
        """Indicator rows in chunks, one record per alert change; an alert caused by events that carried
        a send time carries the latest of them (SENT header), so consumers can measure the latency."""
        for i in range(0, len(rows), ROWS_PER_MESSAGE):
            out.add(self.topics.indicators, partition, None, orjson.dumps(rows[i : i + ROWS_PER_MESSAGE]))
        self.stats.indicator_rows += len(rows)
        for alert in alerts:
            self.stats.alert_changes[(alert["rule"], alert["severity"], alert["status"])] += 1
            when = sent.get(alert["company_id"]) if sent else None
            headers = [(SENT, str(int(when * 1000)).encode())] if when is not None else None
            out.add(self.topics.alerts, partition, alert["fingerprint"].encode(), orjson.dumps(alert), headers=headers)

    async def publish_now(self, partition: int, rows: list[dict], alerts: list[dict]) -> None:
        out = Outputs()
        self.publish(out, partition, rows, alerts)
        await self._produce(out)

    # ---- lifecycle ---------------------------------------------------------------------
    async def start_restoring(self, restore: Callable[[], T]) -> tuple[T, asyncio.Future]:
        """Start the app while ``restore`` (which calls :meth:`restore`) runs in a thread: the group join
        takes a second on the embedded broker (docs/performance.md, "Start-up"), and the agents wait for
        the restore. Returns what ``restore`` returned and the start, still under way."""
        self.restored.clear()
        starting = asyncio.ensure_future(self.start())
        try:
            restored = await asyncio.to_thread(restore)
        except BaseException:
            await cancelled(starting)
            raise
        self.restored.set()
        return restored, starting

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id="aisignals-worker",
                                         linger_ms=self.linger_ms, max_batch_size=1024 * 1024, max_request_size=MAX_REQUEST_BYTES,
                                         acks="all", **self.client_kwargs)
        await self.producer.start()
        await self.app.start()

    async def stop(self) -> None:
        try:
            await self.app.stop()
        finally:
            if self.producer is not None:
                await self.producer.stop()

"""The DuckDB sink: reads the pipeline's output topics and writes the SPEC §5 tables in batches.

Exactly-once into DuckDB: the next offset of every topic partition is stored in the same
transaction as the rows it covers, so a redelivered message never makes a second row or a double
count. It assigns partitions itself (no consumer group), which also avoids the embedded broker's
slow group joins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections import defaultdict
from datetime import date, datetime, timezone
from itertools import accumulate, repeat
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.alerts import change_id
from processors.stats import Histogram
from sinks.database import Database
from sinks.schema import columns
from streams.companies import CompanyNormalizer
from streams.events import COUNTERPARTY_FIELDS, EventBase
from streams.records import EventRow, IndicatorRow
from streams.topics import BARRIER, BATCH, CONTROL, Topics

log = logging.getLogger("aisignals.sink")
UTC_US = pa.timestamp("us", tz="UTC")
# a flush's memory (the parsed records, their Arrow tables, DuckDB's transaction) grows with the bytes of
# its records: this bounds the sink's peak whatever the row count settings say. A sink process that holds
# the file between flushes (HOLD_ROWS) pays nothing measurable for the smaller batches (1M events, measured:
# 480 MB peak at 16 MiB, 449 at 8 MiB with one DuckDB thread, the same backfill time)
FLUSH_BYTES = 8 * 1024 * 1024
# DuckDB's working memory in the checkpoint that closing the file makes: compressing a filled row group
# took +250 MB unbounded; bounded, it spills to disk (the file's .tmp directory): 64 MB spilled enough
# to make closing the file a quarter of the sink's CPU in a backfill
CHECKPOINT_MEMORY = "128MB"
# a sink that is busy (records wait on the broker, or batches fill up) and has no readers in its process
# keeps the file open from one flush to the next, up to these many events rows and seconds: closing
# checkpoints, and each checkpoint rewrites the last, partly filled row group and the key index (1M events
# in flushes of 50k: 11.0 s closing after each flush, 9.1 s after every third, measured). The bounds let
# other processes' readers in and keep what is not yet checkpointed small
HOLD_ROWS = 120_000
HOLD_SECONDS = 5.0
# rows per row group of what a busy backfill's sink adds (DuckDB's default, which a live writer keeps, is
# 122,880): it writes whole row groups (see DuckDBSink._hold_over), so it holds back less than one of them
ROW_GROUP_ROWS = 20_480
# what the consumer may hold fetched but not yet handed over (it keeps fetching while a flush runs)
FETCH_BYTES, PARTITION_FETCH_BYTES = 8 * 1024 * 1024, 1024 * 1024
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _date32(iso: str | None):
    return None if iso is None else date.fromisoformat(iso).toordinal() - EPOCH_ORDINAL


class EventRecords:
    """Records of the events and late topics, as they came (SPEC §2 JSON): parsed per batch, in C++.

    Their bytes are copied into one buffer, as an Arrow binary column lays them out: a batch holds tens of
    thousands of records, and as Python objects each would stay allocated (and fragment the heap) until
    the batch is written. Each record's topic partition and offset are kept too, so that the last ones
    can be held over to the next batch (``split_tail``)."""

    __slots__ = ("data", "offsets", "late", "batch_ids", "positions", "runs", "_names")

    def __init__(self) -> None:
        self.data = bytearray()
        self.offsets = array("i", [0])
        self.late: list[bool] = []
        self.batch_ids: list[str | None] = []
        self.positions = array("q")  # each record's offset in its topic partition
        self.runs: list[tuple[int, tuple[str, int]]] = []  # (first record, topic partition) of each extend
        self._names: dict[bytes, str] = {}  # one str per batch id, shared by its records

    def add(self, value: bytes, late: bool, batch_id: bytes | None, source: tuple[str, int] = ("", 0),
            position: int = 0) -> None:
        self.extend([value], late, [batch_id], source, [position])

    def extend(self, values: list[bytes], late: bool, batch_ids: list[bytes | None], source: tuple[str, int] = ("", 0),
               positions: list[int] | None = None) -> None:
        """Append records of one topic partition (``source``), in order (per call, not per record: a
        backfill's sink reads a million); ``positions``: their offsets in it."""
        if not self.runs or self.runs[-1][1] != source:
            self.runs.append((len(self.late), source))
        self.positions.extend(positions if positions is not None else repeat(0, len(values)))
        lengths = accumulate(map(len, values), initial=len(self.data))
        next(lengths)
        self.data += b"".join(values)
        self.offsets.extend(lengths)
        self.late.extend(repeat(late, len(values)))
        names = self._names
        for batch_id in batch_ids:
            if batch_id and batch_id not in names:
                names[batch_id] = batch_id.decode()
        self.batch_ids.extend([names[b] if b else None for b in batch_ids])

    def __len__(self) -> int:
        return len(self.late)

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def payload(self) -> pa.Array:
        """The records' bytes as a string column (the worker's JSON: UTF-8), without copying them again."""
        return pa.Array.from_buffers(pa.string(), len(self), [None, pa.py_buffer(self.offsets), pa.py_buffer(self.data)])

    def split_tail(self, count: int) -> tuple["EventRecords", dict[tuple[str, int], int]]:
        """Remove the last ``count`` records and return them as records of their own, with the offset of
        the first of them in each topic partition they come from (where reading them starts again)."""
        cut = len(self) - count
        tail = EventRecords()
        tail._names = self._names
        start = self.offsets[cut]
        tail.data = self.data[start:]
        del self.data[start:]
        tail.offsets = array("i", [o - start for o in self.offsets[cut:]])
        del self.offsets[cut + 1:]
        tail.late, tail.batch_ids = self.late[cut:], self.batch_ids[cut:]
        del self.late[cut:], self.batch_ids[cut:]
        tail.positions = self.positions[cut:]
        del self.positions[cut:]
        later = [run for run in self.runs if run[0] >= cut]
        self.runs = [run for run in self.runs if run[0] < cut]
        if self.runs and (not later or later[0][0] > cut):  # the cut falls inside a run: its rest begins the tail
            later.insert(0, (cut, self.runs[-1][1]))
        tail.runs = [(at - cut, source) for at, source in later]
        first: dict[tuple[str, int], int] = {}
        for at, source in tail.runs:
            first.setdefault(source, tail.positions[at])
        return tail, first


# the columns of ``events`` the sink fills itself; every other one is a field of the record's JSON
SINK_COLUMNS = frozenset({"company_id", "counterparty_id", "ingested_at", "late", "payload", "batch_id"})
# fields every kind validates have their column's type; a field only some kinds define may be an extra
# field of any JSON type on the others (kept in the payload), so its column holds it only where it fits
VALIDATED_FIELDS = frozenset(EventBase.model_fields) | {"kind", "reason"}  # reason: stored for departures only
_FITS = {
    "VARCHAR": "CASE WHEN json_type({x}) = 'VARCHAR' THEN {x} ->> '$' END",
    "INTEGER": "TRY_CAST(CASE WHEN json_type({x}) IN ('BIGINT', 'UBIGINT') THEN {x}::VARCHAR END AS INTEGER)",
    "DOUBLE": "CASE WHEN json_type({x}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN {x}::DOUBLE END",
}


def _wire_sql() -> str:
    """One JSON parse per record (DuckDB, C++) into every column read from the wire, departures' reason
    included."""
    fields = [(name, sql_type) for name, sql_type, _ in columns(EventRow) if name not in SINK_COLUMNS]
    fields += [(name, "VARCHAR") for name in COUNTERPARTY_FIELDS.values()]
    shape = {name: sql_type if name in VALIDATED_FIELDS else "JSON" for name, sql_type in fields}
    select = [f"w.{name}" if name in VALIDATED_FIELDS else f"{_FITS[sql_type].format(x='w.' + name)} AS {name}"
              for name, sql_type in fields if name != "reason"]
    select.append("CASE WHEN w.kind = 'departure' THEN coalesce(w.reason, 'unknown') END AS reason")
    return (f"SELECT {', '.join(select)} FROM (SELECT from_json(payload, '{orjson.dumps(shape).decode()}') AS w"
            " FROM incoming_records)")


WIRE_SQL = _wire_sql()
_NULL_TEXT = pa.scalar(None, pa.string())


def _indicators_sql() -> str:
    """Upsert the rows of indicator records, parsed by DuckDB; of rows with the same key the last one read
    wins (one upsert cannot take a key twice)."""
    shape = [{name: sql_type for name, sql_type, _ in columns(IndicatorRow)}]
    key = ", ".join(f"r.{name}" for name in IndicatorRow.primary_key)
    return ("INSERT OR REPLACE INTO indicators BY NAME SELECT r.* FROM (SELECT seq, unnest(rows) AS r,"
            f" generate_subscripts(rows, 1) AS pos FROM (SELECT seq, from_json(value, '{orjson.dumps(shape).decode()}')"
            f" AS rows FROM incoming_indicators)) QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY seq DESC, pos DESC) = 1")


INDICATORS_SQL = _indicators_sql()


def events_table(records: EventRecords, company_id: Callable[[str], str], now_us: int,
                 con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """The ``events`` rows of buffered records, built column-wise: the wire JSON is parsed once per record
    by DuckDB (on ``con`` if given), company names are normalised once per distinct name, and the payload
    column is the records' bytes as they came. A second record of an event id in the batch is dropped
    (first wins)."""
    n = len(records)
    payload = records.payload()
    if con is None:
        with duckdb.connect() as own:
            own.execute("SET TimeZone = 'UTC'")
            wire = _parse_wire(payload, own)
    else:
        wire = _parse_wire(payload, con)
    if wire.num_rows != n:
        raise ValueError(f"{n} event records parsed into {wire.num_rows} rows")

    def normalised(names: pa.Array) -> pa.Array:
        distinct = pc.unique(names).drop_null()
        ids = pa.array([company_id(name) for name in distinct.to_pylist()], pa.string())
        return pc.take(ids, pc.index_in(names, value_set=distinct))

    def given(column: str) -> pa.ChunkedArray:  # `or` in Python: an empty string counts as absent
        names = wire[column]
        return pc.if_else(pc.equal(names, ""), _NULL_TEXT, names)

    counterparty = _NULL_TEXT
    for kind, name in COUNTERPARTY_FIELDS.items():
        counterparty = pc.if_else(pc.equal(wire["kind"], kind), given(name), counterparty)
    table = pa.table({
        "event_id": wire["event_id"], "kind": wire["kind"],
        "company_id": normalised(wire["company"].combine_chunks()), "company": wire["company"],
        "counterparty_id": normalised(counterparty.combine_chunks()),
        "occurred_at": wire["occurred_at"], "ingested_at": pa.repeat(pa.scalar(now_us, UTC_US), n),
        "headcount": wire["headcount"], "seniority": wire["seniority"], "reason": wire["reason"],
        "amount_usd": wire["amount_usd"], "model_name": wire["model_name"], "modality": wire["modality"],
        "source": wire["source"], "region": wire["region"], "late": pa.array(records.late, pa.bool_()),
        "payload": payload, "batch_id": pa.array(records.batch_ids, pa.string()),
    })
    if pc.count_distinct(table["event_id"]).as_py() < n:
        first = pc.equal(pa.array(range(n), pa.int32()), pc.index_in(table["event_id"], value_set=table["event_id"]))
        table = table.filter(first)
    return table


def _parse_wire(payload: pa.Array, con: duckdb.DuckDBPyConnection) -> pa.Table:
    con.register("incoming_records", pa.table({"payload": _chunks(payload)}))
    try:
        return con.sql(WIRE_SQL).to_arrow_table()
    finally:
        con.unregister("incoming_records")


def _chunks(array: pa.Array, size: int = 32_768) -> pa.ChunkedArray:
    """Record batches DuckDB can scan on several threads."""
    return pa.chunked_array([array.slice(i, size) for i in range(0, len(array), size)] or [array], array.type)


class Batch:
    """Records buffered between two flushes, already reduced to their final effect."""

    def __init__(self) -> None:
        self.events = EventRecords()
        self.indicators: list[bytes] = []  # records of the indicators topic: JSON lists of rows
        self.alerts: dict[tuple[str, str], dict | None] = {}  # None = delete
        self.history: list[dict] = []
        self.dead_letters: dict[str, dict] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.run_id: str | None = None  # the sink's run id when the batch was taken to be written
        self.records = 0
        self.bytes = 0  # of the record values

    def __len__(self) -> int:
        return self.records


class DuckDBSink:
    """Consumes events, late events, dead letters, indicator rows and alerts into one DuckDB file."""

    def __init__(self, db: Path, topics: Topics, companies: CompanyNormalizer, run_id: str,
                 flush_rows: int = 20_000, flush_seconds: float = 0.5, flush_bytes: int = FLUSH_BYTES,
                 hold: bool = False) -> None:
        self.db = Database(Path(db), row_group_rows=ROW_GROUP_ROWS if hold else None)
        self.topics = topics
        self.companies = companies
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.flush_bytes = flush_bytes
        self.hold = hold  # may keep the file open between flushes while busy (no readers in this process)
        self._held_rows = 0
        self._held_since = 0.0
        self.db.create()
        self.con: duckdb.DuckDBPyConnection | None = None  # set only during a flush
        self.batch = Batch()
        self.barriers: dict[str, dict] = defaultdict(dict)  # batch id -> {(topic, partition): info}
        self.finished: list[tuple[str, dict]] = []
        self.on_backfill: list[Callable[[str, dict], Awaitable[None] | None]] = []
        self.after_flush: list[Callable[[], None]] = []  # e.g. wake alert delivery
        self.rows_written: dict[str, int] = defaultdict(int)
        self.flushes = 0
        self.flush_failures = 0
        self.flush_duration = Histogram((0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.lag: dict[tuple[str, int], int] = {}  # from fetch high watermarks, not ListOffsets (wrong on Tansu)
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.lost_logs = 0  # logs found shorter than what was read from them, or re-created (see reread)
        self._reread = False
        self.committed: dict[tuple[str, int], int] = {}  # next offset of each partition, as stored by the last flush
        self.flushed = asyncio.Event()  # set after each flush (waiters clear it)
        self.flush_soon = False  # a reader waits for the rows read so far: flush without waiting for the interval

    # ---- durable state ------------------------------------------------------------------
    def stored_offsets(self) -> dict[tuple[str, int], int]:
        with self.db.writer() as con:
            rows = con.execute(
                "SELECT topic, partition, next_offset FROM sink_offsets WHERE run_id = ?", [self.run_id]).fetchall()
        return {(t, p): o for t, p, o in rows}

    # ---- consuming ---------------------------------------------------------------------
    def partitions(self) -> list[TopicPartition]:
        t, n = self.topics, self.topics.partitions
        tps = [TopicPartition(t.events, p) for p in range(n)]
        tps += [TopicPartition(t.indicators, p) for p in range(n)]
        tps += [TopicPartition(t.alerts, p) for p in range(n)]
        tps += [TopicPartition(t.late, 0), TopicPartition(t.dead_letters, 0)]
        return tps

    async def run(self, bootstrap: str, stop: asyncio.Event, consumer_kwargs: dict | None = None) -> None:
        # "earliest": a position past the end of a log means the broker lost it (see _lost_log)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    client_id="aisignals-sink", auto_offset_reset="earliest", fetch_max_bytes=FETCH_BYTES,
                                    max_partition_fetch_bytes=PARTITION_FETCH_BYTES, **(consumer_kwargs or {}))
        await consumer.start()
        writing: asyncio.Task | None = None  # a flush under way in a thread while the next batch fills
        try:
            tps = self.partitions()
            consumer.assign(tps)
            stored = self.stored_offsets()
            self.committed = dict(stored)
            for tp in tps:
                offset = stored.get((tp.topic, tp.partition))
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
            last_flush = time.monotonic()
            while not stop.is_set():
                if self._reread:
                    self._reread = False
                    stored = {}
                    await consumer.seek_to_beginning(*tps)
                records = await consumer.getmany(timeout_ms=100, max_records=20_000)
                for tp, messages in records.items():
                    self.add(tp.topic, tp.partition, messages)
                    self.next_offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
                for tp in tps:
                    high = consumer.highwater(tp)
                    if high is not None:
                        done = self.next_offsets.get((tp.topic, tp.partition), stored.get((tp.topic, tp.partition), 0))
                        if high < done:
                            await self._lost_log(consumer, tp, high, done)
                            stored.pop((tp.topic, tp.partition), None)
                            done = 0
                        self.lag[(tp.topic, tp.partition)] = max(high - done, 0)
                if writing is not None and writing.done():
                    writing = await writing  # raises if it failed
                full = len(self.batch) >= self.flush_rows or self.batch.bytes >= self.flush_bytes
                if self.batch.records and (full or self.flush_soon or self._barrier_complete()
                                           or time.monotonic() - last_flush >= self.flush_seconds):
                    if writing is not None:  # one flush at a time, in order
                        writing = await writing
                    self.flush_soon = False
                    busy = full or any(self.lag.values())  # more is coming: it filled up, or records wait on the broker
                    batch, done = self.take(whole_row_groups=self.hold and busy)
                    writing = asyncio.create_task(self._write_in_thread(batch, done, self._keep(batch, done, busy)))
                    last_flush = time.monotonic()
            if writing is not None:
                writing = await writing
            if self.batch.records:
                await self._write_in_thread(*self.take(), keep=False)
        finally:
            if writing is not None:  # the loop failed meanwhile: that error is the one raised
                await asyncio.wait({writing})
                if not writing.cancelled():
                    writing.exception()
            await asyncio.to_thread(self.db.close)  # a file kept open checkpoints now
            await consumer.stop()

    def reread(self, run_id: str) -> None:
        """The topics were created anew (the broker lost its data): read every log from its start and
        store offsets under a new run id. Rows already stored stay; re-read ones are deduplicated."""
        self.run_id = run_id
        self.next_offsets.clear()
        self.batch.offsets.clear()  # offsets into the old logs mean nothing now
        self.lost_logs += 1
        self._reread = True

    async def _lost_log(self, consumer: AIOKafkaConsumer, tp: TopicPartition, high: int, position: int) -> None:
        """A log that ends before what was already read: the broker lost its data (a broker without
        durable storage restarted). Its new log is read from the start; rows already stored stay, and
        whatever the old log held beyond what was stored is gone with the broker."""
        log.warning("%s[%d] ends at offset %d, before the %d already read: the broker lost this log"
                    " (restarted without durable storage?); reading it again from the start",
                    tp.topic, tp.partition, high, position)
        self.lost_logs += 1
        self.next_offsets[(tp.topic, tp.partition)] = 0
        self.batch.offsets[(tp.topic, tp.partition)] = 0  # the next flush stores the new position
        await consumer.seek_to_beginning(tp)

    def add(self, topic: str, partition: int, messages: Sequence) -> None:
        """Buffer a partition's records, in order (their effect, reduced: last state per key). Event records,
        nearly all that a backfill's sink reads, only have their bytes and batch id kept, in one pass."""
        if not messages:
            return
        b = self.batch
        b.records += len(messages)
        b.offsets[(topic, partition)] = messages[-1].offset + 1
        t = self.topics
        is_events = topic == t.events or topic == t.late
        values: list[bytes] = []
        batch_ids: list[bytes | None] = []
        positions: list[int] = []
        size = 0
        for message in messages:
            value = message.value or b""
            size += len(value)
            headers = dict(message.headers or ())
            control = headers.get(CONTROL)
            if control is not None:
                if control == BARRIER:
                    info = orjson.loads(value)
                    self.barriers[info["batch_id"]][(topic, partition)] = info
            elif is_events:
                values.append(value)
                batch_ids.append(headers.get(BATCH))
                positions.append(message.offset)
            elif topic == t.indicators:
                b.indicators.append(value)
            elif topic == t.alerts:
                alert = orjson.loads(value)
                fp = alert["fingerprint"]
                if alert.get("previous_starts_at"):
                    b.alerts[(fp, alert["previous_starts_at"])] = None
                b.alerts[(fp, alert["starts_at"])] = None if alert["change"] == "retracted" else alert
                b.history.append(alert)
            elif topic == t.dead_letters:
                data = orjson.loads(value)
                batch = headers.get(BATCH)
                data["batch_id"] = batch.decode() if batch else None
                b.dead_letters.setdefault(data["dead_letter_id"], data)
        b.bytes += size
        if values:
            b.events.extend(values, topic == t.late, batch_ids, (topic, partition), positions)

    @property
    def _barrier_partitions(self) -> int:
        """Partitions a backfill's barrier comes on: events, indicators and alerts, late, dead letters."""
        return 3 * self.topics.partitions + 2

    def _barrier_complete(self) -> bool:
        return any(len(seen) >= self._barrier_partitions for seen in self.barriers.values())

    async def _announce(self) -> None:
        self.flushed.set()
        for callback in self.after_flush:
            callback()
        for batch_id, summary in self.finished:
            for callback in self.on_backfill:
                result = callback(batch_id, summary)
                if asyncio.iscoroutine(result):
                    await result
        self.finished.clear()

    # ---- writing -----------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered batch and the offsets it covers in one transaction."""
        batch, done = self.take()
        self.write(batch, done)
        self._written(batch, done)

    def take(self, whole_row_groups: bool = False) -> tuple[Batch, list[tuple[str, dict]]]:
        """The batch to write next, and the backfills it finishes: those whose barrier came on every partition
        (a failed write fails the sink, which then reads them again from its stored offsets).
        ``whole_row_groups``: unless it finishes a backfill, its events rows fill whole row groups."""
        b, self.batch = self.batch, Batch()
        b.run_id = self.run_id  # its offsets are into the logs read so far, whatever ``reread`` does meanwhile
        done = [(batch_id, {k: next(iter(seen.values())).get(k) for k in ("accepted", "duplicates", "late", "dead_letters")})
                for batch_id, seen in self.barriers.items() if len(seen) >= self._barrier_partitions]
        for batch_id, _ in done:
            del self.barriers[batch_id]
        if whole_row_groups and not done:
            self._hold_over(b)
        return b, done

    def _hold_over(self, b: Batch) -> None:
        """Leave the events rows past the last whole row group (``ROW_GROUP_ROWS``) to the next batch, with
        the offsets that read them. DuckDB writes a transaction's filled row groups to the file compressed
        as they fill; a partly filled one stays in memory, is appended to the table's last row group, and
        is compressed again by every checkpoint until it is full (1M events in transactions of 20,000
        rows: 8.0 s of CPU and +79 MB; in whole row groups: 6.2 s and +47 MB, measured)."""
        count = len(b.events) % ROW_GROUP_ROWS
        if not count:
            return
        tail, first = b.events.split_tail(count)
        held = self.batch
        held.events = tail
        held.records, held.bytes = count, tail.nbytes
        held.offsets = {source: b.offsets[source] for source in first}
        b.offsets.update(first)
        b.records -= count
        b.bytes -= tail.nbytes

    def _keep(self, b: Batch, done: list, busy: bool) -> bool:
        """Keep the file open after writing ``b``: while more is coming and no backfill ends with it, within
        HOLD_ROWS and HOLD_SECONDS."""
        if not (self.hold and busy) or done:
            return False
        if not self.db.holding:
            self._held_rows, self._held_since = 0, time.monotonic()
        self._held_rows += len(b.events)
        return self._held_rows < HOLD_ROWS and time.monotonic() - self._held_since < HOLD_SECONDS

    async def _write_in_thread(self, b: Batch, done: list[tuple[str, dict]], keep: bool) -> None:
        await asyncio.to_thread(self.write, b, done, keep)
        self._written(b, done)
        await self._announce()

    def write(self, b: Batch, done: list[tuple[str, dict]], keep: bool = False) -> None:
        """One transaction: the batch's rows, the backfills it finishes and the offsets it covers."""
        now_us = int(time.time() * 1_000_000)
        started = time.perf_counter()
        try:
            with self.db.writer(keep) as con:
                self.con = con
                try:
                    con.execute("SET checkpoint_threshold = '1GB'")  # COMMIT never checkpoints: closing does, bounded
                    con.execute("RESET memory_limit")  # a kept connection has the checkpoint's bound
                    if self.hold:  # beside a backfill's other processes on the same cores: threads add only contention
                        con.execute("SET threads = 1")
                    events = events_table(b.events, self.companies.company_id, now_us, con) if b.events else None
                    try:
                        self._flush(b, done, events, con, now_us)
                    except duckdb.ConstraintException:
                        self._flush(b, done, events, con, now_us, redelivered=True)
                    con.execute(f"SET memory_limit = '{CHECKPOINT_MEMORY}'")  # for the checkpoint on close
                finally:
                    self.con = None
        except Exception:
            self.flush_failures += 1
            raise
        self.flush_duration.observe(time.perf_counter() - started)
        pa.default_memory_pool().release_unused()  # its allocator keeps freed pages: the batch's tables were the peak

    def _written(self, b: Batch, done: list[tuple[str, dict]]) -> None:
        """After the commit: the offsets are stored, the finished backfills can be announced."""
        self.committed.update(b.offsets)
        self.finished.extend(done)

    def _flush(self, b: Batch, done: list[tuple[str, dict]], events: pa.Table | None, con, now_us: int,
               redelivered: bool = False) -> None:
        """One transaction. Events are appended as new rows (the bulk path); ``redelivered``: some are
        stored already (a record read again after a crash), so those are skipped row by row."""
        con.execute("BEGIN TRANSACTION")
        try:
            if events is not None:
                self._write_events(events, redelivered)
            if b.indicators:
                self._write_indicators(b.indicators)
            if b.alerts:
                self._write_alerts(b.alerts, b.history, now_us)
            if b.dead_letters:
                self._write_dead_letters(list(b.dead_letters.values()))
            for batch_id, summary in done:
                con.execute("INSERT OR REPLACE INTO backfills VALUES (?, ?, ?::JSON)",
                            [batch_id, datetime.now(timezone.utc), orjson.dumps(summary).decode()])
            if b.offsets:
                offsets = pa.table({"run_id": pa.array([b.run_id] * len(b.offsets), pa.string()),
                                    "topic": [t for t, _ in b.offsets], "partition": [p for _, p in b.offsets],
                                    "next_offset": list(b.offsets.values())})
                self._insert("INSERT OR REPLACE INTO sink_offsets BY NAME SELECT * FROM incoming_offsets", "incoming_offsets", offsets)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        self.flushes += 1

    def _write_events(self, table: pa.Table, redelivered: bool) -> None:
        """A plain INSERT checks the primary key anyway and fails on a stored id (then the transaction is
        run again with ``redelivered``); OR IGNORE costs more per row, so it is kept for that case."""
        self._insert(f"INSERT {'OR IGNORE ' if redelivered else ''}INTO events BY NAME"
                     " SELECT * REPLACE (payload::JSON AS payload) FROM incoming_events", "incoming_events", table)
        self.rows_written["events"] += table.num_rows

    def _write_indicators(self, records: list[bytes]) -> None:
        table = pa.table({"seq": pa.array(range(len(records)), pa.int64()),
                          "value": pa.array(records, pa.binary()).view(pa.string())})  # the worker's JSON: UTF-8
        self.rows_written["indicators"] += self._insert(INDICATORS_SQL, "incoming_indicators", table)

    def _insert(self, sql: str, name: str, table: pa.Table) -> int:
        """Run ``sql`` with ``name`` bound to an Arrow table (columnar: no per-row round trips); the rows it
        wrote. After a failure the name stays bound (an aborted transaction refuses even that) until the
        connection closes."""
        self.con.register(name, table)
        count = self.con.execute(sql).fetchall()[0][0]
        self.con.unregister(name)
        return count

    def _write_alerts(self, alerts: dict[tuple[str, str], dict | None], history: list[dict], now_us: int) -> None:
        dumps = orjson.dumps
        deletes = [(fp, start) for (fp, start), a in alerts.items() if a is None]
        upserts = [a for a in alerts.values() if a is not None]
        if deletes:
            self._insert("DELETE FROM alerts USING gone WHERE alerts.fingerprint = gone.fingerprint"
                         " AND alerts.starts_at = gone.starts_at", "gone",
                         pa.table({"fingerprint": [d[0] for d in deletes],
                                   "starts_at": pa.array([_date32(d[1]) for d in deletes], pa.date32())}))
        if upserts:
            table = pa.table({
                **{k: pa.array([a[k] for a in upserts], pa.string())
                   for k in ("fingerprint", "rule", "company_id", "counterparty_id", "severity", "status")},
                "starts_at": pa.array([_date32(a["starts_at"]) for a in upserts], pa.date32()),
                "ends_at": pa.array([_date32(a["ends_at"]) for a in upserts], pa.date32()),
                **{k: [dumps(a[k]).decode() for a in upserts] for k in ("evidence", "labels", "annotations")},
                "updated_at": pa.array([now_us] * len(upserts), UTC_US),
            })
            self._insert("INSERT OR REPLACE INTO alerts SELECT fingerprint, rule, company_id, counterparty_id, severity,"
                         " status, starts_at, ends_at, evidence::JSON, labels::JSON, annotations::JSON, updated_at"
                         " FROM incoming_alerts", "incoming_alerts", table)
        if history:
            table = pa.table({
                "change_id": pa.array([change_id(a) for a in history], pa.string()),
                **{k: pa.array([a[k] for a in history], pa.string())
                   for k in ("fingerprint", "change", "severity", "status")},
                **{k: pa.array([_date32(a.get(k)) for a in history], pa.date32())
                   for k in ("starts_at", "ends_at", "previous_starts_at")},
                "recorded_at": pa.array([now_us] * len(history), UTC_US),
                "message": [dumps(a).decode() for a in history],
            })
            self._insert("INSERT OR IGNORE INTO alert_history SELECT change_id, fingerprint, starts_at, change, severity, status,"
                         " ends_at, previous_starts_at, recorded_at, message::JSON FROM incoming_history",
                         "incoming_history", table)
        self.rows_written["alerts"] += len(upserts)

    def _write_dead_letters(self, rows: list[dict]) -> None:
        self.con.executemany(
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?::TIMESTAMPTZ, ?, ?, ?, ?)",
            [[r["dead_letter_id"], r["received_at"], r["origin"], r["raw"], r["error"], r.get("batch_id")] for r in rows])
        self.rows_written["dead_letters"] += len(rows)

    def close(self) -> None:
        """Close a connection kept between flushes: a reader (``Database.reuse_reader``) or the writer (``hold``)."""
        self.db.close()

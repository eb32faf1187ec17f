"""The DuckDB sink: reads the pipeline's output topics and writes the SPEC §5 tables in batches.

Exactly-once into DuckDB: the next offset of every topic partition is stored in the same
transaction as the rows it covers, so a redelivered message never makes a second row or a double
count. It assigns partitions itself (no consumer group), which also avoids the embedded broker's
slow group joins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from array import array
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import accumulate, chain, repeat
from operator import add
from pathlib import Path
from typing import Awaitable, Callable, Iterator, Sequence, TypeVar

import duckdb
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.alerts import change_id
from processors.stats import Histogram
from sinks.database import Database
from sinks.schema import columns
from streams.companies import CompanyNormalizer
from streams.events import COUNTERPARTY_FIELDS, EventBase
from streams.records import AlertChangeRow, AlertRow, EventRow, IndicatorRow, SinkOffsetRow
from streams.topics import BARRIER, BATCH, CONTROL, FORMAT, LINES, Topics

T = TypeVar("T")
log = logging.getLogger("aisignals.sink")
# a flush's memory (the buffered lines, the staged rows, DuckDB's transaction) grows with the bytes of
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
# the niceness of a live sink's write thread (``DuckDBSink._write_in_thread``). Beside the stream processors
# in one process (``aisignals up``) each flush is a burst of DuckDB work (~40 ms at 1k events/s) that took a
# core from the sequencer and the broker: produce → alert p99 at 1k events/s, eight interleaved pairs of
# 60 s runs, 63-85 ms (median 76.5) against 66-90 ms (median 83.4), lower in six pairs
WRITE_NICE = 10
# what the consumer may hold fetched but not yet handed over (it keeps fetching while a flush runs)
FETCH_BYTES, PARTITION_FETCH_BYTES = 8 * 1024 * 1024, 1024 * 1024


class EventRecords:
    """Records of the events and late topics, as they came (SPEC §2 JSON): parsed per batch by DuckDB.

    Their bytes are copied into one buffer, a line each, which DuckDB's CSV reader takes as one file
    (``stage_events``): a batch holds tens of thousands of records, and as Python objects each would stay
    allocated (and fragment the heap) until the batch is written. A line is ``code``, 0x01, the record:
    the code says whether it came late and its batch id (``batch_names``); the worker's JSON is compact
    and a JSON text has no raw control character, so neither byte is in a record. Each record's topic
    partition and offset are kept too, so that the last ones can be held over to the next batch
    (``split_tail``)."""

    __slots__ = ("data", "offsets", "positions", "runs", "_index", "batch_names")

    def __init__(self) -> None:
        self.data = bytearray()  # a line per record
        self.offsets = array("q", [0])  # where each line starts, and the end
        self.positions = array("q")  # each record's offset in its topic partition
        self.runs: list[tuple[int, tuple[str, int]]] = []  # (first record, topic partition) of each extend
        self.batch_names: list[str | None] = [None]  # a line's code is 2 × its batch id's index here + late
        self._index: dict[bytes, int] = {}  # a batch id's index in batch_names

    def add(self, value: bytes, late: bool, batch_id: bytes | None, source: tuple[str, int] = ("", 0),
            position: int = 0) -> None:
        self.extend([value], late, [batch_id], source, [position])

    def extend(self, values: list[bytes], late: bool, batch_ids: list[bytes | None], source: tuple[str, int] = ("", 0),
               positions: list[int] | None = None) -> None:
        """Append records of one topic partition (``source``), in order (per call, not per record: a
        backfill's sink reads a million); ``positions``: their offsets in it."""
        if not values:
            return
        index = self._index
        present = set(batch_ids)
        for batch_id in present:
            if batch_id and batch_id not in index:
                index[batch_id] = len(self.batch_names)
                self.batch_names.append(batch_id.decode())
        codes = {b: b"%d\x01" % (2 * (index[b] if b else 0) + late) for b in present}
        at = len(self.data)
        if len(codes) == 1:  # the usual case: one code for all, joined in one call
            (code,) = codes.values()
            self.data += code
            self.data += (b"\n" + code).join(values)
            self.data += b"\n"
            step, sizes = len(code) + 1, map(len, values)
        else:
            prefixes = list(map(codes.__getitem__, batch_ids))
            self.data += b"".join(chain.from_iterable(zip(prefixes, values, repeat(b"\n"))))
            step, sizes = 1, map(add, map(len, prefixes), map(len, values))  # a size holds its code's length
        if not self.runs or self.runs[-1][1] != source:
            self.runs.append((len(self), source))
        self.positions.extend(positions if positions is not None else repeat(0, len(values)))
        starts = accumulate(sizes, lambda start, size: start + size + step, initial=at)
        next(starts)
        self.offsets.extend(starts)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def _lines(self) -> list[tuple[int, bytes]]:
        o = self.offsets
        return [(int(code), value) for code, value in
                (bytes(self.data[o[i]:o[i + 1] - 1]).split(b"\x01", 1) for i in range(len(self)))]

    def one_line_each(self) -> bool:
        """Lay out again, a line each, records whose JSON spans lines (not the worker's compact JSON: the
        parse then finds more lines than records); whether there was any."""
        lines = self._lines()
        if not any(b"\n" in value for _, value in lines):
            return False
        self.data = bytearray()
        self.offsets = array("q", [0])
        for code, value in lines:
            self.data += b"%d\x01%s\n" % (code, _one_line(value))
            self.offsets.append(len(self.data))
        return True

    # each record's bytes, late flag and batch id, read back from the lines (for tests and tools; the
    # sink hands DuckDB ``data`` whole)
    def values(self) -> list[bytes]:
        return [value for _, value in self._lines()]

    @property
    def late(self) -> list[bool]:
        return [code % 2 == 1 for code, _ in self._lines()]

    @property
    def batch_ids(self) -> list[str | None]:
        return [self.batch_names[code // 2] for code, _ in self._lines()]

    def split_tail(self, count: int) -> tuple["EventRecords", dict[tuple[str, int], int]]:
        """Remove the last ``count`` records and return them as records of their own, with the offset of
        the first of them in each topic partition they come from (where reading them starts again)."""
        cut = len(self) - count
        tail = EventRecords()
        tail._index, tail.batch_names = self._index, self.batch_names  # the lines' codes stay valid
        start = self.offsets[cut]
        tail.data = self.data[start:]
        del self.data[start:]
        tail.offsets = array("q", [o - start for o in self.offsets[cut:]])
        del self.offsets[cut + 1:]
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


def _one_line(value: bytes) -> bytes:
    """A record as one line: JSON whitespace between tokens may be a line break (a string's is escaped);
    what is not JSON keeps its bytes, line breaks escaped, and fails the parse as it would have."""
    if b"\n" not in value:
        return value
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return value.replace(b"\n", b"\\n")


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
# the name a record's counterparty is read from: the field its kind defines; an empty one counts as absent
_COUNTERPARTY = "CASE {kind} " + " ".join(f"WHEN '{kind}' THEN nullif({{at}}{field}, '')"
                                          for kind, field in COUNTERPARTY_FIELDS.items()) + " END"


def _read_lines(columns: str) -> str:
    """DuckDB's CSV reader over a file of lines (``{PATH}``) whose fields are split by 0x01: a record is
    the last field, whole (no quoting, no escapes)."""
    return (f"read_csv('{{PATH}}', columns = {{{columns}}}, delim = '\x01', quote = '', escape = '', header = false,"
            " auto_detect = false, new_line = '\\n', max_line_size = 67108864)")


def _stage_sql() -> str:
    """One JSON parse per record (DuckDB, C++) into every column read from the wire, departures' reason
    included, beside the record's late flag, batch id and bytes: the temp table ``incoming_events``, its
    rows in the records' order. ``{PATH}``: the batch's lines (``EventRecords``)."""
    fields = [(name, sql_type) for name, sql_type, _ in columns(EventRow) if name not in SINK_COLUMNS]
    fields += [(name, "VARCHAR") for name in COUNTERPARTY_FIELDS.values()]
    shape = {name: sql_type if name in VALIDATED_FIELDS else "JSON" for name, sql_type in fields}
    select = [f"w.{name}" if name in VALIDATED_FIELDS else f"{_FITS[sql_type].format(x='w.' + name)} AS {name}"
              for name, sql_type in fields if name != "reason"]
    select.append("CASE WHEN w.kind = 'departure' THEN coalesce(w.reason, 'unknown') END AS reason")
    return ("CREATE OR REPLACE TEMP TABLE incoming_events AS SELECT code % 2 = 1 AS late,"
            f" ($batch_names::VARCHAR[])[code // 2 + 1] AS batch_id, payload, {', '.join(select)}"
            f" FROM (SELECT *, from_json(payload, '{orjson.dumps(shape).decode()}') AS w"
            " FROM " + _read_lines("'code': 'INTEGER', 'payload': 'VARCHAR'") + ")")


STAGE_SQL = _stage_sql()
# the names to normalise (each once, in Python) and how many records repeat an event id of the batch
NAMES_SQL = (f"SELECT list(DISTINCT company), list(DISTINCT {_COUNTERPARTY.format(kind='kind', at='')}),"
             " count(*) - count(DISTINCT event_id), count(*) FROM incoming_events")


def events_select(duplicates: bool) -> str:
    """The staged records as ``events`` rows; ``duplicates``: the batch repeats an event id, and the first
    record of it wins."""
    sink = {"company_id": "c.id", "counterparty_id": "p.id", "ingested_at": "$now::TIMESTAMPTZ", "payload": "e.payload::JSON"}
    select = ", ".join(f"{sink.get(name) or 'e.' + name} AS {name}" for name, _, _ in columns(EventRow))
    counterparty = _COUNTERPARTY.format(kind="e.kind", at="e.")
    return (f"SELECT {select}"
            f" FROM incoming_events e LEFT JOIN incoming_names c ON c.name = e.company"
            f" LEFT JOIN incoming_names p ON p.name = {counterparty}"
            + (" QUALIFY row_number() OVER (PARTITION BY e.event_id ORDER BY e.rowid) = 1" if duplicates else ""))


def _scratch_dir() -> str:
    """Where a batch's lines are written for DuckDB to read: memory (/dev/shm) where there is room."""
    try:
        shm = os.statvfs("/dev/shm")
        if shm.f_bavail * shm.f_frsize >= 64 * 1024 * 1024 and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


SCRATCH_DIR = _scratch_dir()
BY_DESCRIPTOR = os.path.isdir("/proc/self/fd")  # Linux: a file unlinked at once is read through its descriptor


def _write_scratch(data: bytes | bytearray, directory: str) -> tuple[int, str]:
    """A new file in ``directory`` holding ``data`` (unlinked already where ``BY_DESCRIPTOR``): its
    descriptor and its path."""
    fd, path = tempfile.mkstemp(prefix="aisignals-batch-", dir=directory)
    try:
        if BY_DESCRIPTOR:
            os.unlink(path)
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
    except BaseException:
        os.close(fd)
        if not BY_DESCRIPTOR:
            os.unlink(path)
        raise
    return fd, path


@contextmanager
def scratch_file(data: bytes | bytearray) -> Iterator[str]:
    """A path DuckDB can read ``data`` from, gone afterwards. On Linux the file is unlinked at once and read
    through this process's descriptor: a process killed meanwhile leaves nothing behind. Where memory
    (``SCRATCH_DIR``) has no room left, the temp directory serves."""
    directories = list(dict.fromkeys((SCRATCH_DIR, tempfile.gettempdir())))
    for directory in directories:
        try:
            fd, path = _write_scratch(data, directory)
            break
        except OSError:
            if directory == directories[-1]:
                raise
    try:
        yield f"/proc/self/fd/{fd}" if BY_DESCRIPTOR else path
    finally:
        os.close(fd)
        if not BY_DESCRIPTOR:
            os.unlink(path)


def execute_on_lines(con: duckdb.DuckDBPyConnection, sql: str, lines: bytes | bytearray, params: dict | None = None):
    """Run ``sql``, whose ``{PATH}`` is read with ``_read_lines``, over ``lines`` in a scratch file."""
    with scratch_file(lines) as path:
        return con.execute(sql.replace("{PATH}", path.replace("'", "''")), params)


def stage_events(records: EventRecords, company_id: Callable[[str], str], con: duckdb.DuckDBPyConnection) -> bool:
    """Parse buffered records into ``incoming_events`` and their company names' ids into ``incoming_names``
    (temp tables on ``con``: each name normalised once); whether an event id repeats in the batch."""
    while True:
        try:
            execute_on_lines(con, STAGE_SQL, records.data, {"batch_names": records.batch_names})
            names, counterparties, duplicates, count = con.execute(NAMES_SQL).fetchone()
            if count == len(records):
                break
            problem: Exception = ValueError(f"{len(records)} event records parsed into {count} rows")
        except duckdb.Error as exc:
            problem = exc
        if not records.one_line_each():  # else a record spanned lines: staged again, a line each
            raise problem
    names = list({*names, *counterparties} - {None})
    con.execute("CREATE OR REPLACE TEMP TABLE incoming_names AS SELECT unnest($names::VARCHAR[]) AS name,"
                " unnest($ids::VARCHAR[]) AS id", {"names": names, "ids": [company_id(name) for name in names]})
    return duplicates > 0


def drop_staged(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS incoming_events")
    con.execute("DROP TABLE IF EXISTS incoming_indicators")
    con.execute("DROP TABLE IF EXISTS incoming_names")


def event_rows(records: EventRecords, company_id: Callable[[str], str], now: datetime) -> list[dict]:
    """The ``events`` rows of buffered records, as the sink writes them (for tests and tools)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        duplicates = stage_events(records, company_id, con)
        cursor = con.execute(f"{events_select(duplicates)} ORDER BY e.rowid", {"now": now})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _indicators_sql() -> str:
    """Upsert the rows of indicator records (``indicator_lines``), parsed by DuckDB; of rows with the same
    key the last one read wins. The rows are staged, the stored rows with their keys deleted, and the
    staged ones inserted: the same rows as ``INSERT OR REPLACE`` (tested), ~20 % less of the sink's CPU for
    the upsert (a backfill's rows are nearly all new). The last statement's result counts the rows."""
    shape = [{name: sql_type for name, sql_type, _ in columns(IndicatorRow)}]
    key = IndicatorRow.primary_key
    return ("CREATE OR REPLACE TEMP TABLE incoming_indicators AS SELECT r.* FROM (SELECT seq, unnest(rows) AS r,"
            f" generate_subscripts(rows, 1) AS pos FROM (SELECT seq, from_json(value, '{orjson.dumps(shape).decode()}')"
            " AS rows FROM " + _read_lines("'seq': 'BIGINT', 'value': 'VARCHAR'") + "))"
            f" QUALIFY row_number() OVER (PARTITION BY {', '.join(f'r.{name}' for name in key)} ORDER BY seq DESC, pos DESC) = 1;"
            " DELETE FROM indicators USING incoming_indicators s WHERE "
            + " AND ".join(f"indicators.{name} = s.{name}" for name in key) + ";"
            " INSERT INTO indicators BY NAME SELECT * FROM incoming_indicators")


def indicator_lines(records: list[bytes]) -> bytes:
    """Records of the indicators topic (JSON lists of rows) as lines for ``INDICATORS_SQL``: their order
    first, then the record."""
    return b"".join(chain.from_iterable(zip(map(b"%d\x01".__mod__, range(len(records))), records, repeat(b"\n"))))


INDICATORS_SQL = _indicators_sql()


def _rows_sql(model: type, verb: str) -> str:
    """``verb`` (INSERT OR REPLACE / OR IGNORE) the rows of one JSON list parameter (``$rows``) into the
    model's table, parsed by DuckDB: a JSON column comes as its text, every timestamp is ``$now``."""
    cols = columns(model)
    shape = {name: "VARCHAR" if sql_type == "JSON" else sql_type for name, sql_type, _ in cols if sql_type != "TIMESTAMPTZ"}
    select = [f"$now::TIMESTAMPTZ AS {name}" if sql_type == "TIMESTAMPTZ" else f"{name}::JSON AS {name}" if sql_type == "JSON"
              else name for name, sql_type, _ in cols]
    return (f"{verb} INTO {model.table} BY NAME SELECT {', '.join(select)} FROM (SELECT r.* FROM (SELECT"
            f" unnest(from_json(decode($rows), '{orjson.dumps([shape]).decode()}')) AS r))")


ALERTS_SQL = _rows_sql(AlertRow, "INSERT OR REPLACE")
# alert changes are new rows: a plain INSERT (~40 % cheaper than OR IGNORE) fails on a stored change id,
# and the transaction is then run again with ``redelivered`` (as for events)
HISTORY_SQL = _rows_sql(AlertChangeRow, "INSERT")
HISTORY_AGAIN_SQL = _rows_sql(AlertChangeRow, "INSERT OR IGNORE")
OFFSETS_SQL = _rows_sql(SinkOffsetRow, "INSERT OR REPLACE")
GONE_SQL = ("DELETE FROM alerts USING (SELECT r.* FROM (SELECT unnest(from_json(decode($rows), '[{\"fingerprint\":\"VARCHAR\","
            "\"starts_at\":\"DATE\"}]')) AS r)) gone WHERE alerts.fingerprint = gone.fingerprint"
            " AND alerts.starts_at = gone.starts_at")


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


async def _unless(stopping: asyncio.Future, awaitable: Awaitable[T]) -> T | None:
    """``awaitable``'s result, or None (and it is cancelled) once ``stopping`` is done: a sink told to stop
    does not first wait out its fetch (up to 100 ms), and a backfill's command ends that much sooner."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _lower_priority() -> None:
    """Give the calling thread ``WRITE_NICE`` (Linux sets a thread's own niceness; elsewhere nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITE_NICE)


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
        self._events_written: set[str] = set()  # backfills whose events are all read (``_events_complete``)
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
        self._writer: ThreadPoolExecutor | None = None  # a live sink's write thread, at a lower priority

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
        stopping = asyncio.ensure_future(stop.wait())  # ends a fetch's wait (``_unless``)
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
                records = await _unless(stopping, consumer.getmany(timeout_ms=100, max_records=20_000))
                if records is None:  # stopped while it waited for records
                    break
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
                events_done = self._events_complete()
                if self.batch.records and (full or self.flush_soon or events_done or self._barrier_complete()
                                           or time.monotonic() - last_flush >= self.flush_seconds):
                    if writing is not None:  # one flush at a time, in order
                        writing = await writing
                    self.flush_soon = False
                    busy = (full or any(self.lag.values())) and not events_done  # more is coming (see _events_complete)
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
            stopping.cancel()
            await asyncio.to_thread(self.db.close)  # a file kept open checkpoints now
            await consumer.stop()
            if self._writer is not None:
                self._writer.shutdown(wait=False)
                self._writer = None

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
                if headers.get(FORMAT) == LINES:  # many events, a line each (a backfill's private broker)
                    lines = value.split(b"\n")
                    values += lines
                    batch_ids += repeat(headers.get(BATCH), len(lines))
                    positions += repeat(message.offset, len(lines))
                    b.records += len(lines) - 1
                else:
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

    def _events_complete(self) -> bool:
        """True once for each backfill whose barrier came on every partition the sequencer writes (events,
        late, dead letters): its events are all read, and only the company engines' last rows are to come.
        Its events are then written at once, whole row groups or not, and the file let go of (checkpointed)
        while the engines finish, so that the write that ends the backfill holds their rows alone."""
        t = self.topics
        for batch_id, seen in self.barriers.items():
            if batch_id not in self._events_written and sum(
                    topic in (t.events, t.late, t.dead_letters) for topic, _ in seen) >= t.partitions + 2:
                self._events_written.add(batch_id)
                return True
        return False

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
            self._events_written.discard(batch_id)
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
        """Write in another thread: a backfill's sink (``hold``) in the default pool, a live one in its own
        thread at a lower priority (``WRITE_NICE``), so that its bursts yield the cores to the stream
        processors and the broker, which carry the alerts."""
        if self.hold:
            await asyncio.to_thread(self.write, b, done, keep)
        else:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="aisignals-sink-write", initializer=_lower_priority)
            await asyncio.get_running_loop().run_in_executor(self._writer, self.write, b, done, keep)
        self._written(b, done)
        await self._announce()

    def write(self, b: Batch, done: list[tuple[str, dict]], keep: bool = False) -> None:
        """One transaction: the batch's rows, the backfills it finishes and the offsets it covers."""
        now = datetime.now(timezone.utc)
        started = time.perf_counter()
        try:
            with self.db.writer(keep) as con:
                self.con = con
                try:
                    con.execute("SET checkpoint_threshold = '1GB'")  # COMMIT never checkpoints: closing does, bounded
                    con.execute("RESET memory_limit")  # a kept connection has the checkpoint's bound
                    if self.hold:  # beside a backfill's other processes on the same cores: threads add only contention
                        con.execute("SET threads = 1")
                    duplicates = stage_events(b.events, self.companies.company_id, con) if b.events else None
                    try:
                        self._flush(b, done, duplicates, now)
                    except duckdb.ConstraintException:
                        self._flush(b, done, duplicates, now, redelivered=True)
                    drop_staged(con)
                    con.execute(f"SET memory_limit = '{CHECKPOINT_MEMORY}'")  # for the checkpoint on close
                finally:
                    self.con = None
        except Exception:
            self.flush_failures += 1
            raise
        self.flush_duration.observe(time.perf_counter() - started)

    def _written(self, b: Batch, done: list[tuple[str, dict]]) -> None:
        """After the commit: the offsets are stored, the finished backfills can be announced."""
        self.committed.update(b.offsets)
        self.finished.extend(done)

    def _flush(self, b: Batch, done: list[tuple[str, dict]], duplicates: bool | None, now: datetime,
               redelivered: bool = False) -> None:
        """One transaction. Events (staged, ``duplicates`` not None) are appended as new rows (the bulk
        path); ``redelivered``: some are stored already (a record read again after a crash), so those are
        skipped row by row."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            if duplicates is not None:
                self._write_events(duplicates, redelivered, now)
            if b.indicators:
                self._write_indicators(b.indicators)
            if b.alerts:
                self._write_alerts(b.alerts, b.history, now, redelivered)
            if b.dead_letters:
                self._write_dead_letters(list(b.dead_letters.values()))
            for batch_id, summary in done:
                con.execute("INSERT OR REPLACE INTO backfills VALUES (?, ?, ?::JSON)",
                            [batch_id, datetime.now(timezone.utc), orjson.dumps(summary).decode()])
            if b.offsets:
                con.execute(OFFSETS_SQL, {"rows": orjson.dumps([{"run_id": b.run_id, "topic": t, "partition": p, "next_offset": o}
                                                                for (t, p), o in b.offsets.items()])})
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        self.flushes += 1

    def _write_events(self, duplicates: bool, redelivered: bool, now: datetime) -> None:
        """A plain INSERT checks the primary key anyway and fails on a stored id (then the transaction is
        run again with ``redelivered``); OR IGNORE costs more per row, so it is kept for that case."""
        written = self.con.execute(f"INSERT {'OR IGNORE ' if redelivered else ''}INTO events BY NAME {events_select(duplicates)}",
                                   {"now": now}).fetchone()[0]
        self.rows_written["events"] += written

    def _write_indicators(self, records: list[bytes]) -> None:
        self.rows_written["indicators"] += execute_on_lines(self.con, INDICATORS_SQL, indicator_lines(records)).fetchone()[0]

    def _write_alerts(self, alerts: dict[tuple[str, str], dict | None], history: list[dict], now: datetime,
                      redelivered: bool = False) -> None:
        """Alert rows and changes, a JSON list each (a flush has few); JSON columns go as their text.
        ``redelivered``: a change may be stored already (see ``HISTORY_SQL``)."""
        dumps = orjson.dumps
        con = self.con
        deletes = [{"fingerprint": fp, "starts_at": start} for (fp, start), a in alerts.items() if a is None]
        upserts = [a for a in alerts.values() if a is not None]
        if deletes:
            con.execute(GONE_SQL, {"rows": dumps(deletes)})
        if upserts:
            rows = [{**{k: a[k] for k in ("fingerprint", "rule", "company_id", "counterparty_id", "severity", "status",
                                          "starts_at", "ends_at")},
                     **{k: dumps(a[k]).decode() for k in ("evidence", "labels", "annotations")}} for a in upserts]
            con.execute(ALERTS_SQL, {"rows": dumps(rows), "now": now})
        if history:
            rows = [{"change_id": change_id(a), **{k: a[k] for k in ("fingerprint", "change", "severity", "status")},
                     **{k: a.get(k) for k in ("starts_at", "ends_at", "previous_starts_at")}, "message": dumps(a).decode()}
                    for a in history]
            con.execute(HISTORY_AGAIN_SQL if redelivered else HISTORY_SQL, {"rows": dumps(rows), "now": now})
        self.rows_written["alerts"] += len(upserts)

    def _write_dead_letters(self, rows: list[dict]) -> None:
        self.con.executemany(
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?::TIMESTAMPTZ, ?, ?, ?, ?)",
            [[r["dead_letter_id"], r["received_at"], r["origin"], r["raw"], r["error"], r.get("batch_id")] for r in rows])
        self.rows_written["dead_letters"] += len(rows)

    def close(self) -> None:
        """Close a connection kept between flushes: a reader (``Database.reuse_reader``) or the writer (``hold``)."""
        self.db.close()

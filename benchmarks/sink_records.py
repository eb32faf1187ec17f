"""The sink's CPU to read and write the same events off the embedded broker, one event a record against
records of many events, a line each (as the worker packs them on a backfill's private broker).

    .venv/bin/python -m benchmarks.sink_records --events 300000 --repeat 2

Each run fills a fresh embedded broker's events topic with the records the worker sends for the same
synthetic events (``Worker._admit``, packed or not; its 4 partitions), then
times ``DuckDBSink.run`` in this process (a backfill's sink: ``hold``, 200k-record flushes) until every
row is committed: its process CPU time (user + system, DuckDB's threads included) and wall time. The
two layouts alternate run by run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from aiokafka import AIOKafkaProducer

from benchmarks.run import synthetic_lines
from processors.app import Outputs, RawLines, Worker, send_records
from processors.rules import load_rules
from sinks.duckdb_sink import DuckDBSink
from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker
from streams.companies import normalizer
from streams.topics import MAX_REQUEST_BYTES, Topics


def worker_records(lines: list[bytes], topics: Topics, packed: bool) -> tuple[dict, int]:
    """The events records the worker sends for ``lines`` (``Worker._admit``, packed or one a record),
    and how many events they hold."""
    worker = Worker("127.0.0.1:1", topics, load_rules(None), normalizer(), pack_events=packed)
    out = Outputs()
    items = [(f"bench:{i}", line) for i, line in enumerate(lines, 1)]
    for i in range(0, len(items), 1000):
        worker._admit(out, defaultdict(list), RawLines.of(items[i : i + 1000]), "bench", None)
    out.pack()
    records = {tp: records for tp, records in out.records.items() if tp[0] == topics.events}
    return records, worker.counts["bench"]["accepted"]


async def fill(bootstrap: str, records: dict) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1024 * 1024,
                                max_request_size=MAX_REQUEST_BYTES, linger_ms=5)
    await producer.start()
    try:
        await send_records(producer, records)
        await producer.flush()
    finally:
        await producer.stop()


async def drain(bootstrap: str, topics: Topics, db: Path, n: int) -> tuple[float, float]:
    """CPU and wall seconds of a backfill's sink until its ``n`` rows are committed."""
    sink = DuckDBSink(db, topics, normalizer(), "bench", 200_000, 3.0, hold=True)
    stop = asyncio.Event()

    async def until_written() -> None:
        while sink.rows_written["events"] < n:
            await asyncio.sleep(0.01)
        stop.set()

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    watching = asyncio.create_task(until_written())
    await sink.run(bootstrap, stop)
    await watching
    after = resource.getrusage(resource.RUSAGE_SELF)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, time.perf_counter() - started


def run(lines: list[bytes], packed: bool, workdir: Path) -> tuple[float, float]:
    topics = Topics()
    records, n = worker_records(lines, topics, packed)
    broker = EmbeddedBroker(workdir / "broker.log")
    bootstrap = broker.start()
    try:
        ensure_topics(bootstrap, topics)
        asyncio.run(fill(bootstrap, records))
        del records
        return asyncio.run(drain(bootstrap, topics, workdir / f"sink-{packed}.duckdb", n))
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    lines = synthetic_lines(args.events)
    results: dict[str, list] = {"one event a record": [], "records of many events": []}
    for _ in range(args.repeat):
        for packed, name in ((False, "one event a record"), (True, "records of many events")):
            with tempfile.TemporaryDirectory(prefix="aisignals-sink-records-") as tmp:
                cpu, wall = run(lines, packed, Path(tmp))
            results[name].append({"cpu_s": round(cpu, 2), "wall_s": round(wall, 2)})
            print(f"{name}: {args.events:,} events, sink CPU {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

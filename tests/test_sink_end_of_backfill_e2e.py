"""The end of a backfill, read by a real sink from a real broker: once the sequencer's barrier has come on
every partition it writes, the sink writes the backfill's last events rows at once (whole row groups or
not) and lets go of the file while the company engines finish, so that the write that ends the backfill
holds the engines' last rows alone."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sinks.duckdb_sink import ROW_GROUP_ROWS, DuckDBSink
from streams.admin import ensure_topics
from streams.companies import normalizer
from streams.events import parse_event, to_wire
from streams.topics import BARRIER, BATCH, CONTROL, FORMAT, LINES, Topics
from tests.conftest import fetch

pytestmark = pytest.mark.e2e

EVENTS = ROW_GROUP_ROWS + 4_000  # a whole row group and part of another


def wire(n: int) -> bytes:
    return to_wire(parse_event(orjson.dumps({"event_id": f"e{n}", "kind": "hiring", "company": f"Org {n % 7}",
                                             "occurred_at": f"2024-01-{1 + n % 28:02d}", "source": "synthetic"})))


async def until(condition, timeout: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def test_a_backfills_last_events_are_written_and_the_file_let_go_before_the_engines_end(tmp_path, broker):
    topics = Topics(partitions=2)
    ensure_topics(broker.bootstrap, topics)
    db = tmp_path / "end.duckdb"
    values = [wire(n) for n in range(EVENTS)]
    barrier = orjson.dumps({"batch_id": "b1", "stream_time_us": None, "accepted": EVENTS, "duplicates": 0,
                            "late": 0, "dead_letters": 0})
    control = [(CONTROL, BARRIER), (BATCH, b"b1")]

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=8 * 1024 * 1024)
        await producer.start()
        # a backfill's sink: whole row groups while busy, the file kept open between writes; a flush only
        # when 1 MiB is buffered, never for time alone
        sink = DuckDBSink(db, topics, normalizer(), "end-test", flush_rows=10**9, flush_seconds=3600.0,
                          flush_bytes=1 << 20, hold=True)
        announced: list[str] = []
        sink.on_backfill.append(lambda batch_id, summary: announced.append(batch_id))
        stop = asyncio.Event()
        running = asyncio.create_task(sink.run(broker.bootstrap, stop))
        try:
            for i in range(0, EVENTS, 1_000):  # the worker's records of many events, a line each
                await producer.send_and_wait(topics.events, b"\n".join(values[i:i + 1_000]), partition=(i // 1_000) % 2,
                                             headers=[(FORMAT, LINES), (BATCH, b"b1")])
            for partition in range(topics.partitions):  # the sequencer's barrier
                await producer.send_and_wait(topics.events, barrier, partition=partition, headers=control)
            for topic in (topics.late, topics.dead_letters):
                await producer.send_and_wait(topic, barrier, partition=0, headers=control)
            all_written = await until(lambda: sink.rows_written["events"] == EVENTS and not sink.db.holding)
            written_then = (sink.rows_written["events"], sink.db.holding, list(announced))
            for topic in (topics.indicators, topics.alerts):  # the company engines' barrier
                for partition in range(topics.partitions):
                    await producer.send_and_wait(topic, barrier, partition=partition, headers=control)
            ended = await until(lambda: announced == ["b1"])
        finally:
            stop.set()
            await running
            await producer.stop()
        return all_written, written_then, ended

    all_written, (written, holding, announced), ended = asyncio.run(scenario())
    assert all_written and written == EVENTS  # not only the whole row group: the rest did not wait for the engines
    assert not holding  # the file was let go (checkpointed) with them
    assert announced == []  # the backfill is not done before the engines' barrier
    assert ended  # and is, with it
    assert fetch(db, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(EVENTS, EVENTS)]
    assert fetch(db, "SELECT batch_id FROM backfills") == [("b1",)]

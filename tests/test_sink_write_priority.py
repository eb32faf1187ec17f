"""A live sink writes at a lower priority than the stream processors beside it; a backfill's sink does not."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from sinks.duckdb_sink import WRITE_NICE, DuckDBSink
from streams.companies import CompanyNormalizer
from streams.topics import Topics
from tests.conftest import fetch
from tests.test_sink_flush import record, wire

TOPICS = Topics()


def _write_threads(hold: bool, tmp_path) -> tuple[dict[str, int], list]:
    """Write one batch through ``_write_in_thread``; the niceness of the thread that ran the write, and the rows."""
    db = tmp_path / "x.duckdb"
    sink = DuckDBSink(db, TOPICS, CompanyNormalizer(), "run", hold=hold)
    seen: dict[str, int] = {}
    write = sink.write

    def observed(*args):
        seen[threading.current_thread().name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return write(*args)

    sink.write = observed
    sink.add(TOPICS.events, 0, [record(i, wire(event_id)) for i, event_id in enumerate(["a", "b"])])
    batch, done = sink.take()
    asyncio.run(sink._write_in_thread(batch, done, False))
    if sink._writer is not None:
        sink._writer.shutdown()
    return seen, fetch(db, "SELECT event_id FROM events ORDER BY event_id")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own niceness is a Linux feature")
def test_a_live_sink_writes_from_a_thread_of_lower_priority(tmp_path):
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen, rows = _write_threads(False, tmp_path)
    assert rows == [("a",), ("b",)]
    ((name, nice),) = seen.items()
    assert name.startswith("aisignals-sink-write") and nice == max(own, WRITE_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # this thread is left as it was


def test_a_backfill_sink_writes_at_the_priority_of_its_process(tmp_path):
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen, rows = _write_threads(True, tmp_path)
    assert rows == [("a",), ("b",)]
    assert list(seen.values()) == [own]

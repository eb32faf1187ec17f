"""The worker's start: its group join (a second on the embedded broker) goes on while DuckDB is opened and
the state restored, and nothing is sequenced before the restore has ended."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import date

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from aisignals.pipeline import Pipeline
from streams.settings import Settings
from streams.synthetic import steady


@pytest.mark.e2e
def test_the_group_join_overlaps_the_restore_and_the_agents_wait_for_it(tmp_path):
    async def run() -> None:
        pipeline = Pipeline(Settings(db=tmp_path / "start.duckdb", log_dir=tmp_path))
        await asyncio.to_thread(pipeline.start_broker)
        producer = AIOKafkaProducer(bootstrap_servers=pipeline.bootstrap)
        await producer.start()
        try:
            for event in steady(100, 5, date(2024, 1, 1), 10, companies=5):  # waiting before the worker starts
                await producer.send(pipeline.topics.ingest, orjson.dumps(event))
            await producer.flush()
            restoring, release = threading.Event(), threading.Event()
            opened = pipeline._open

            def slow_open(worker: bool, sink: bool):
                result = opened(worker, sink)  # the real restore, then held until the test has looked
                restoring.set()
                assert release.wait(60), "the test did not release the restore"
                return result

            pipeline._open = slow_open
            starting = asyncio.ensure_future(pipeline.start())
            try:
                ingest = TP(pipeline.topics.ingest, 0)
                deadline = time.monotonic() + 30
                while not (restoring.is_set() and ingest in pipeline.worker.app.consumer.assignment()):
                    assert time.monotonic() < deadline, "the worker did not join its group while restoring"
                    assert not starting.done(), starting.exception() if not starting.cancelled() else "cancelled"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)  # the ingest records are there to be taken
                assert not pipeline.worker.restored.is_set()
                assert sum(pipeline.worker.stats.accepted.values()) == 0  # the agents wait for the restore
            finally:
                release.set()
            await starting
            deadline = time.monotonic() + 30
            while sum(pipeline.worker.stats.accepted.values()) < 100:
                assert time.monotonic() < deadline, "the waiting records were not sequenced after the restore"
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()
            await pipeline.stop()
            pipeline.stop_broker()

    asyncio.run(run())

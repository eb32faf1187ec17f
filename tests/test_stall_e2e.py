"""A sequencer that reads nothing while ingest records wait is reported, not ready, with the reason; it is
ready again once it reads. The embedded broker can stop serving a partition under a sustained live load
(README, "Tansu under a sustained live load"); here the worker's own consumer stops taking the partition
(Faust's pause), which leaves the same trace: records ahead, the position unmoved."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import date

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from aisignals.pipeline import Pipeline
from processors.stats import Progress
from streams.settings import Settings
from streams.synthetic import steady


def test_progress_verdicts():
    p = Progress(after=10.0)
    assert p.stuck(0.0, None, 5) is None  # nothing taken yet: no verdict
    assert p.stuck(1.0, 5, 5) is None  # caught up
    assert p.stuck(2.0, 5, 9000) is None  # records waiting: the clock starts
    assert p.stuck(11.0, 5, 9000) is None  # 9 s
    assert p.stuck(12.5, 5, 9000) == (10.5, 0, 8995)  # none taken in 10.5 s
    assert p.stuck(13.0, 50, 9000) == (11.0, 45, 8950)  # a trickle (45 < 8950 / 100) is still stuck
    assert p.stuck(14.0, 5000, 9000) is None  # working through a backlog: not stuck
    assert p.stuck(15.0, 9000, 9000) is None  # caught up: the clock stops
    assert p.stuck(16.0, 9000, 9001) is None and p.stuck(25.0, 9000, 9001) is None
    assert p.stuck(26.0, 9000, 9001) == (10.0, 0, 1)  # one record waiting, none taken


def test_progress_forgets_what_is_older_than_its_window():
    p = Progress(after=10.0)
    for t in range(0, 30):  # behind the whole time, taking 200 a second of ~10,000 waiting: working
        assert p.stuck(float(t), 1000 + 200 * t, 11_000 + 200 * t) is None
    for t in range(30, 45):  # then a trickle
        verdict = p.stuck(float(t), 6800 + t, 20_000 + 200 * t)
    assert verdict is not None and verdict[0] >= 10.0 and verdict[1] < 20


async def _wait(check, timeout: float):
    """``check()``'s first truthy value within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.e2e
def test_a_stuck_sequencer_makes_the_worker_not_ready_with_the_reason(tmp_path):
    async def run() -> None:
        pipeline = Pipeline(Settings(db=tmp_path / "stall.duckdb", log_dir=tmp_path), live=True)
        await asyncio.to_thread(pipeline.start_broker)
        producer = AIOKafkaProducer(bootstrap_servers=pipeline.bootstrap)
        try:
            await pipeline.start()
            await producer.start()
            worker = pipeline.worker
            worker.ingest_progress.after = 1.0
            events = iter(steady(400, 5, date.today(), 1, companies=5))

            async def send(n: int) -> None:
                for _ in range(n):
                    await producer.send(pipeline.topics.ingest, orjson.dumps(next(events)))
                await producer.flush()

            await send(100)
            await _wait(lambda: sum(worker.stats.accepted.values()) == 100, 60)
            await _wait(lambda: pipeline.readiness()[0], 30)
            ingest = TP(pipeline.topics.ingest, 0)
            worker.app.consumer.pause_partitions([ingest])
            # a fetch under way when the partition is paused can still take records, which Faust then drops
            # (it pauses only for a rebalance, after which it seeks back to the committed offsets): let it end
            # (Faust's consumer waits at most 1 s a fetch) before the records that are to wait are sent
            await asyncio.sleep(1.5)
            await send(100)
            ready, parts = await _wait(lambda: (lambda r: r if not r[0] else None)(pipeline.readiness()), 30)
            assert parts["worker"] is False and parts["broker"] is True
            assert f"took 0 records of {pipeline.topics.ingest} in " in parts["reason"]
            waiting = re.search(r"\(offset 100 of (\d+)\)", parts["reason"])  # the high watermark its fetches saw
            assert waiting and 100 < int(waiting.group(1)) <= 200 and "embedded broker" in parts["reason"]
            worker.app.consumer.resume_partitions([ingest])
            await _wait(lambda: sum(worker.stats.accepted.values()) == 200, 60)
            assert (await _wait(lambda: (lambda r: r if r[0] else None)(pipeline.readiness()), 30))[1]["worker"] is True
        finally:
            await producer.stop()
            await pipeline.stop()
            pipeline.stop_broker()

    asyncio.run(run())

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CONFORMANCE = DATA / "conformance"


def aisignals(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real command line."""
    proc = subprocess.run([sys.executable, "-m", "aisignals", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"aisignals {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fetch(db: Path, sql: str):
    """Read the DuckDB file like any other process would (retrying while the sink flushes)."""
    from sinks.database import Database

    with Database(db).reader(sandboxed=False) as con:
        return con.execute(sql).fetchall()


def read_topic(bootstrap: str, topic: str, include_control: bool = False) -> list:
    """Every record of a topic, read with aiokafka (another client than the project's producers)."""
    from aiokafka import AIOKafkaConsumer

    async def run():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            out = []
            while True:
                batch = await consumer.getmany(timeout_ms=2000)
                if not batch:
                    return out
                for messages in batch.values():
                    out.extend(m for m in messages if include_control or not any(k == "aisignals-control" for k, _ in (m.headers or ())))
        finally:
            await consumer.stop()

    return asyncio.run(run())


@pytest.fixture
def broker(tmp_path):
    """A real Tansu broker for the test, stopped afterwards."""
    b = EmbeddedBroker(tmp_path / "tansu.log")
    b.start()
    yield b
    b.stop()

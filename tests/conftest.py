from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from collections import Counter
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


INDICATOR_COLS = ("hires", "departures", "layoffs", "attrition", "key_departures", "net_talent_flow",
                  "talent_drain_ratio", "funding_usd", "funding_rounds", "model_releases")


def conformance_instances() -> int:
    """How many alert instances the conformance stream ends with (rows of expected_alerts.csv)."""
    with open(CONFORMANCE / "expected_alerts.csv") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def conformance_rows() -> int:
    """How many indicator rows the conformance stream ends with (rows of expected_indicators.csv)."""
    with open(CONFORMANCE / "expected_indicators.csv") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def indicator_table(db):
    rows = fetch(db, f"SELECT company_id, window_days, strftime(window_end, '%Y-%m-%d'), {', '.join(INDICATOR_COLS)} FROM indicators")
    return {(r[0], r[1], r[2]): dict(zip(INDICATOR_COLS, r[3:])) for r in rows}


def alert_table(db):
    return sorted(fetch(db, "SELECT rule, company_id, coalesce(counterparty_id, ''), severity, status, "
                            "strftime(starts_at, '%Y-%m-%d'), coalesce(strftime(ends_at, '%Y-%m-%d'), '') FROM alerts"))


def assert_conformance_tables(db) -> None:
    """The indicators and alerts tables equal the conformance vectors' expected ones, every value."""
    with open(CONFORMANCE / "expected_indicators.csv") as fh:
        expected = {(r["company_id"], int(r["window_days"]), r["window_end"]): r for r in csv.DictReader(fh)}
    got = indicator_table(db)
    assert set(got) == set(expected)
    for key, exp in expected.items():
        for col in INDICATOR_COLS:
            assert got[key][col] == pytest.approx(float(exp[col]), abs=1e-9), (key, col)
    with open(CONFORMANCE / "expected_alerts.csv") as fh:
        exp_alerts = sorted((r["rule"], r["company_id"], r["counterparty_id"], r["severity"], r["status"],
                             r["starts_at"], r["ends_at"]) for r in csv.DictReader(fh))
    assert alert_table(db) == exp_alerts


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


def batch_codecs(bootstrap: str, topic: str, partitions: int) -> dict[str, int]:
    """How many record batches of each codec (``none``, ``snappy`` …) a topic's log holds, read off the
    wire with a raw Fetch: the consumers' records do not say how their batch was compressed."""
    from aiokafka import TopicPartition
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.record.memory_records import MemoryRecords

    names = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

    async def run():
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        try:
            await client.force_metadata_update()
            counts: Counter[str] = Counter()
            for p in range(partitions):
                offset = 0
                while True:
                    node = client.cluster.leader_for_partition(TopicPartition(topic, p))
                    response = await client.send(node, FetchRequest(100, 1, 64 << 20, 0, [(topic, [(p, offset, 64 << 20)])]))
                    raw = response.topics[0][1][0][-1]
                    records, last = MemoryRecords(raw), None
                    while (batch := records.next_batch()) is not None:
                        counts[names[batch.compression_type]] += 1
                        last = batch
                    if last is None:
                        break
                    offset = last.base_offset + last.last_offset_delta + 1
            return dict(counts)
        finally:
            await client.close()

    return asyncio.run(run())


@pytest.fixture
def broker(tmp_path):
    """A real Tansu broker for the test, stopped afterwards."""
    b = EmbeddedBroker(tmp_path / "tansu.log")
    b.start()
    yield b
    b.stop()

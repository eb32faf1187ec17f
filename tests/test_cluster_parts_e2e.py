"""The parts on their own against one broker: `produce`, `worker` and `sink` as separate processes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from streams.topics import Topics
from tests.conftest import (CONFORMANCE, ROOT, aisignals, assert_conformance_tables, batch_codecs, conformance_instances,
                            conformance_rows, fetch)

pytestmark = pytest.mark.e2e


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "aisignals", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def wait_for(db, sql, expected, timeout=120):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        if db.exists():
            try:
                value = fetch(db, sql)[0][0]
            except Exception:  # noqa: BLE001 - tables may not exist yet
                value = None
            if value == expected:
                return value
        time.sleep(0.5)
    return value


def test_produce_worker_sink_as_separate_processes(tmp_path, broker):
    """The parts on their own end with the conformance tables; the stages' producers (the sequencer's,
    the company engines') send snappy-compressed batches (Settings.kafka_compression), the input goes
    uncompressed."""
    db = tmp_path / "parts.duckdb"
    common = ["--bootstrap", broker.bootstrap]
    sink = start("sink", *common, "--db", str(db), "--metrics-port", "0")
    worker = start("worker", *common, "--db", str(db), "--metrics-port", "0")
    try:
        aisignals("produce", str(CONFORMANCE / "stream.jsonl"), *common)
        with open(CONFORMANCE / "expected_indicators.csv") as fh:
            expected_rows = sum(1 for _ in csv.DictReader(fh))
        assert wait_for(db, "SELECT count(*) FROM indicators", expected_rows) == expected_rows
        assert wait_for(db, "SELECT count(*) FROM alerts", conformance_instances()) == conformance_instances()
    finally:
        stop(worker)
        stop(sink)
    assert fetch(db, "SELECT count(*) FROM events")[0][0] == 47
    assert_conformance_tables(db)
    topics = Topics()
    layout = topics.layout()
    for topic in (topics.ingest, topics.facts, topics.events, topics.indicators, topics.alerts):
        codecs = batch_codecs(broker.bootstrap, topic, layout[topic])
        assert set(codecs) == ({"none"} if topic == topics.ingest else {"snappy"}), (topic, codecs)


def assigned(port: int) -> dict[str, int]:
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("aisignals_assigned_partitions{"):
            topic = line.split('topic="')[1].split('"')[0]
            out[topic] = int(float(line.rsplit(" ", 1)[1]))
    return out


def test_two_workers_share_partitions_and_match_one_worker(tmp_path, broker):
    """Two worker processes in one consumer group split the 4 partitions; the tables equal one worker's."""
    from tests.test_live_e2e import free_port

    db = tmp_path / "two.duckdb"
    common = ["--bootstrap", broker.bootstrap]
    ports = [free_port(), free_port()]
    sink = start("sink", *common, "--db", str(db), "--metrics-port", "0")
    workers = [start("worker", *common, "--db", str(db), "--metrics-port", str(p)) for p in ports]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait until the group has settled with both members
            a, b = assigned(ports[0]), assigned(ports[1])
            if (a.get("aisignals.facts", 0) and b.get("aisignals.facts", 0)
                    and a.get("aisignals.facts", 0) + b.get("aisignals.facts", 0) == 4):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"group did not settle: {assigned(ports[0])} {assigned(ports[1])}")
        split = (assigned(ports[0]), assigned(ports[1]))
        aisignals("produce", str(CONFORMANCE / "stream.jsonl"), *common)
        assert wait_for(db, "SELECT count(*) FROM alerts", conformance_instances()) == conformance_instances()
        assert wait_for(db, "SELECT count(*) FROM indicators", conformance_rows()) == conformance_rows()
    finally:
        for w in workers:
            stop(w)
        stop(sink)
    print("partition split:", split)
    assert_conformance_tables(db)

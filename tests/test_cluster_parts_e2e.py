"""The parts on their own against one broker: `produce`, `worker` and `sink` as separate processes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import CONFORMANCE, ROOT, aisignals, fetch

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
    db = tmp_path / "parts.duckdb"
    common = ["--bootstrap", broker.bootstrap]
    sink = start("sink", *common, "--db", str(db), "--metrics-port", "0")
    worker = start("worker", *common, "--db", str(db), "--metrics-port", "0")
    try:
        aisignals("produce", str(CONFORMANCE / "stream.jsonl"), *common)
        with open(CONFORMANCE / "expected_indicators.csv") as fh:
            expected_rows = sum(1 for _ in csv.DictReader(fh))
        assert wait_for(db, "SELECT count(*) FROM indicators", expected_rows) == expected_rows
        assert wait_for(db, "SELECT count(*) FROM alerts", 7) == 7
    finally:
        stop(worker)
        stop(sink)
    assert fetch(db, "SELECT count(*) FROM events")[0][0] == 23
    assert sorted(fetch(db, "SELECT rule, company_id, status FROM alerts")) == sorted([
        ("talent_poaching", "alpha-ai", "resolved"), ("talent_drain", "alpha-ai", "resolved"),
        ("hiring_spree", "beta-labs", "resolved"), ("funding_surge", "gamma", "resolved"),
        ("release_burst", "delta", "resolved"), ("talent_poaching", "google-deepmind", "firing"),
        ("hiring_spree", "epsilon", "firing")])

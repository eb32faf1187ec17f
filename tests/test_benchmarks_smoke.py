"""The benchmark suite runs end to end at a small N (it measures; it asserts no speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_benchmark_suite_smoke(tmp_path):
    out = tmp_path / "results.json"
    md = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--sizes", "2000", "--repeat", "1",
                           "--live-rate", "200", "--live-seconds", "5", "--no-peer", "--fanout-subscribers", "20",
                           "--fanout-sql-clients", "2", "--json", str(out), "--markdown", str(md)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert set(results) >= {"backfill", "sink", "queries_ms_p50", "peak_rss_mb", "live", "machine"}
    assert set(results["peak_rss_mb"]) == {"worker", "engines", "sink", "broker"}
    assert set(results["backfill"]["2000"]["cpu_s"]) == {"worker", "engines", "sink", "broker"}
    assert results["live"]["alert_samples"] > 0 and results["live"]["alert_p99_ms"] >= results["live"]["alert_p50_ms"]
    assert results["backfill"]["2000"]["backfill_events_per_s"] > 0
    assert len(results["queries_ms_p50"]) == 5
    assert "(a) bare aiokafka" in md.read_text() and "(f) peak RSS" in md.read_text()
    fanout = results["fanout"]
    assert fanout["subscribers"] == 20 and fanout["alert_changes"] > 0 and fanout["server_error_lines"] == []
    assert fanout["missed"] == 0 and fanout["duplicates"] == 0 and fanout["sql_queries"] > 0
    assert "(g) fan-out" in md.read_text()

"""The benchmark suite runs end to end at a small N (it measures; it asserts no speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks.run as run
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
    live, hop = results["live"], results["live_hop"]
    assert live["samples"] > 0 and live["p99_ms"] >= live["p50_ms"] and live["topic"] == "alerts"
    assert hop["topic"] == "ingest" and hop["samples"] == hop["events"] == 1000  # the bare hop reads back every event
    assert all(c >= 0 for c in hop["broker_cores_by_10s"])  # the broker was found and sampled
    assert results["backfill"]["2000"]["backfill_events_per_s"] > 0
    assert len(results["queries_ms_p50"]) == 5
    assert "(a) bare aiokafka" in md.read_text() and "(f) peak RSS" in md.read_text()
    assert "(c) baseline: the same load on a fresh broker" in md.read_text()
    fanout = results["fanout"]
    assert fanout["subscribers"] == 20 and fanout["alert_changes"] > 0 and fanout["server_error_lines"] == []
    assert fanout["missed"] == 0 and fanout["duplicates"] == 0 and fanout["sql_queries"] > 0
    assert fanout["deliveries"] == 20 * fanout["alert_changes"] and fanout["delivery_p99_ms_by_10s"]
    baseline = results["fanout_baseline"]  # the same load with nobody subscribed: the server's own RSS trend
    assert baseline["subscribers"] == 0 and baseline["alert_changes"] > 0 and baseline["server_error_lines"] == []
    assert len(baseline["server_rss_mb_samples"]) >= 5
    assert "(g) fan-out" in md.read_text() and "(g) baseline" in md.read_text()


def test_a_process_that_ends_while_it_is_named_is_not_an_error(monkeypatch):
    """The harness names each child from /proc while the backfill runs; a short-lived one (the input's
    readers) may end between reading its command line and its name."""
    read_text = Path.read_text

    def gone(self, *args, **kwargs):
        if self.name == "comm":
            raise FileNotFoundError(f"No such file or directory: '{self}'")
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", gone)
    assert run._name(os.getpid()) == "?"

"""`aisignals watch --once` through the real command line, embedded broker, Faust worker and DuckDB,
against a local server standing in for the Hugging Face Hub, Epoch AI and SEC EDGAR."""

from __future__ import annotations

import pytest

from tests.conftest import aisignals, fetch
from tests.sources_server import Answer, RecordedServer, serve_epoch, serve_huggingface, serve_sec, sources_toml

pytestmark = pytest.mark.e2e


def stored(db):
    return {r[0]: r[1:] for r in fetch(db, "SELECT event_id, kind, company, source, amount_usd, model_name, late FROM events")}


def test_watch_once_stores_exactly_the_new_events(tmp_path):
    db = tmp_path / "w.duckdb"
    toml = tmp_path / "sources.toml"
    with RecordedServer() as server:
        toml.write_text(sources_toml(server.base))
        serve_huggingface(server, 1, etag='W/"v1"')
        serve_epoch(server, 1)
        serve_sec(server, 1)
        out = aisignals("watch", str(toml), "--db", str(db), "--once")
        first = stored(db)
        by_source = {}
        for event_id, (kind, company, source, amount, model, late) in first.items():
            by_source.setdefault(source, set()).add(event_id)
        assert {k: len(v) for k, v in by_source.items()} == {"huggingface": 4, "epoch": 15, "sec_form_d": 3}
        assert sum(a for _, (k, c, s, a, m, late) in first.items() if s == "sec_form_d") == 30e6
        assert out.stdout.splitlines() == [
            "huggingface (huggingface): 7 fetched, 4 new events, 3 unchanged, 0 skipped, 0 dead letters, 0 errors",
            "epoch (epoch): 11 fetched, 15 new events, 0 unchanged, 1 skipped, 0 dead letters, 0 errors",
            "sec_form_d (sec_form_d): 3 fetched, 3 new events, 0 unchanged, 0 skipped, 0 dead letters, 0 errors"]
        assert (tmp_path / "w.duckdb.sources" / "huggingface.json").exists()

        # a second run stores nothing new (304s and cursors)
        out = aisignals("watch", str(toml), "--db", str(db), "--once")
        assert stored(db) == first
        assert [line.split(": ", 1)[1].split(", ")[1] for line in out.stdout.splitlines()] == ["0 new events"] * 3
        assert fetch(db, "SELECT count(*) FROM dead_letters")[0][0] == 0

        # new items everywhere, but EDGAR fails: the other two are complete, the command still exits 0
        serve_huggingface(server, 2, etag='W/"v2"')
        serve_epoch(server, 2)
        server.route("/submissions/CIK0001999001.json", Answer(503, b"maintenance"))
        out = aisignals("watch", str(toml), "--db", str(db), "--once")
        third = stored(db)
        added = {k: v for k, v in third.items() if k not in first}
        assert sorted((v[2], v[4]) for v in added.values()) == [
            ("epoch", "Llama 4 Behemoth"), ("epoch", "Pangu Ultra"), ("huggingface", "example-lab/Nova-2.5-8B")]
        assert "source sec_form_d: http_5xx:" in out.stderr

        # EDGAR is back: its new filings arrive, and a malformed one is a dead letter named by its source
        serve_sec(server, 2)
        aisignals("watch", str(toml), "--db", str(db), "--once")
        fourth = stored(db)
        assert set(fourth) - set(third) == {"sec-0001999001-26-000002"}
        assert fetch(db, "SELECT origin FROM dead_letters") == [("sec_form_d:0001999001-26-000003",)]


def test_up_runs_the_sources(tmp_path):
    """`aisignals up --sources` polls them inside the running pipeline."""
    db = tmp_path / "u.duckdb"
    toml = tmp_path / "sources.toml"
    with RecordedServer() as server:
        toml.write_text(sources_toml(server.base))
        serve_huggingface(server, 1)
        serve_epoch(server, 1)
        serve_sec(server, 1)
        aisignals("up", "--no-demo", "--sources", str(toml), "--for", "30", "--port", "0", "--db", str(db))
    assert fetch(db, "SELECT source, count(*) FROM events GROUP BY source ORDER BY source") == [
        ("epoch", 15), ("huggingface", 4), ("sec_form_d", 3)]


def test_watch_polls_on_its_interval_until_stopped_against_a_cluster(tmp_path, broker):
    """Without --once, against a Kafka cluster (--bootstrap): each source polls on its own interval; new
    repositories appear on the next poll; SIGINT stops it cleanly."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    db = tmp_path / "c.duckdb"
    toml = tmp_path / "sources.toml"
    with RecordedServer() as server:
        toml.write_text(sources_toml(server.base, huggingface="interval_seconds = 2\n"))
        serve_huggingface(server, 1, etag='W/"v1"')
        serve_epoch(server, 1)
        serve_sec(server, 1)
        proc = subprocess.Popen([sys.executable, "-m", "aisignals", "watch", str(toml), "--db", str(db),
                                 "--bootstrap", broker.bootstrap], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            def hf_models():
                try:
                    return {r[0] for r in fetch(db, "SELECT model_name FROM events WHERE source = 'huggingface'")}
                except Exception:  # noqa: BLE001 - not created yet
                    return set()

            deadline = time.monotonic() + 120
            while len(hf_models()) < 4 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(hf_models()) == 4
            polls = len(server.seen("/api/models"))
            serve_huggingface(server, 2, etag='W/"v2"')
            while "example-lab/Nova-2.5-8B" not in hf_models() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "example-lab/Nova-2.5-8B" in hf_models()
            assert len(server.seen("/api/models")) > polls
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert fetch(db, "SELECT source, count(*) FROM events GROUP BY source ORDER BY source") == [
        ("epoch", 15), ("huggingface", 5), ("sec_form_d", 3)]
    assert "huggingface: 8 fetched, 1 new events" in err

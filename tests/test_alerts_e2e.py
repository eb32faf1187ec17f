"""Alert state changes on the alerts topic: published once, across reruns and worker restarts."""

from __future__ import annotations

from collections import Counter
from datetime import date

import orjson
import pytest

from processors.rules import load_rules
from streams.synthetic import generate
from tests import reference
from tests.conftest import aisignals, fetch, read_topic

pytestmark = pytest.mark.e2e


def test_alert_changes_published_once_across_restart_and_rerun(tmp_path, broker):
    events = [orjson.dumps(e) for e in generate("talent-war", 2500, 3, date(2024, 1, 1), 240)]
    half = len(events) // 2
    first, second, whole = tmp_path / "first.jsonl", tmp_path / "second.jsonl", tmp_path / "whole.jsonl"
    first.write_bytes(b"\n".join(events[:half]) + b"\n")
    second.write_bytes(b"\n".join(events[half:]) + b"\n")
    whole.write_bytes(b"\n".join(events) + b"\n")
    db = tmp_path / "a.duckdb"
    common = ["--db", str(db), "--bootstrap", broker.bootstrap, "--partitions", "4"]
    aisignals("backfill", str(first), *common)   # worker 1
    aisignals("backfill", str(second), *common)  # worker 2: restored from DuckDB mid-stream
    aisignals("backfill", str(whole), *common)   # worker 3: the same input again, all duplicates

    messages = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, "aisignals.alerts")]
    changes = Counter((a["fingerprint"], a["starts_at"], a["change"], a["severity"], a["status"], a["ends_at"])
                      for a in messages)
    assert messages and max(changes.values()) == 1, [k for k, n in changes.items() if n > 1][:5]
    assert {a["change"] for a in messages} >= {"firing", "resolved"}
    # the table holds the latest state of each instance, equal to the batch recomputation
    accepted, *_ = reference.accepted_events([events])
    stream_day = max(e.occurred_at for e in accepted).date()
    ref = sorted((a["rule"], a["company_id"], a["counterparty_id"] or "", a["severity"], a["starts_at"], a["ends_at"] or "")
                 for a in reference.alerts(accepted, load_rules(), stream_day))
    mine = sorted(fetch(db, "SELECT rule, company_id, coalesce(counterparty_id, ''), severity, strftime(starts_at, '%Y-%m-%d'),"
                            " coalesce(strftime(ends_at, '%Y-%m-%d'), '') FROM alerts"))
    assert mine == ref
    # Alertmanager shape
    sample = messages[0]
    assert {"labels", "annotations", "startsAt", "endsAt", "fingerprint", "status"} <= set(sample)
    assert {"alertname", "company", "severity"} <= set(sample["labels"]) and sample["annotations"]["summary"]
    # the history table has every change once
    assert fetch(db, "SELECT count(*) FROM alert_history")[0][0] == len(messages)


def test_backtesting_with_a_rules_file_and_alert_commands(tmp_path, monkeypatch):
    from tests.conftest import CONFORMANCE

    rules = tmp_path / "rules.toml"
    rules.write_text("[talent_drain]\nmin_departures = 3\nmin_ratio = 1.0\n\n[hiring_spree]\nenabled = false\n")
    db = tmp_path / "bt.duckdb"
    aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db), "--rules", str(rules))
    got = dict(fetch(db, "SELECT rule || ':' || company_id, strftime(starts_at, '%Y-%m-%d') FROM alerts"))
    assert got["talent_drain:alpha-ai"] == "2024-01-07"  # 3 departures vs 2 hires: ratio 1.5 ≥ 1.0
    assert "talent_drain:google-deepmind" in got  # 3 departures, 0 hires
    assert not any(k.startswith("hiring_spree") for k in got)
    listing = aisignals("alerts", "list", "--db", str(db), "--rule", "talent_drain").stdout
    assert "alpha" in listing
    fp = fetch(db, "SELECT fingerprint FROM alerts WHERE rule = 'talent_drain' AND company_id = 'alpha-ai'")[0][0]
    explained = aisignals("alerts", "explain", fp, "--db", str(db)).stdout
    assert "a-d3" in explained and "evidence" in explained
    # --company takes the user's own aliases too
    aliases = tmp_path / "aliases.toml"
    aliases.write_text('[aliases]\nalpha-ai = ["acme-research"]\n')
    assert "alpha" not in aisignals("alerts", "list", "--db", str(db), "--company", "Acme Research").stdout
    monkeypatch.setenv("AISIGNALS_ALIASES_FILE", str(aliases))
    assert "alpha" in aisignals("alerts", "list", "--db", str(db), "--company", "Acme Research").stdout

"""The real datasets: row accounting, promotions, moves, and streaming == batch recomputation."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processors.rules import load_rules
from streams.adapters import Accounting, aiwatch_events, epoch_events, place_date, seniority_of
from streams.events import parse_event
from tests import reference
from tests.conftest import ROOT, aisignals, fetch

REAL = ROOT / "aisignals" / "data" / "real"
AIWATCH, EPOCH = REAL / "aiwatch_positions.csv", REAL / "epoch_notable_ai_models.csv"


def test_date_precision_and_seniority():
    assert place_date("2024-04-29", "month").isoformat() == "2024-04-01"
    assert place_date("2017-06-01", "year").isoformat() == "2017-01-01"
    assert place_date("", "month") is None
    assert seniority_of("President and co-founder") == "founder"
    assert seniority_of("VP of Safety and Policy") == "vp"
    assert seniority_of("Member Of Technical Staff") == "staff"


def test_aiwatch_accounting_promotion_and_move():
    acc = Accounting()
    events = [e for _, e in aiwatch_events(AIWATCH, acc)]
    assert acc.rows == 15_611 == acc.used + acc.skipped_total
    assert acc.skipped["no dates"] > 0
    for e in events:
        parse_event(orjson.dumps(e))  # every produced event is valid SPEC §2
    # Miles Brundage was promoted twice at OpenAI (2021-01, 2024-08) and left in 2024-10: one departure
    miles = [e for e in events if e["person"] == "Miles Brundage" and e["company"] == "OpenAI"]
    assert [(e["kind"], e["occurred_at"]) for e in miles if e["kind"] == "departure"] == [("departure", "2024-10-01")]
    assert sum(e["kind"] == "hiring" for e in miles) == 1
    # Amanda Askell moved from OpenAI to Anthropic
    (leave,) = [e for e in events if e["person"] == "Amanda Askell" and e["kind"] == "departure" and e["company"] == "OpenAI"]
    assert leave["to_company"] == "Anthropic"
    (join,) = [e for e in events if e["person"] == "Amanda Askell" and e["kind"] == "hiring" and e["company"] == "Anthropic"]
    assert join["from_company"] == "OpenAI"


def test_epoch_accounting_and_multi_org_split():
    acc = Accounting()
    events = [e for _, e in epoch_events(EPOCH, acc)]
    assert acc.rows == 954 == acc.used + acc.skipped_total
    assert acc.events["model_release"] == len(events) > acc.used  # multi-organisation rows split
    for e in events:
        parse_event(orjson.dumps(e))
    by_model = {}
    for e in events:
        by_model.setdefault(e["model_name"], set()).add(e["company"])
    assert any(len(orgs) > 1 for orgs in by_model.values())


@pytest.mark.e2e
@pytest.mark.parametrize("fmt,path", [("epoch", EPOCH), ("aiwatch", AIWATCH)])
def test_real_data_streaming_equals_batch(tmp_path, fmt, path):
    db = tmp_path / f"{fmt}.duckdb"
    out = aisignals("backfill", "--format", fmt, str(path), "--db", str(db), timeout=600)
    assert "input rows" in out.stdout
    adapter = {"epoch": epoch_events, "aiwatch": aiwatch_events}[fmt]
    lines = [orjson.dumps(e) for _, e in adapter(Path(path), Accounting())]
    accepted, late, dead, dups = reference.accepted_events([lines])
    assert fetch(db, "SELECT count(*) FROM events WHERE NOT late")[0][0] == len(accepted)
    cols = ("hires", "departures", "key_departures", "net_talent_flow", "talent_drain_ratio", "funding_usd",
            "funding_rounds", "model_releases")
    got = {(r[0], r[1], r[2]): r[3:] for r in fetch(
        db, f"SELECT company_id, window_days, strftime(window_end, '%Y-%m-%d'), {', '.join(cols)} FROM indicators")}
    exp = reference.indicators(accepted)
    assert set(got) == set(exp)
    for k, row in exp.items():
        assert got[k] == pytest.approx(tuple(row[c] for c in cols), rel=1e-12, abs=1e-9), k
    stream_day = max(e.occurred_at for e in accepted).date()
    ref = sorted((a["rule"], a["company_id"], a["counterparty_id"] or "", a["severity"], a["starts_at"], a["ends_at"] or "")
                 for a in reference.alerts(accepted, load_rules(), stream_day))
    mine = sorted(fetch(db, "SELECT rule, company_id, coalesce(counterparty_id, ''), severity, strftime(starts_at, '%Y-%m-%d'),"
                            " coalesce(strftime(ends_at, '%Y-%m-%d'), '') FROM alerts"))
    assert mine == ref and len(mine) > 0


def test_csv_adapter_with_mapping_skips_with_reasons(tmp_path):
    from streams.adapters import CsvMapping, MappingError, csv_events

    mapping = CsvMapping.parse(["company=org", "occurred_at=date", "amount_usd=usd", "round=stage", "investors=backers"],
                               "funding", "%Y/%m/%d", None)
    acc = Accounting()
    events = [e for _, e in csv_events(ROOT / "tests" / "data" / "funding.csv", acc, mapping)]
    assert acc.rows == 6 == acc.used + acc.skipped_total and acc.used == 2
    assert [e["amount_usd"] for e in events] == [1e9, 9e9] and events[0]["investors"] == ["X", "Y"]
    reasons = " | ".join(acc.skipped)
    assert "greater than or equal to 0" in reasons and "does not match" in reasons and "amount_usd" in reasons
    assert "company" in reasons
    with pytest.raises(MappingError):
        CsvMapping.parse(["company=org"], "funding", None, None)
    with pytest.raises(MappingError):
        list(csv_events(ROOT / "tests" / "data" / "funding.csv", Accounting(),
                        CsvMapping.parse(["company=nope", "occurred_at=date"], "funding", None, None)))


@pytest.mark.e2e
def test_csv_backfill_reports_accounting(tmp_path):
    db = tmp_path / "csv.duckdb"
    out = aisignals("backfill", "--format", "csv", str(ROOT / "tests" / "data" / "funding.csv"), "--db", str(db),
                    "--kind", "funding", "--map", "company=org", "--map", "occurred_at=date", "--map", "amount_usd=usd",
                    "--date-format", "%Y/%m/%d")
    assert "skipped" in out.stdout
    assert fetch(db, "SELECT company_id, amount_usd FROM events ORDER BY occurred_at") == [("gamma", 1e9), ("gamma", 9e9)]
    assert fetch(db, "SELECT rule, severity FROM alerts") == [("funding_surge", "critical")]

"""The real datasets: row accounting, promotions, moves, and streaming == batch recomputation."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processors.rules import load_rules
from streams.adapters import Accounting, aiwatch_events, epoch_events, place_date, seniority_of
from streams.events import parse_event
from tests import reference
from tests.conftest import INDICATOR_COLS, ROOT, aisignals, fetch

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
    # Ilya Sutskever's OpenAI staff position ends 2018-10 and his board seat starts 2018-11: he did not leave
    ilya = [e for e in events if e["person"] == "Ilya Sutskever" and e["company"] == "OpenAI"]
    assert [e["kind"] for e in ilya] == ["hiring"]
    assert {e.get("reason") for e in events if e["kind"] == "departure"} == {"unknown"}
    assert acc.skipped["not employment (board member): no event, only continued involvement"] > 0


def test_aiwatch_continuity_across_position_types(tmp_path):
    """A board seat or advisory role within 90 days after employment at the same organisation continues it;
    one that starts later does not; a staff position after 90 days is a new hire."""
    path = tmp_path / "positions.csv"
    header = "person,organization,title,start_date,start_date_precision,end_date,end_date_precision,employment_type\n"
    rows = [
        "Ana,Lab A,Research Scientist,2019-01-01,day,2020-06-30,day,",  # then advisor from 2020-09-01: stays
        "Ana,Lab A,Advisor,2020-09-01,day,2021-12-31,day,advisor",
        "Ben,Lab A,Engineer,2019-01-01,day,2020-06-30,day,",  # board seat 100 days later: he left
        "Ben,Lab A,Board member,2020-10-08,day,,,board member",
        "Cy,Lab A,Engineer,2019-01-01,day,2020-06-30,day,",  # rejoins the staff after 80 days: one spell
        "Cy,Lab A,Senior Engineer,2020-09-18,day,2022-01-31,day,",
        "Cy,Lab B,Engineer,2022-03-01,day,,,",
    ]
    path.write_text(header + "\n".join(rows) + "\n")
    acc = Accounting()
    events = [(e["person"], e["kind"], e["company"], e["occurred_at"], e.get("to_company")) for _, e in aiwatch_events(path, acc)]
    assert acc.rows == 7 == acc.used + acc.skipped_total and acc.used == 5
    assert sorted(events) == sorted([
        ("Ana", "hiring", "Lab A", "2019-01-01", None),
        ("Ben", "hiring", "Lab A", "2019-01-01", None),
        ("Ben", "departure", "Lab A", "2020-06-30", None),
        ("Cy", "hiring", "Lab A", "2019-01-01", None),
        ("Cy", "departure", "Lab A", "2022-01-31", "Lab B"),
        ("Cy", "hiring", "Lab B", "2022-03-01", None),
    ])


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
    cols = INDICATOR_COLS
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


def test_layoffs_adapter_accounts_for_every_row():
    from streams.adapters import layoffs_events

    acc = Accounting()
    events = [e for _, e in layoffs_events(ROOT / "tests" / "data" / "layoffs.csv", acc)]
    assert acc.rows == 12 == acc.used + acc.skipped_total and acc.used == 8 == len(events)
    assert dict(acc.skipped) == {"no number laid off (a percentage at most)": 1, "unreadable date": 1, "no company": 1,
                                 "number laid off is not a whole number of at least 1": 1}
    for e in events:
        parsed = parse_event(orjson.dumps(e))
        assert parsed.kind == "departure" and parsed.reason == "layoff" and parsed.source == "layoffs.fyi"
    meta = events[0]
    assert (meta["company"], meta["occurred_at"], meta["headcount"], meta["percentage_laid_off"]) == ("Meta", "2022-11-09", 11000, 0.13)
    assert [e["headcount"] for e in events if e["company"] == "Imaginary Health AI"] == [1200, 35]  # "1,200", "35.0", ISO dates
    assert len({e["event_id"] for e in events}) == 8


@pytest.mark.e2e
def test_layoffs_backfill_raises_workforce_reductions_and_no_drain(tmp_path):
    db = tmp_path / "layoffs.duckdb"
    out = aisignals("backfill", "--format", "layoffs", str(ROOT / "tests" / "data" / "layoffs.csv"), "--db", str(db))
    assert "no number laid off" in out.stdout
    assert fetch(db, "SELECT rule, company_id, severity, strftime(starts_at, '%Y-%m-%d') FROM alerts ORDER BY starts_at") == [
        ("workforce_reduction", "meta", "critical", "2022-11-09"),
        ("workforce_reduction", "microsoft", "critical", "2023-01-18"),
        ("workforce_reduction", "google", "critical", "2023-01-20"),
        ("workforce_reduction", "fictional-robotics", "warning", "2023-02-01"),
        ("workforce_reduction", "meta", "critical", "2023-03-14"),
        ("workforce_reduction", "imaginary-health-ai", "critical", "2023-04-03"),
    ]
    (summary,) = fetch(db, "SELECT annotations->>'summary' FROM alerts WHERE company_id = 'meta' AND starts_at = '2022-11-09'")[0]
    assert summary == "Meta cut 11,000 jobs in 30 days"
    assert fetch(db, "SELECT sum(headcount), count(*) FILTER (WHERE reason = 'layoff') FROM events") == [(44425, 8)]


@pytest.mark.e2e
def test_csv_set_maps_a_departure_spreadsheet(tmp_path):
    """Any layoff spreadsheet: --map the columns, --set the constant fields."""
    sheet = tmp_path / "cuts.csv"
    sheet.write_text("org,when,people\nFictional Mills,2024-05-02,300\nFictional Mills,2024-05-20,900\n")
    db = tmp_path / "cuts.duckdb"
    aisignals("backfill", "--format", "csv", str(sheet), "--db", str(db), "--map", "company=org", "--map", "occurred_at=when",
              "--map", "headcount=people", "--set", "kind=departure", "--set", "reason=layoff")
    assert fetch(db, "SELECT reason, sum(headcount) FROM events GROUP BY ALL") == [("layoff", 1200)]
    assert fetch(db, "SELECT rule, severity FROM alerts") == [("workforce_reduction", "critical")]


def test_csv_set_errors_are_one_line():
    from streams.adapters import CsvMapping, MappingError

    mapping = CsvMapping.parse(["company=org", "occurred_at=when"], None, None, None, ["kind=departure", "reason=layoff"])
    assert (mapping.kind, mapping.constants) == ("departure", {"reason": "layoff"})
    with pytest.raises(MappingError, match="--set takes FIELD=VALUE"):
        CsvMapping.parse(["company=org", "occurred_at=when"], "departure", None, None, ["reason"])
    with pytest.raises(MappingError, match="both mapped to a column and set"):
        CsvMapping.parse(["company=org", "occurred_at=when", "reason=why"], "departure", None, None, ["reason=layoff"])

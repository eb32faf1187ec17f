"""The schema has one source: the pydantic models. DDL and docs derive from them."""

from __future__ import annotations

from pathlib import Path

import duckdb

from sinks.schema import all_ddl, columns, markdown_reference
from streams.records import EventRow, IndicatorRow

DOCS = Path(__file__).resolve().parent.parent / "docs" / "tables.md"


def test_docs_are_generated_from_models():
    assert markdown_reference() in DOCS.read_text()


def test_ddl_creates_spec_columns():
    con = duckdb.connect()
    for ddl in all_ddl():
        con.execute(ddl)
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name='events'").fetchall())
    assert types["occurred_at"] == "TIMESTAMP WITH TIME ZONE" and types["headcount"] == "INTEGER"
    assert types["late"] == "BOOLEAN" and types["payload"] == "JSON" and types["amount_usd"] == "DOUBLE"
    assert [c[0] for c in columns(IndicatorRow)][:3] == ["company_id", "window_days", "window_end"]
    assert set(EventRow.model_fields) >= {"event_id", "kind", "company_id", "company", "counterparty_id", "occurred_at",
                                          "ingested_at", "headcount", "seniority", "amount_usd", "model_name", "modality", "source",
                                          "late", "payload"}


def test_the_long_json_texts_are_stored_with_zstd(tmp_path):
    """A row's JSON text (events.payload, alert_history.message) is stored zstd-compressed: smaller and
    cheaper to write than what DuckDB picks for it itself (FSST)."""
    con = duckdb.connect(str(tmp_path / "z.duckdb"))
    for ddl in all_ddl():
        con.execute(ddl)
    con.execute("INSERT INTO events (event_id, payload) SELECT 'e' || i, json_object('event_id', 'e' || i, 'note', repeat('x', i % 50))"
                " FROM range(5000) t(i)")
    con.execute("CHECKPOINT")
    methods = dict(con.execute("SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info('events')"
                               " WHERE segment_type <> 'VALIDITY' AND column_name IN ('payload', 'event_id') GROUP BY ALL").fetchall())
    assert methods["payload"] == ["ZSTD"] and "ZSTD" not in methods["event_id"]

"""What a restarting worker continues from: the state the sink committed, after rolling back what
interrupted backfills wrote. Only DuckDB is needed here (the backfill's own process imports nothing else
of the sink's)."""

from __future__ import annotations

import logging

from processors.facts import fact_from_fields
from sinks.database import Database
from streams.events import COUNTERPARTY_FIELDS

log = logging.getLogger("aisignals.sink")
# the counterparty as the event spelled it: only the field its kind defines
COUNTERPARTY_NAME = ("CASE kind " + " ".join(f"WHEN '{kind}' THEN payload->>'{field}'"
                                              for kind, field in COUNTERPARTY_FIELDS.items()) + " END")

def load_worker_state(database: Database):
    """What the stream processors need to continue, from what the sink committed:
    every stored event id, the greatest accepted time, the accepted facts, and the published alerts."""
    if not database.path.exists():
        return [], None, [], []
    with database.reader(sandboxed=False) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "events" not in tables or "alerts" not in tables:
            return [], None, [], []
        seen = [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()]
        max_us = con.execute(
            "SELECT epoch_us(max(occurred_at)) FROM events WHERE NOT late").fetchone()[0]
        rows = con.execute(
            "SELECT event_id, kind, company_id, counterparty_id, occurred_at, headcount, seniority, reason, amount_usd, "
            f"company, {COUNTERPARTY_NAME} FROM events WHERE NOT late ORDER BY occurred_at, ingested_at").fetchall()
        facts = [fact_from_fields(*r) for r in rows]
        published = [
            (rule, company, counterparty, start.toordinal(), severity, end.toordinal() if end else None)
            for rule, company, counterparty, start, severity, end in con.execute(
                "SELECT rule, company_id, counterparty_id, starts_at, severity, ends_at FROM alerts").fetchall()
        ]
        return seen, max_us, facts, published


def rollback_unfinished(database: Database) -> int | None:
    """Delete what backfills that never finished (a crash, a kill) wrote, and the indicator rows derived
    from anything; the worker then re-emits every row from the remaining events. Returns None if there
    was nothing to roll back, else how far the interrupted runs had got, in event time (µs; 0 if none)."""
    with database.writer() as con:
        unfinished = [r[0] for r in con.execute(
            "SELECT DISTINCT batch_id FROM (SELECT batch_id FROM events UNION ALL SELECT batch_id FROM dead_letters)"
            " WHERE batch_id IS NOT NULL AND batch_id NOT IN (SELECT batch_id FROM backfills)").fetchall()]
        if not unfinished:
            return None
        # how far the interrupted runs had got: their events, and the stream time of the alert changes
        # published (an earlier interrupted run may have got further than the last one)
        reached = con.execute(
            "SELECT greatest((SELECT epoch_us(max(occurred_at)) FROM events WHERE NOT late),"
            " (SELECT epoch_us(max((message->>'stream_time')::DATE)) FROM alert_history))").fetchone()[0] or 0
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM events WHERE list_contains(?::VARCHAR[], batch_id)", [unfinished])
        con.execute("DELETE FROM dead_letters WHERE list_contains(?::VARCHAR[], batch_id)", [unfinished])
        con.execute("DELETE FROM indicators")
        con.execute("COMMIT")
    log.warning("rolled back %d interrupted backfill(s): %s", len(unfinished), ", ".join(unfinished))
    return reached

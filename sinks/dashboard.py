"""What the dashboard (``sinks/static/dashboard.html``) and the terminal view of ``aisignals up`` show.

One read of the DuckDB file gives one consistent snapshot: the alert feed (every firing instance, each
once, in its latest state, then the most recently resolved) and the firing count come from the same
rows, so the two always agree. Synthetic events (``source = "synthetic"``) and the alerts about the
companies they name are marked as such.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastapi import APIRouter, FastAPI, Query

from sinks.database import Database
from streams.companies import CompanyNormalizer

SYNTHETIC_SOURCE = "synthetic"
# companies that synthetic events name (company or counterparty): their indicators and alerts are synthetic
SYNTHETIC_COMPANIES = (f"SELECT company_id FROM events WHERE source = '{SYNTHETIC_SOURCE}' UNION "
                       f"SELECT counterparty_id FROM events WHERE source = '{SYNTHETIC_SOURCE}' AND counterparty_id IS NOT NULL")
LATEST_ROW = ("SELECT * FROM indicators i WHERE window_days = {w} AND window_end = (SELECT max(window_end) "
              "FROM indicators j WHERE j.company_id = i.company_id AND j.window_days = {w})")
ALERT_COLUMNS = ("fingerprint", "rule", "company_id", "counterparty_id", "severity", "status", "starts_at", "ends_at",
                 "summary")
ALERT_SELECT = ("SELECT fingerprint, rule, company_id, counterparty_id, severity, status,"
                " strftime(starts_at, '%Y-%m-%d'), strftime(ends_at, '%Y-%m-%d'), annotations->>'summary' FROM alerts")


def _rows(con, sql: str, params: list | None = None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def snapshot(con, top: int = 10, resolved: int = 20) -> dict[str, Any]:
    """Counts, the alert feed and the top companies, from one connection (one state of the file)."""
    synthetic = {r[0] for r in con.execute(SYNTHETIC_COMPANIES).fetchall()}
    counts = _rows(con, "SELECT (SELECT count(*) FROM events) AS events,"
                        f" (SELECT count(*) FROM events WHERE source = '{SYNTHETIC_SOURCE}') AS synthetic_events,"
                        " (SELECT count(*) FROM dead_letters) AS dead_letters,"
                        " (SELECT strftime(max(occurred_at), '%Y-%m-%d') FROM events WHERE NOT late) AS stream_time")[0]
    firing = con.execute(f"{ALERT_SELECT} WHERE status = 'firing' ORDER BY starts_at DESC, rule, company_id").fetchall()
    ended = con.execute(f"{ALERT_SELECT} WHERE status = 'resolved' ORDER BY updated_at DESC, ends_at DESC, rule"
                        f" LIMIT {int(resolved)}").fetchall()
    alerts = []
    for row in firing + ended:
        alert = dict(zip(ALERT_COLUMNS, row))
        alert["synthetic"] = alert["company_id"] in synthetic or alert["counterparty_id"] in synthetic
        alerts.append(alert)

    def top_rows(sql: str) -> list[dict]:
        out = _rows(con, sql)
        for r in out:
            r["synthetic"] = r["company_id"] in synthetic
        return out

    drain = top_rows(f"SELECT company_id, attrition, hires, talent_drain_ratio FROM ({LATEST_ROW.format(w=90)})"
                     f" WHERE attrition > 0 ORDER BY talent_drain_ratio DESC, attrition DESC, company_id LIMIT {int(top)}")
    workforce = top_rows(f"SELECT company_id, layoffs, attrition, hires FROM ({LATEST_ROW.format(w=30)})"
                         f" WHERE layoffs > 0 ORDER BY layoffs DESC, company_id LIMIT {int(top)}")
    funding = top_rows(f"SELECT company_id, funding_usd, funding_rounds FROM ({LATEST_ROW.format(w=30)})"
                       f" WHERE funding_usd > 0 ORDER BY funding_usd DESC, company_id LIMIT {int(top)}")
    return {**counts, "firing": len(firing), "alerts": alerts, "top_drain": drain, "top_workforce": workforce,
            "top_funding": funding}


def history(con, company_id: str, window_days: int) -> list[dict]:
    """A company's indicator rows over time, for one window length."""
    return _rows(con, "SELECT strftime(window_end, '%Y-%m-%d') AS window_end, hires, departures, layoffs, attrition,"
                      " key_departures, talent_drain_ratio, funding_usd, model_releases FROM indicators"
                      " WHERE company_id = ? AND window_days = ? ORDER BY window_end", [company_id, window_days])


def dashboard_routes(database: Database, companies: CompanyNormalizer,
                     ready: Callable[[], tuple[bool, dict]] | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1/dashboard", include_in_schema=False)

    def read(fn, *args):
        with database.reader() as con:
            return fn(con, *args)

    @router.get("/state")
    async def state(top: int = Query(10, ge=1, le=100), resolved: int = Query(20, ge=0, le=500)):
        """Everything the dashboard page shows but a company's history, in one snapshot."""
        data = await asyncio.to_thread(read, snapshot, top, resolved)
        ok, parts = await asyncio.to_thread(ready) if ready is not None else (True, {})
        return {**data, "health": {"ready": ok, **parts}}

    @router.get("/history/{company}")
    async def company_history(company: str, window_days: int = Query(90, ge=1, le=3650)):
        return await asyncio.to_thread(read, history, companies.company_id(company), window_days)

    return router


def with_dashboard(app: FastAPI, database: Database, companies: CompanyNormalizer,
                   ready: Callable[[], tuple[bool, dict]] | None = None) -> FastAPI:
    """The dashboard's data endpoints beside the HTTP API (the page itself is served at ``/``)."""
    app.include_router(dashboard_routes(database, companies, ready))
    return app

"""SPEC §3 indicator rows: which rows an event touches, and their values."""

from __future__ import annotations

from datetime import date

from processors.timeline import CompanyTimeline


def indicator_row(timeline: CompanyTimeline, window_days: int, day: int) -> dict:
    """One ``indicators`` row (the shape of ``streams.records.IndicatorRecord``)."""
    t = timeline.totals(window_days, day)
    return {
        "company_id": timeline.company_id,
        "window_days": window_days,
        "window_end": date.fromordinal(day).isoformat(),
        "hires": t.hires,
        "departures": t.departures,
        "layoffs": t.layoffs,
        "attrition": t.attrition,
        "key_departures": t.key_departures,
        "net_talent_flow": t.net_talent_flow,
        "talent_drain_ratio": t.talent_drain_ratio,
        "funding_usd": t.funding_usd,
        "funding_rounds": t.funding_rounds,
        "model_releases": t.model_releases,
    }


def affected_rows(timeline: CompanyTimeline, windows: tuple[int, ...], changed_days) -> set[tuple[int, int]]:
    """(window, day) of every stored row whose window contains one of ``changed_days``.

    Rows exist only on days with events; a change on day e touches rows e … e+W−1.
    """
    rows: set[tuple[int, int]] = set()
    days_between = timeline.series.days_between
    for e in changed_days:
        for w in windows:
            for d in days_between(e, e + w - 1):
                rows.add((w, d))
    return rows

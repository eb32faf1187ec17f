"""SPEC §3 indicator rows: which rows an event touches, and their values."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import date

from processors.facts import MICROS
from processors.timeline import CompanyTimeline

_ISO: dict[int, str] = {}  # day -> "YYYY-MM-DD": every row of a day carries the same string


def iso_date(day: int) -> str:
    text = _ISO.get(day)
    if text is None:
        text = _ISO[day] = date.fromordinal(day).isoformat()
    return text


def indicator_rows(timeline: CompanyTimeline, window_days: int, days: list[int]) -> list[dict]:
    """The ``indicators`` rows (the shape of ``streams.records.IndicatorRecord``) of one window on sorted ``days``."""
    company = timeline.company_id
    rows = []
    for day, (h, d, k, f, r, m, l) in zip(days, timeline.totals_on(window_days, days)):
        rows.append({
            "company_id": company,
            "window_days": window_days,
            "window_end": iso_date(day),
            "hires": h,
            "departures": d,
            "layoffs": l,
            "attrition": d - l,
            "key_departures": k,
            "net_talent_flow": h - d,
            "talent_drain_ratio": (d - l) / max(h, 1),
            "funding_usd": f / MICROS,
            "funding_rounds": r,
            "model_releases": m,
        })
    return rows


def affected_days(timeline: CompanyTimeline, window_days: int, changed_days) -> list[int]:
    """Sorted days of every stored row of this window whose window contains one of ``changed_days``.

    Rows exist only on days with events; a change on day e touches rows e … e+W−1, so the changed days
    are merged into intervals first and each interval is cut out of the sorted days once.
    """
    days = timeline.days
    out: list[int] = []
    first = last = None
    for e in sorted(changed_days):
        if last is not None and e <= last + 1:
            last = e + window_days - 1
            continue
        if last is not None:
            out.extend(days[bisect_left(days, first) : bisect_right(days, last)])
        first, last = e, e + window_days - 1
    if last is not None:
        out.extend(days[bisect_left(days, first) : bisect_right(days, last)])
    return out

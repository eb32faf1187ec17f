"""A straightforward batch recomputation of SPEC §3 and §4, written separately from the engine.

Brute force on purpose: every indicator is a plain sum over the events in its window, and every
alert rule is evaluated on every single day. Tests compare the streaming pipeline against it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import date, timedelta

from processors.rules import RuleSet
from streams.companies import normalizer
from streams.events import InvalidEvent, parse_event

KEY = {"principal", "director", "vp", "c_level", "founder"}
RANK = {"info": 0, "warning": 1, "critical": 2}


def accepted_events(backfills: list[list[bytes]], lateness_days: float = 7.0):
    """Replay each backfill sorted by occurred_at; return (accepted, late, dead, duplicates)."""
    seen: set[str] = set()
    greatest = None
    accepted, late, dead, dups = [], [], [], 0
    lateness = timedelta(days=lateness_days)
    for lines in backfills:
        good = []
        for line in lines:
            if not line.strip():
                continue
            try:
                good.append(parse_event(line))
            except InvalidEvent as exc:
                dead.append(str(exc))
        good.sort(key=lambda e: e.occurred_at)
        for e in good:
            if e.event_id in seen:
                dups += 1
                continue
            seen.add(e.event_id)
            if greatest is not None and e.occurred_at < greatest - lateness:
                late.append(e)
                continue
            accepted.append(e)
            if greatest is None or e.occurred_at > greatest:
                greatest = e.occurred_at
    return accepted, late, dead, dups


def _flat(events):
    cid = normalizer().company_id
    out = []
    for e in events:
        other = getattr(e, "to_company", None) or getattr(e, "from_company", None)
        out.append({
            "id": e.event_id, "kind": e.kind, "company": cid(e.company), "day": e.occurred_at.date(),
            "to": cid(e.to_company) if getattr(e, "to_company", None) else None,
            "n": getattr(e, "headcount", 1), "key": e.kind == "departure" and e.seniority in KEY,
            "usd": getattr(e, "amount_usd", 0.0), "other": other,
        })
    return out


def _window(events, company, start: date, end: date):
    s = {"hires": 0, "departures": 0, "key_departures": 0, "funding_usd": 0.0, "funding_rounds": 0, "model_releases": 0}
    for e in events:
        if e["company"] != company or not (start <= e["day"] <= end):
            continue
        if e["kind"] == "hiring":
            s["hires"] += e["n"]
        elif e["kind"] == "departure":
            s["departures"] += e["n"]
            s["key_departures"] += e["n"] if e["key"] else 0
        elif e["kind"] == "funding":
            s["funding_usd"] += e["usd"]
            s["funding_rounds"] += 1
        else:
            s["model_releases"] += 1
    s["net_talent_flow"] = s["hires"] - s["departures"]
    s["talent_drain_ratio"] = s["departures"] / max(s["hires"], 1)
    return s


def indicators(events, windows=(30, 90)) -> dict[tuple, dict]:
    flat = _flat(events)
    by_company = defaultdict(list)
    for e in flat:
        by_company[e["company"]].append(e)
    rows = {}
    for company, evs in by_company.items():
        for day in {e["day"] for e in evs}:
            for w in windows:
                rows[(company, w, day.isoformat())] = _window(evs, company, day - timedelta(days=w - 1), day)
    return rows


def alerts(events, rules: RuleSet, stream_day: date) -> list[dict]:
    """Every rule on every day from the company's first event day to stream_day."""
    flat = _flat(events)
    by_company = defaultdict(list)
    for e in flat:
        by_company[e["company"]].append(e)
    td, tp, fs, rb, hs = rules.talent_drain, rules.talent_poaching, rules.funding_surge, rules.release_burst, rules.hiring_spree
    out = []

    def level(rule, s):
        if rule == "talent_drain":
            if s["departures"] >= td.min_departures and s["talent_drain_ratio"] >= td.min_ratio:
                return "critical" if (s["talent_drain_ratio"] >= td.critical_ratio
                                      or s["key_departures"] >= td.critical_key_departures) else "warning"
        elif rule == "funding_surge":
            if s["funding_usd"] >= fs.min_usd:
                return "critical" if s["funding_usd"] >= fs.critical_usd else "warning"
        elif rule == "release_burst":
            if s["model_releases"] >= rb.min_releases:
                return rb.severity
        elif rule == "hiring_spree":
            if s["hires"] >= hs.min_hires and s["hires"] >= hs.min_hires_per_departure * max(s["departures"], 1):
                return hs.severity
        return None

    keys = ("hires", "departures", "key_departures", "funding_usd", "funding_rounds", "model_releases")
    for company, evs in by_company.items():
        # per day (as an ordinal) the plain sums of that day's events; windows add up W such days
        per_day: dict[int, dict] = {}
        for e in evs:
            d = per_day.setdefault(e["day"].toordinal(), {k: 0 for k in keys} | {"to": defaultdict(int)})
            if e["kind"] == "hiring":
                d["hires"] += e["n"]
            elif e["kind"] == "departure":
                d["departures"] += e["n"]
                d["key_departures"] += e["n"] if e["key"] else 0
                if e["to"]:
                    d["to"][e["to"]] += e["n"]
            elif e["kind"] == "funding":
                d["funding_usd"] += e["usd"]
                d["funding_rounds"] += 1
            else:
                d["model_releases"] += 1
        event_days = sorted(per_day)
        first, last = event_days[0], stream_day.toordinal()
        series = [(r, w, None) for r, w, on in [
            ("talent_drain", td.window_days, td.enabled), ("funding_surge", fs.window_days, fs.enabled),
            ("release_burst", rb.window_days, rb.enabled), ("hiring_spree", hs.window_days, hs.enabled)] if on]
        if tp.enabled:
            series += [("talent_poaching", tp.window_days, cp) for cp in sorted({e["to"] for e in evs if e["kind"] == "departure" and e["to"] and e["to"] != company})]
        for rule, w, cp in series:
            current = None
            day = first
            while day <= last:
                window_days = [per_day[d] for d in range(day - w + 1, day + 1) if d in per_day]
                if current is None and not window_days:
                    # nothing in the window and nothing firing: jump to the next day with an event
                    i = bisect_right(event_days, day)
                    if i == len(event_days):
                        break
                    day = event_days[i]
                    continue
                if rule == "talent_poaching":
                    n = sum(d["to"].get(cp, 0) for d in window_days)
                    sev = tp.severity if n >= tp.min_departures else None
                else:
                    s = {k: sum(d[k] for d in window_days) for k in keys}
                    s["talent_drain_ratio"] = s["departures"] / max(s["hires"], 1)
                    sev = level(rule, s)
                iso = date.fromordinal(day).isoformat()
                if current is None and sev is not None:
                    current = {"rule": rule, "company_id": company, "counterparty_id": cp, "severity": sev,
                               "starts_at": iso, "ends_at": None}
                elif current is not None and sev is None:
                    current["ends_at"] = iso
                    out.append(current)
                    current = None
                elif current is not None and RANK[sev] > RANK[current["severity"]]:
                    current["severity"] = sev
                day += 1
            if current is not None:
                out.append(current)
    return out

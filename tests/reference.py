"""A straightforward batch recomputation of SPEC §3 and §4, written separately from the engine.

Brute force on purpose: every indicator is a plain sum over the events in its window, every alert
rule's condition is evaluated on every single day, and instances come from a small state machine
that walks those days one by one (``hysteresis``). Tests compare the streaming pipeline against it.
"""

from __future__ import annotations

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
        reason = getattr(e, "reason", None) if e.kind == "departure" else None
        out.append({
            "id": e.event_id, "kind": e.kind, "company": cid(e.company), "day": e.occurred_at.date(),
            "to": cid(e.to_company) if getattr(e, "to_company", None) else None,
            "n": getattr(e, "headcount", 1), "layoff": reason == "layoff",
            "key": e.kind == "departure" and reason != "layoff" and e.seniority in KEY,
            "usd": getattr(e, "amount_usd", 0.0),
        })
    return out


KEYS = ("hires", "departures", "layoffs", "key_departures", "funding_usd", "funding_rounds", "model_releases")


def _window(events, company, start: date, end: date):
    s = dict.fromkeys(KEYS, 0)
    s["funding_usd"] = 0.0
    for e in events:
        if e["company"] != company or not (start <= e["day"] <= end):
            continue
        if e["kind"] == "hiring":
            s["hires"] += e["n"]
        elif e["kind"] == "departure":
            s["departures"] += e["n"]
            s["layoffs"] += e["n"] if e["layoff"] else 0
            s["key_departures"] += e["n"] if e["key"] else 0
        elif e["kind"] == "funding":
            s["funding_usd"] += e["usd"]
            s["funding_rounds"] += 1
        else:
            s["model_releases"] += 1
    return _derived(s)


def _derived(s: dict) -> dict:
    s["attrition"] = s["departures"] - s["layoffs"]
    s["net_talent_flow"] = s["hires"] - s["departures"]
    s["talent_drain_ratio"] = s["attrition"] / max(s["hires"], 1)
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


def level(rules: RuleSet, rule: str, s: dict):
    """The severity SPEC §4 gives a rule's condition on one window's sums, or None when it does not hold."""
    td, wr, fs, rb, hs = rules.talent_drain, rules.workforce_reduction, rules.funding_surge, rules.release_burst, rules.hiring_spree
    if rule == "talent_drain":
        if s["attrition"] >= td.min_attrition and s["talent_drain_ratio"] >= td.min_ratio:
            return "critical" if (s["talent_drain_ratio"] >= td.critical_ratio
                                  or s["key_departures"] >= td.critical_key_departures) else "warning"
    elif rule == "workforce_reduction":
        if s["layoffs"] >= wr.min_layoffs:
            return "critical" if s["layoffs"] >= wr.critical_layoffs else "warning"
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


def hysteresis(levels: list, for_days: int, keep_days: int) -> list[tuple[int, int | None, str]]:
    """Instances from one level per day (None = the condition fails), as (start index, end index or None,
    severity): a small state machine, day by day, exactly as SPEC §4 words it."""
    out, current = [], None
    for i, sev in enumerate(levels):
        if current is None:
            if i >= for_days - 1 and all(levels[j] is not None for j in range(i - for_days + 1, i + 1)):
                current = [i, None, sev]
        else:
            if sev is not None and RANK[sev] > RANK[current[2]]:
                current[2] = sev
            if i >= keep_days and all(levels[j] is None for j in range(i - keep_days, i + 1)):
                current[1] = i
                out.append(tuple(current))
                current = None
    if current is not None:
        out.append(tuple(current))
    return out


def alerts(events, rules: RuleSet, stream_day: date) -> list[dict]:
    """Every rule on every day from the company's first event day to stream_day."""
    flat = _flat(events)
    by_company = defaultdict(list)
    for e in flat:
        by_company[e["company"]].append(e)
    tp = rules.talent_poaching
    out = []
    for company, evs in by_company.items():
        # per day (as an ordinal) the plain sums of that day's events; windows add up W such days
        per_day: dict[int, dict] = {}
        for e in evs:
            d = per_day.setdefault(e["day"].toordinal(), dict.fromkeys(KEYS, 0) | {"to": defaultdict(int)})
            if e["kind"] == "hiring":
                d["hires"] += e["n"]
            elif e["kind"] == "departure":
                d["departures"] += e["n"]
                d["layoffs"] += e["n"] if e["layoff"] else 0
                d["key_departures"] += e["n"] if e["key"] else 0
                if e["to"] and not e["layoff"]:
                    d["to"][e["to"]] += e["n"]
            elif e["kind"] == "funding":
                d["funding_usd"] += e["usd"]
                d["funding_rounds"] += 1
            else:
                d["model_releases"] += 1
        first, last = min(per_day), stream_day.toordinal()
        names = ("talent_drain", "workforce_reduction", "funding_surge", "release_burst", "hiring_spree")
        series = [(r, None) for r in names if getattr(rules, r).enabled]
        if tp.enabled:
            pairs = sorted({cp for d in per_day.values() for cp in d["to"] if cp != company})
            series += [("talent_poaching", cp) for cp in pairs]
        # running totals per day from `first` on: a window's sum is the difference of two of them
        span = range(first, last + 1)
        running = {k: [0] for k in KEYS}
        to_running: dict[str, list[int]] = defaultdict(lambda: [0] * (len(span) + 1))
        for i, day in enumerate(span):
            d = per_day.get(day)
            for k in KEYS:
                running[k].append(running[k][-1] + (d[k] if d else 0))
        for cp in {cp for d in per_day.values() for cp in d["to"]}:
            acc = to_running[cp]
            for i, day in enumerate(span):
                acc[i + 1] = acc[i] + (per_day[day]["to"].get(cp, 0) if day in per_day else 0)

        def window_sum(acc: list, day: int, w: int):
            hi, lo = day - first + 1, max(day - w + 1 - first, 0)
            return acc[hi] - acc[lo]

        for rule, cp in series:
            spec = getattr(rules, rule)
            w = spec.window_days
            if cp is not None:  # a pair is evaluated from its own first day
                days = range(min(d for d, v in per_day.items() if v["to"].get(cp)), last + 1)
            else:
                days = span
            levels = []
            for day in days:
                if cp is not None:
                    n = window_sum(to_running[cp], day, w)
                    levels.append(tp.severity if n >= tp.min_departures else None)
                else:
                    levels.append(level(rules, rule, _derived({k: window_sum(running[k], day, w) for k in KEYS})))
            for start, end, severity in hysteresis(levels, spec.for_days, spec.keep_firing_for_days):
                out.append({"rule": rule, "company_id": company, "counterparty_id": cp, "severity": severity,
                            "starts_at": date.fromordinal(days[start]).isoformat(),
                            "ends_at": date.fromordinal(days[end]).isoformat() if end is not None else None})
    return out

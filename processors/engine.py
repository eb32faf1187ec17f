"""The pure core: accepted facts in, indicator rows and alert state changes out. No Faust, no Kafka.

One ``Engine`` holds the companies of one partition (or of everything, in tests and reference
runs). ``add`` facts, ``advance`` stream time, then ``flush`` to get what changed.
"""

from __future__ import annotations

import gc
import heapq
from datetime import date
from typing import Collection

from processors.alerts import AlertSeries, Instance, iso_day, iso_time, next_window_change, segments
from processors.facts import Fact
from processors.indicators import affected_days, indicator_rows
from processors.rules import RuleSet
from processors.timeline import CompanyTimeline

class Engine:
    """Indicators and alerts for a set of companies, exact under out-of-order arrival."""

    def __init__(self, rules: RuleSet, windows: tuple[int, ...] = (30, 90)) -> None:
        self.rules = rules
        self.windows = tuple(sorted(windows))
        self.company_rules = rules.company_rules()
        self.timelines: dict[str, CompanyTimeline] = {}
        self.series: dict[str, dict[tuple[str, str | None], AlertSeries]] = {}
        self.stream_day: int | None = None
        self.evaluated_through: dict[str, int] = {}
        self._changed_days: dict[str, set[int]] = {}
        self._dirty_from: dict[str, int] = {}
        self._dirty_pairs: dict[str, set[str]] = {}  # company -> counterparties with facts since its evaluation
        self._pair_due: dict[str, dict[str, int | None]] = {}  # company -> counterparty -> next day it can change
        self._due: list[tuple[int, str]] = []  # (next change day, company)
        self._held: set[str] = set()  # companies with alert series held after a rollback (see ``hold``)
        self.hold_until: int | None = None

    # ---- input -------------------------------------------------------------------------
    def add(self, fact: Fact) -> None:
        c, day = fact.company_id, fact.day
        timeline = self.timelines.get(c)
        if timeline is None:
            timeline = self.timelines[c] = CompanyTimeline(c)
        timeline.add(fact)
        changed = self._changed_days.get(c)
        if changed is None:
            self._changed_days[c] = {day}
        else:
            changed.add(day)
        dirty = self._dirty_from.get(c)
        if dirty is None or day < dirty:
            self._dirty_from[c] = day
        if fact.counterparty_id is not None:
            pairs = self._dirty_pairs.get(c)
            if pairs is None:
                self._dirty_pairs[c] = {fact.counterparty_id}
            else:
                pairs.add(fact.counterparty_id)

    def advance(self, stream_day: int) -> None:
        """Stream time moved (it never moves back)."""
        if self.stream_day is None or stream_day > self.stream_day:
            self.stream_day = stream_day

    def forget_row_changes(self) -> None:
        """Drop pending indicator rows (after a restore: the stored rows are already current)."""
        self._changed_days.clear()

    # ---- output ------------------------------------------------------------------------
    def flush(self, end_of_input: bool = False) -> tuple[list[dict], list[dict]]:
        """Indicator rows changed since the last flush, and alert state changes up to stream time.

        ``end_of_input``: a backfill has ended, so alerts still held after a rollback are compared now.

        The cyclic garbage collector is paused meanwhile: a flush makes no cycles, but the thousands of
        short-lived objects it holds at once would otherwise trigger collections that walk the whole
        process (the sequencer's id set among it) and promote them to the oldest generation."""
        if not gc.isenabled():
            return self._flush(end_of_input)
        gc.disable()
        try:
            return self._flush(end_of_input)
        finally:
            gc.enable()

    def _flush(self, end_of_input: bool) -> tuple[list[dict], list[dict]]:
        touched = list(self._changed_days)
        # alerts first: the rows' days are among the days rules read, so their totals are already at hand
        alerts = self._evaluate_alerts(touched) if self.stream_day is not None else []
        if end_of_input and self.stream_day is not None:
            for company in list(self._held):
                alerts.extend(self._release_held(company, self.stream_day, ended=True))
            self.hold_until = None
        rows = self._indicator_rows()
        for company in touched:
            timeline = self.timelines.get(company)
            if timeline is not None:
                timeline.forget_totals()
        return rows, alerts

    def _indicator_rows(self) -> list[dict]:
        rows = []
        for company, days in self._changed_days.items():
            timeline = self.timelines[company]
            for window in self.windows:
                rows.extend(indicator_rows(timeline, window, affected_days(timeline, window, days)))
        self._changed_days.clear()
        return rows

    def _evaluate_alerts(self, touched: list[str]) -> list[dict]:
        through = self.stream_day
        todo: dict[str, int | None] = {}
        for company, m in self._dirty_from.items():
            if m <= through:
                todo[company] = m
        for company in todo:
            del self._dirty_from[company]
        while self._due and self._due[0][0] <= through:
            _, company = heapq.heappop(self._due)
            todo.setdefault(company, None)
        messages: list[dict] = []
        for company, m in todo.items():
            messages.extend(self._evaluate_company(company, m, through))
            touched.append(company)
        return messages

    def _evaluate_company(self, company: str, m: int | None, through: int) -> list[dict]:
        return self._evaluate_rules(company, m, through) + self._release_held(company, through)

    def _evaluate_rules(self, company: str, m: int | None, through: int) -> list[dict]:
        timeline = self.timelines.get(company)
        if timeline is None:  # published before a rollback, no events yet in the replay
            return []
        days = timeline.days
        if not days:
            return []
        previous = self.evaluated_through.get(company)
        start = days[0] if previous is None else previous + 1
        if m is not None:
            start = min(start, m)
        start = max(start, days[0])
        if start > through:
            return []
        self.evaluated_through[company] = through
        mine = self.series.setdefault(company, {})
        messages: list[dict] = []
        next_days: list[int] = []
        plans: dict[int, WindowPlan] = {}  # shared by the rules with the same window
        for name, rule in self.company_rules:
            series = mine.get((name, None))
            if series is None:
                series = mine[(name, None)] = self._new_series(name, company, None)
            w = rule.window_days
            plan = plans.get(w)
            if plan is None:
                plan = plans[w] = WindowPlan(timeline, start, through, w)
            if not series.skip_quiet(start, through, plan.first_change):
                segs, totals = plan.segments_and_totals()
                level = rule.level
                series.evaluate(start, through, days[0], segs, list(map(level, totals)),
                                lambda d, w=w, level=level: level(timeline.totals_on(w, [d])[0]))
            messages.extend(self._messages(series, timeline, through))
            nxt = series.next_change(through, plan.next_change)
            if nxt is not None:
                next_days.append(nxt)
        poaching = self.rules.talent_poaching
        if poaching.enabled:
            messages.extend(self._evaluate_pairs(company, timeline, mine, start, through, next_days,
                                                 self._dirty_pairs.pop(company, ())))
        if next_days:
            heapq.heappush(self._due, (min(next_days), company))
        return messages

    def _evaluate_pairs(self, company: str, timeline: CompanyTimeline, mine: dict, start: int, through: int,
                        next_days: list[int], dirty: Collection[str]) -> list[dict]:
        """talent_poaching, one series per counterparty, read from that pair's own days. A company may have
        hundreds of counterparties and a batch brings facts for a few: a pair without new facts (not in
        ``dirty``) is read on from where its series was last evaluated, as the days before are as they
        were, and is not visited at all before the next day it can change (``_pair_due``) unless it
        has something to announce."""
        poaching = self.rules.talent_poaching
        window, level = poaching.window_days, poaching.pair_level
        messages: list[dict] = []
        dues = self._pair_due.setdefault(company, {})
        for counterparty, pair in timeline.poaching.items():
            key = ("talent_poaching", counterparty)
            series = mine.get(key)
            if series is None:
                series = mine[key] = self._new_series("talent_poaching", company, counterparty)
            fresh = counterparty in dirty
            if not fresh and series.settled and counterparty in dues:
                due = dues[counterparty]
                if due is None:
                    continue
                if due > through:
                    next_days.append(due)
                    continue
            days = pair.days
            pair_start = max(start, days[0])
            if series.evaluated is not None and (not fresh or series.evaluated < pair_start):
                pair_start = series.evaluated + 1  # on from a state that still holds (skipped visits leave it behind)
            # a pair changes only on its own days, when they leave the window, and K days after that
            change = next_window_change(days, pair_start - 1, window)
            if pair_start <= through and days[-1] + window + poaching.keep_firing_for_days >= pair_start:
                if not series.skip_quiet(pair_start, through, change):
                    segs = segments(days, pair_start, through, window)
                    series.evaluate(pair_start, through, days[0], segs,
                                    list(map(level, pair.window_departures(window, segs))),
                                    lambda d, pair=pair: level(pair.departures(window, d)))
                messages.extend(self._messages(series, timeline, through))
            if change is not None and change <= through:
                change = next_window_change(days, through, window)
            nxt = dues[counterparty] = series.next_change(through, change)
            if nxt is not None:
                next_days.append(nxt)
        return messages

    def _new_series(self, rule_name: str, company: str, counterparty: str | None) -> AlertSeries:
        rule = getattr(self.rules, rule_name)
        series = AlertSeries(rule_name, company, counterparty, rule.window_days, rule.for_days, rule.keep_firing_for_days)
        self._hold_series(company, series)
        return series

    def _release_held(self, company: str, through: int, ended: bool = False) -> list[dict]:
        """Series held after a rollback (see ``hold``) whose hold has ended (or whose
        backfill has, ``ended``) but which the evaluation did not touch (no change day since): compare
        them now, or they would stay as the interrupted run left them."""
        if company not in self._held:
            return []
        timeline = self.timelines.get(company)
        messages: list[dict] = []
        still_held = False
        for series in self.series[company].values():
            if series.provisional_until is None:
                continue
            if ended:
                series.provisional_until = None
            elif through < series.provisional_until:
                still_held = True
                continue
            messages.extend(self._messages(series, timeline, through))
        if not still_held:
            self._held.discard(company)
        return messages

    def _messages(self, series: AlertSeries, timeline: CompanyTimeline | None, through: int) -> list[dict]:
        if series.settled:
            return []
        return [
            alert_message(series, getattr(self.rules, series.rule), change, inst, previous, timeline, self.stream_day)
            for change, inst, previous in series.changes(through)
        ]

    # ---- durable state -----------------------------------------------------------------
    def restore_published(self, rule: str, company_id: str, counterparty_id: str | None,
                          start: int, severity: str, end: int | None) -> None:
        """Remember an alert instance that was already published (from the sink's ``alerts`` table)."""
        mine = self.series.setdefault(company_id, {})
        key = (rule, counterparty_id)
        series = mine.get(key)
        if series is None:
            series = mine[key] = self._new_series(rule, company_id, counterparty_id)
        series.published[start] = (severity, end)
        series.settled = False

    def hold(self, until: int) -> None:
        """After a backfill was rolled back and is being replayed: announce no alert change until stream
        time reaches ``until`` (how far the interrupted runs had got) or the backfill ends
        (``flush(end_of_input=True)``); then only what differs from what was published.

        Every series is held, also those the replay creates: an instance an interrupted run announced and
        then retracted is in no table, and a replay passing through it again must not announce it twice."""
        self.hold_until = until if self.hold_until is None else max(self.hold_until, until)
        for company, mine in self.series.items():
            for series in mine.values():
                series.settled = False  # a rollback may have rewritten what was published
                self._hold_series(company, series)

    def _hold_series(self, company: str, series: AlertSeries) -> None:
        until = self.hold_until
        if until is None or (self.stream_day is not None and self.stream_day >= until):
            return
        series.provisional_until = max(series.provisional_until or until, until)
        if company not in self._held:
            self._held.add(company)
            heapq.heappush(self._due, (until, company))


class WindowPlan:
    """What the rules with one window share when a company is evaluated over days start … through: the
    days on which the window changes, the totals on them (read only if some rule needs them), and the
    window's first change from ``start`` on and after ``through``."""

    __slots__ = ("timeline", "start", "through", "window", "first_change", "next_change", "_read")

    def __init__(self, timeline: CompanyTimeline, start: int, through: int, window: int) -> None:
        self.timeline, self.start, self.through, self.window = timeline, start, through, window
        self.first_change = next_window_change(timeline.days, start - 1, window)
        changes = self.first_change is not None and self.first_change <= through
        self.next_change = next_window_change(timeline.days, through, window) if changes else self.first_change
        self._read: tuple[list[int], list] | None = None

    def segments_and_totals(self) -> tuple[list[int], list]:
        if self._read is None:
            segs = segments(self.timeline.days, self.start, self.through, self.window)
            self._read = (segs, self.timeline.totals_on(self.window, segs))
        return self._read


def alert_message(
    series: AlertSeries, rule, change: str, inst: Instance | None, previous: int | None,
    timeline: CompanyTimeline | None, stream_day: int | None,
) -> dict:
    """An alert state change in Prometheus Alertmanager's shape, plus ai-signals' own fields."""
    labels = {"alertname": series.rule, "company": series.company_id}
    start = inst.start if inst is not None else previous
    name = (timeline.name if timeline is not None else "") or series.company_id
    if inst is not None:
        # each change is rendered as the state it announces: a "firing" sent together with its own
        # resolve (one batch) still says firing, at the severity it fired with
        labels["severity"] = inst.raises[0][1] if change == "firing" else inst.severity
        status = "firing" if inst.end is None or change in ("firing", "severity_raised") else "resolved"
        ends = inst.end if status == "resolved" else None
        w = series.window_days
        if series.counterparty_id:
            counterparty = timeline.counterparty_names.get(series.counterparty_id, series.counterparty_id)
            summary = rule.summary(name, counterparty, timeline.pair_departures(series.counterparty_id, w, inst.start))
        else:
            summary = rule.summary(name, timeline.totals(w, inst.start))
        ids, count = timeline.event_ids(w, inst.start, rule.evidence, series.counterparty_id)
        evidence = {"event_ids": ids, "count": count}
    else:
        status, ends, evidence = "resolved", previous, None
        merged = next((i for i in series.instances if i.start < previous and (i.end is None or previous < i.end)), None)
        summary = (f"merged into the alert that started on {iso_day(merged.start)}: an out-of-order event closed the gap"
                   if merged is not None else "retracted: an out-of-order event showed it never held")
        labels["severity"] = series.retracted.pop(previous, "info")
    if series.counterparty_id:
        labels["counterparty"] = series.counterparty_id
    return {
        "fingerprint": series.fingerprint,
        "status": status,
        "change": change,
        "labels": labels,
        "annotations": {"summary": summary, "rule": series.rule, "company": name},
        "startsAt": iso_time(start),
        "endsAt": iso_time(ends),
        "rule": series.rule,
        "company_id": series.company_id,
        "counterparty_id": series.counterparty_id,
        "severity": labels["severity"],
        "starts_at": iso_day(start),
        "ends_at": iso_day(ends) if ends is not None else None,
        "previous_starts_at": iso_day(previous) if previous is not None else None,
        "evidence": evidence,
        "stream_time": iso_day(stream_day) if stream_day is not None else None,
    }


def day_of(iso: str) -> int:
    return date.fromisoformat(iso).toordinal()

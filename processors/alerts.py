"""Alert instances of one rule for one company (or company/counterparty pair), day by day.

SPEC §4 hysteresis: an instance fires on day s when the condition has held on each of the F days
s−F+1 … s and none is firing; it resolves on the first day e on which the condition has failed on
each of the K+1 days e−K … e. Between days where a bucket enters or leaves the window nothing
changes, so only those change days are read. Re-evaluation from any day ``m`` (an out-of-order
event) rewinds the instances to their state at the end of day ``m − 1`` and replays forward, which
is what makes corrections exact: a late event can end a K-day tail, split an instance or merge two.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from processors.rules import SEVERITY_RANK, Severity

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end"


def fingerprint(rule: str, company_id: str, counterparty_id: str | None) -> str:
    """Stable hash of (rule, company_id, counterparty_id)."""
    text = f"{rule}\x1f{company_id}\x1f{counterparty_id or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(slots=True)
class Instance:
    start: int
    end: int | None  # resolve day, None while firing
    severity: Severity
    raises: list[tuple[int, Severity]]  # (day, severity) each time the severity went up, first = start


@dataclass(slots=True)
class AlertSeries:
    """Instances of one (rule, company, counterparty), and what has been published of them."""

    rule: str
    company_id: str
    counterparty_id: str | None
    window_days: int
    for_days: int = 1  # F: the condition holds F days in a row before an instance fires
    keep_days: int = 0  # K: a firing instance resolves on the (K+1)-th failing day in a row
    instances: list[Instance] = field(default_factory=list)
    published: dict[int, tuple[Severity, int | None]] = field(default_factory=dict)  # start -> (severity, end)
    fingerprint: str = ""
    # after an interrupted backfill is rolled back, what was published may be ahead of the replay that
    # finishes it: until stream time reaches this day (or the backfill ends), it is not contradicted
    provisional_until: int | None = None
    retracted: dict[int, Severity] = field(default_factory=dict)  # start -> severity it was published with, until rendered
    # the condition's current run, as of day ``evaluated``: whether it holds, and since which day
    evaluated: int | None = None
    holds: bool = False
    since: int = 0
    # ``changes`` has nothing to say: instances and ``published`` agree and neither was touched since it
    # last compared them (whoever edits ``published`` or the hold sets it back to False)
    settled: bool = False

    def __post_init__(self) -> None:
        self.fingerprint = fingerprint(self.rule, self.company_id, self.counterparty_id)

    def _rewind(self, m: int, first_day: int, severity_on: Callable[[int], Severity | None]) -> Instance | None:
        """Bring the state back to the end of day m − 1; return the instance firing then, if any.

        Days before m are unchanged (an event on day m changes windows from m on), so what was decided
        on them stands: instances that started before m stay, one that ended on or after m is reopened.
        The condition's run at m − 1 is read back from the days before m, as far as F and K can see."""
        if self.evaluated is not None and m == self.evaluated + 1:
            last = self.instances[-1] if self.instances else None
            return last if last is not None and last.end is None else None
        while self.instances and self.instances[-1].start >= m:
            self.instances.pop()
            self.settled = False
        current = None
        if self.instances:
            last = self.instances[-1]
            if last.end is None or last.end >= m:
                if last.end is not None or last.raises[-1][0] >= m:
                    self.settled = False  # reopened, or a severity raise undone
                last.end = None
                last.raises = [r for r in last.raises if r[0] < m]
                last.severity = max((r[1] for r in last.raises), key=SEVERITY_RANK.__getitem__)
                current = last
        self.holds, self.since = False, m
        if m - 1 >= first_day:
            holds = severity_on(m - 1) is not None
            # only a failing run under a firing instance (≤ K days) or a holding run with none (< F days) matters
            if current is not None:
                reach = 0 if holds else self.keep_days
            else:
                reach = self.for_days - 1 if holds else 0
            since = m - 1
            while since > first_day and since > m - 1 - reach and (severity_on(since - 1) is not None) == holds:
                since -= 1
            self.holds, self.since = holds, since
        return current

    def evaluate(
        self,
        m: int,
        through: int,
        first_day: int,
        segments: list[int],
        levels: list[Severity | None],
        severity_on: Callable[[int], Severity | None],
    ) -> None:
        """Re-evaluate days m … through, given the condition's level on each segment's first day.

        ``segments`` (see ``segments``) are the days from m on where a bucket enters or leaves the window:
        the condition is constant from one to the next, so within a segment an instance fires on the day
        its holding run reaches F days, and resolves on the day its failing run reaches K + 1 days.
        ``severity_on`` reads any earlier day, for the rewind; ``first_day`` is the series' first day with data.

        Evidence is not kept here: an instance's evidence is the window ending on its start day, which
        only an event on or before that day can change, and such an event rewinds the instance anyway.
        So it is read from the timeline when a change is rendered."""
        current = self._rewind(m, first_day, severity_on)
        holds, since = self.holds, self.since
        if levels.count(levels[0]) == len(levels):
            # one level throughout: read as one segment (neighbours with equal levels never differ in outcome)
            segments, levels = segments[:1], levels[:1]
        fire_after, resolve_after = self.for_days - 1, self.keep_days
        last = len(segments) - 1
        for i, a in enumerate(segments):
            b = segments[i + 1] if i < last else through + 1  # the segment is days a … b − 1
            level = levels[i]
            if (level is not None) != holds:
                holds, since = level is not None, a
            if current is not None:
                if holds:
                    if level != current.severity and SEVERITY_RANK[level] > SEVERITY_RANK[current.severity]:
                        current.severity = level
                        self.settled = False
                        current.raises.append((a, level))
                else:
                    end = max(since + resolve_after, a)
                    if end < b:
                        current.end = end
                        self.settled = False
                        current = None
            elif holds:
                start = max(since + fire_after, a)
                if start < b:
                    current = Instance(start, None, level, [(start, level)])
                    self.instances.append(current)
                    self.settled = False
        self.evaluated, self.holds, self.since = through, holds, since

    def skip_quiet(self, m: int, through: int, window_change: int | None) -> bool:
        """Move ``evaluated`` to ``through`` without reading a day, when evaluating days m … through could
        change nothing else: m follows the last evaluation, the window's first change from m on
        (``window_change``) is later, and no run under way ends in a fire or resolve by then."""
        if self.evaluated is None or m != self.evaluated + 1 or (window_change is not None and window_change <= through):
            return False
        due = self.pending()
        if due is not None and due <= through:
            return False
        self.evaluated = through
        return True

    def pending(self) -> int | None:
        """The day a run under way will fire or resolve an instance, if it goes on."""
        if self.evaluated is None:
            return None
        firing = bool(self.instances) and self.instances[-1].end is None
        if firing and not self.holds:
            return self.since + self.keep_days
        if not firing and self.holds:
            return self.since + self.for_days - 1
        return None

    def next_change(self, after: int, window_change: int | None) -> int | None:
        """The first day after ``after`` on which this series' window changes (``window_change``, see
        ``next_window_change``), or a run under way ends in a fire or resolve."""
        due = self.pending()
        if due is not None and due > after and (window_change is None or due < window_change):
            return due
        return window_change

    def changes(self, through: int | None = None) -> list[tuple[str, Instance | None, int | None]]:
        """State changes since the last call, as (change, instance, previous start), and mark them published.

        ``firing``, ``severity_raised``, ``resolved``; ``corrected`` when an out-of-order event
        changed a published instance's start, lowered its severity, reopened it, or changed the severity
        of one that had resolved and still has (it is announced as resolved, not as firing); ``retracted``
        when a published instance no longer holds at all. While stream time (``through``) is before
        ``provisional_until`` (a replay after a rollback, see ``Engine.hold``), nothing is announced: what
        was published stands until then, and is then compared with the replay's state.
        """
        held = self.provisional_until is not None and through is not None and through < self.provisional_until
        if held:
            return []
        self.provisional_until = None
        out: list[tuple[str, Instance | None, int | None]] = []
        now = {inst.start: inst for inst in self.instances}
        gone = [start for start in self.published if start not in now]
        for inst in self.instances:
            old = self.published.get(inst.start)
            if old is not None:
                severity, end = old
                if severity == inst.severity and end == inst.end:
                    continue
                if inst.end is not None and end is None and severity == inst.severity:
                    out.append(("resolved", inst, None))
                elif end is None and inst.end is None and SEVERITY_RANK[inst.severity] > SEVERITY_RANK[severity]:
                    out.append(("severity_raised", inst, None))
                elif end is None and inst.end is not None and SEVERITY_RANK[inst.severity] > SEVERITY_RANK[severity]:
                    out.append(("severity_raised", inst, None))
                    out.append(("resolved", inst, None))
                else:
                    out.append(("corrected", inst, None))
            else:
                # a new start: either a correction of an overlapping published instance, or a new one
                replaced = None
                for start in gone:
                    _, end = self.published[start]
                    if (end is None or inst.start < end) and (inst.end is None or start < inst.end):
                        replaced = start
                        break
                if replaced is not None:
                    gone.remove(replaced)
                    del self.published[replaced]
                    out.append(("corrected", inst, replaced))
                else:
                    out.append(("firing", inst, None))
                    if inst.severity != inst.raises[0][1]:
                        out.append(("severity_raised", inst, None))
                    if inst.end is not None:
                        out.append(("resolved", inst, None))
            self.published[inst.start] = (inst.severity, inst.end)
        for start in gone:
            self.retracted[start] = self.published.pop(start)[0]
            out.append(("retracted", None, start))
        self.settled = True
        return out


def segments(days, m: int, through: int, window_days: int) -> list[int]:
    """Days m … through on which the window's contents change (a day with data enters it, or leaves it
    W days later), and m itself: the condition is read once per segment they start."""
    found = set(days[bisect_left(days, m) : bisect_right(days, through)])
    found.update(map(window_days.__add__, days[bisect_left(days, m - window_days) : bisect_right(days, through - window_days)]))
    found.add(m)
    return sorted(found)


def next_window_change(days, after: int, window_days: int) -> int | None:
    """The first day after ``after`` on which a day with data enters or leaves the window."""
    i = bisect_left(days, after - window_days + 1)
    if i == len(days):
        return None
    if days[i] > after:
        return days[i]
    j = bisect_right(days, after, i)
    leaves = days[i] + window_days
    return leaves if j == len(days) else min(leaves, days[j])


def change_id(alert: dict) -> str:
    """Names one announced alert state change: the instance, the change and the state it announces
    (severity, status, end). An instance resolved, reopened by an out-of-order event and resolved on
    another day announces two "resolved" changes; the end tells them apart."""
    key = "\x1f".join(str(alert.get(k) or "") for k in ("fingerprint", "starts_at", "change", "severity", "status", "ends_at"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def iso_day(day: int) -> str:
    return date.fromordinal(day).isoformat()


def iso_time(day: int | None) -> str:
    return ZERO_TIME if day is None else f"{iso_day(day)}T00:00:00Z"


def alert_matches(alert: dict, rules=(), severities=(), companies=()) -> bool:
    """Subscription filters: empty means any; a company matches as the company or the counterparty."""
    return ((not rules or alert["rule"] in rules)
            and (not severities or alert["severity"] in severities)
            and (not companies or alert["company_id"] in companies or alert.get("counterparty_id") in companies))

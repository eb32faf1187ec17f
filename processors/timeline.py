"""Per-company daily buckets with prefix sums: any window's totals in O(log n), exact integers."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from processors.facts import DEPARTURE, FUNDING, HIRING, MICROS, MODEL_RELEASE, Fact

# bucket slots: hires, departures, key departures, funding (micro-USD), rounds, releases, layoffs
H, D, K, F, R, M, L = range(7)
ZERO = (0, 0, 0, 0, 0, 0, 0)


@dataclass(slots=True, frozen=True)
class WindowTotals:
    """SPEC §3 indicators of one company over one window."""

    hires: int
    departures: int  # every reason
    key_departures: int  # senior departures, layoffs left out
    funding_micro: int
    funding_rounds: int
    model_releases: int
    layoffs: int  # departures with reason layoff

    @property
    def attrition(self) -> int:
        """People who left for any reason but a layoff (unknown included)."""
        return self.departures - self.layoffs

    @property
    def net_talent_flow(self) -> int:
        return self.hires - self.departures

    @property
    def talent_drain_ratio(self) -> float:
        return self.attrition / max(self.hires, 1)

    @property
    def funding_usd(self) -> float:
        return self.funding_micro / MICROS


class SortedSeries:
    """Sorted days, each with a tuple of integer sums, and prefix sums over them."""

    __slots__ = ("days", "values", "prefix", "_dirty_from")

    def __init__(self) -> None:
        self.days: list[int] = []
        self.values: dict[int, list[int]] = {}
        self.prefix: list[tuple[int, ...]] = []  # prefix[i] = sum of values of days[:i]
        self._dirty_from: int | None = None  # index from which prefix is stale

    def add(self, day: int, delta: tuple[int, ...]) -> None:
        bucket = self.values.get(day)
        if bucket is None:
            bucket = self.values[day] = [0] * len(delta)
            if not self.days or day > self.days[-1]:
                self.days.append(day)
                index = len(self.days) - 1
            else:
                insort(self.days, day)
                index = bisect_left(self.days, day)
        else:
            index = bisect_left(self.days, day)
        for slot, amount in enumerate(delta):
            bucket[slot] += amount
        if self._dirty_from is None or index < self._dirty_from:
            self._dirty_from = index

    def _refresh(self) -> None:
        start = self._dirty_from
        if start is None:
            return
        prefix = self.prefix
        del prefix[start + 1 :]
        if not prefix:
            prefix.append(tuple(0 for _ in range(len(next(iter(self.values.values()))))))
        running = prefix[start]
        for day in self.days[start:]:
            running = tuple(a + b for a, b in zip(running, self.values[day]))
            prefix.append(running)
        self._dirty_from = None

    def total(self, first_day: int, last_day: int) -> tuple[int, ...] | None:
        """Sums over days in [first_day, last_day], or None when no day has data."""
        if not self.days:
            return None
        self._refresh()
        lo = bisect_left(self.days, first_day)
        hi = bisect_right(self.days, last_day)
        if lo >= hi:
            return None
        a, b = self.prefix[hi], self.prefix[lo]
        if len(a) == 7:
            return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], a[5] - b[5], a[6] - b[6])
        return tuple(x - y for x, y in zip(a, b))

    def days_between(self, first_day: int, last_day: int) -> list[int]:
        return self.days[bisect_left(self.days, first_day) : bisect_right(self.days, last_day)]


@dataclass(slots=True)
class CompanyTimeline:
    """Everything known about one company's accepted events, by day."""

    company_id: str
    name: str = ""  # the display name: the first spelling seen
    series: SortedSeries = field(default_factory=SortedSeries)
    # departures other than layoffs by counterparty: counterparty_id -> series of (headcount,)
    poaching: dict[str, SortedSeries] = field(default_factory=dict)
    counterparty_names: dict[str, str] = field(default_factory=dict)  # counterparty_id -> first spelling seen
    # day -> [(event_id, evidence class, counterparty_id)], for alert evidence
    ids: dict[int, list[tuple[str, int, str | None]]] = field(default_factory=dict)
    # (window, day) -> totals, valid until the next add (rules and rows ask for the same windows)
    _memo: dict[tuple[int, int], "WindowTotals"] = field(default_factory=dict)

    def add(self, fact: Fact) -> None:
        if self._memo:
            self._memo.clear()
        if not self.name and fact.name:
            self.name = fact.name
        n = fact.headcount
        if fact.kind == HIRING:
            delta = (n, 0, 0, 0, 0, 0, 0)
        elif fact.kind == DEPARTURE:
            if fact.layoff:
                delta = (0, n, 0, 0, 0, 0, n)
            else:
                delta = (0, n, n if fact.key else 0, 0, 0, 0, 0)
                if fact.counterparty_id and fact.counterparty_id != fact.company_id:
                    pair = self.poaching.get(fact.counterparty_id)
                    if pair is None:
                        pair = self.poaching[fact.counterparty_id] = SortedSeries()
                        self.counterparty_names[fact.counterparty_id] = fact.counterparty_name or fact.counterparty_id
                    pair.add(fact.day, (n,))
        elif fact.kind == FUNDING:
            delta = (0, 0, 0, fact.amount_micro, 1, 0, 0)
        else:  # MODEL_RELEASE
            delta = (0, 0, 0, 0, 0, 1, 0)
        self.series.add(fact.day, delta)
        evidence_class = LAYOFF if fact.layoff else fact.kind
        self.ids.setdefault(fact.day, []).append((fact.event_id, evidence_class, fact.counterparty_id))

    def totals(self, window_days: int, day: int) -> WindowTotals:
        """Indicators of the window of ``window_days`` ending on ``day`` (inclusive)."""
        key = (window_days, day)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = WindowTotals(*(self.series.total(day - window_days + 1, day) or ZERO))
        return found

    def pair_departures(self, counterparty_id: str, window_days: int, day: int) -> int:
        pair = self.poaching.get(counterparty_id)
        if pair is None:
            return 0
        sums = pair.total(day - window_days + 1, day)
        return sums[0] if sums else 0

    def event_ids(
        self, window_days: int, day: int, kinds: frozenset[int], counterparty_id: str | None = None
    ) -> tuple[list[str], int]:
        """Ids of the events of ``kinds`` in the window ending on ``day`` (first 100, in event-time order) and their count."""
        chosen: list[str] = []
        count = 0
        for d in self.series.days_between(day - window_days + 1, day):
            for event_id, kind, other in self.ids[d]:
                if kind in kinds and (counterparty_id is None or other == counterparty_id):
                    count += 1
                    if len(chosen) < 100:
                        chosen.append(event_id)
        return chosen, count


# evidence classes: the kind codes, with layoffs apart from other departures
LAYOFF = 4
PEOPLE = frozenset({HIRING, DEPARTURE, LAYOFF})
ATTRITION_AND_HIRES = frozenset({HIRING, DEPARTURE})  # departures other than layoffs, and hires
DEPARTURES = frozenset({DEPARTURE})  # departures other than layoffs
LAYOFFS = frozenset({LAYOFF})
FUNDINGS = frozenset({FUNDING})
RELEASES = frozenset({MODEL_RELEASE})

"""Per-company day buckets, one compact array per slot, and window totals read by sliding over them.

A company's state is a sorted array of days with data and, per slot, an ``array('q')`` of that day's
sums; the evidence of a day (its event ids with their classes) is one ``bytes`` string. Window totals
are computed when a flush needs them: a batch of sorted query days is answered by sliding the window
over the buckets, each bucket entering and leaving the running sums once.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left, bisect_right
from typing import NamedTuple

import orjson

from processors.facts import DEPARTURE, FUNDING, HIRING, MICROS, MODEL_RELEASE, Fact

# bucket slots: the seven indicator sums, then the event counts alert evidence reports
H, D, K, F, R, M, L = range(7)  # hires, departures, key departures, funding (micro-USD), rounds, releases, layoffs
N_HIRES, N_ATTRITION, N_LAYOFFS = 7, 8, 9  # hiring events, departures other than layoffs, layoff departures
WIDTH = 10


class WindowTotals(NamedTuple):
    """SPEC §3 indicators of one company over one window (a tuple: cheap to make, read by name)."""

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
        return (self.departures - self.layoffs) / max(self.hires, 1)

    @property
    def funding_usd(self) -> float:
        return self.funding_micro / MICROS


ZERO = WindowTotals(0, 0, 0, 0, 0, 0, 0)
_totals = tuple.__new__  # WindowTotals from a tuple, without the Python-level __new__ of a NamedTuple


def _bump(slots: list, slot: int, index: int, amount: int) -> None:
    """Add to one bucket; a slot whose sums outgrow 64 bits (funding near 10¹³ USD a day) becomes a list."""
    try:
        slots[slot][index] += amount
    except OverflowError:
        slots[slot] = list(slots[slot])
        slots[slot][index] += amount


class PairSeries:
    """One company's departures (layoffs left out) to one counterparty: headcount, events and their ids
    per day (the ids also stand in the company's evidence: kept here too, a poaching alert's evidence
    is read without decoding every departure of the company)."""

    __slots__ = ("days", "heads", "events", "ids")

    def __init__(self) -> None:
        self.days = array("i")
        self.heads = array("q")
        self.events = array("q")
        self.ids: list[bytes] = []  # per day: ``"event_id",`` records in arrival order

    def add(self, day: int, headcount: int, record: bytes) -> None:
        days = self.days
        if days and days[-1] == day:
            i = len(days) - 1
        else:
            i = bisect_left(days, day)
            if i == len(days) or days[i] != day:
                days.insert(i, day)
                self.heads.insert(i, 0)
                self.events.insert(i, 0)
                self.ids.insert(i, b"")
        self.heads[i] += headcount  # at most 10⁷ per event: 64 bits hold any history
        self.events[i] += 1
        self.ids[i] += record

    def event_ids(self, window_days: int, day: int) -> tuple[list[str], int]:
        """Ids of the departures in the window ending on ``day`` (first 100, in event-time order) and their count."""
        lo, hi = bisect_left(self.days, day - window_days + 1), bisect_right(self.days, day)
        chosen: list[str] = []
        for records in self.ids[lo:hi]:
            if len(chosen) >= 100:
                break
            chosen.extend(_decode(records))
        return chosen[:100], sum(self.events[lo:hi])

    def departures(self, window_days: int, day: int) -> int:
        days = self.days
        return sum(self.heads[bisect_left(days, day - window_days + 1) : bisect_right(days, day)])

    def window_departures(self, window_days: int, query_days: list[int]) -> list[int]:
        """``departures`` for each of the sorted ``query_days``, sliding the window."""
        days, heads = self.days, self.heads
        out = []
        lo = hi = 0
        running = 0
        for q in query_days:
            new_hi = bisect_right(days, q, hi)
            new_lo = bisect_left(days, q - window_days + 1, lo)
            if new_lo >= hi:
                running = sum(heads[new_lo:new_hi])
            else:
                for i in range(hi, new_hi):
                    running += heads[i]
                for i in range(lo, new_lo):
                    running -= heads[i]
            lo, hi = new_lo, new_hi
            out.append(running)
        return out


class CompanyTimeline:
    """Everything known about one company's accepted events, by day."""

    __slots__ = ("company_id", "name", "days", "slots", "evidence", "poaching", "counterparty_names", "_memo")

    def __init__(self, company_id: str) -> None:
        self.company_id = company_id
        self.name = ""  # the display name: the first spelling seen
        self.days = array("i")  # sorted days with data
        self.slots: list = [array("q") for _ in range(WIDTH)]  # slot -> sums, parallel to days
        # per day, the evidence records in arrival order: JSON fragments ``code,"event_id",`` (see ``_quoted``)
        self.evidence: list[bytes] = []
        # departures other than layoffs by counterparty: counterparty_id -> series
        self.poaching: dict[str, PairSeries] = {}
        self.counterparty_names: dict[str, str] = {}  # counterparty_id -> first spelling seen
        self._memo: dict[int, dict[int, WindowTotals]] = {}  # window -> day -> totals, until the next add

    def _bucket(self, day: int) -> int:
        """Index of the day's bucket, made empty if the day is new."""
        days = self.days
        n = len(days)
        if not n or day > days[n - 1]:
            days.append(day)
            for values in self.slots:
                values.append(0)
            self.evidence.append(b"")
            return n
        i = bisect_left(days, day)
        if days[i] != day:
            days.insert(i, day)
            for values in self.slots:
                values.insert(i, 0)
            self.evidence.insert(i, b"")
        return i

    def add(self, fact: Fact) -> None:
        if self._memo:
            self._memo = {}
        if not self.name and fact.name:
            self.name = fact.name
        days = self.days
        i = len(days) - 1
        if i < 0 or days[i] != fact.day:  # else the latest day again: the usual case in a replay
            i = self._bucket(fact.day)
        slots, n = self.slots, fact.headcount
        code = fact.kind
        quoted = _quoted(fact.event_id)
        if fact.kind == HIRING:
            slots[H][i] += n
            slots[N_HIRES][i] += 1
        elif fact.kind == DEPARTURE:
            slots[D][i] += n
            if fact.layoff:
                slots[L][i] += n
                slots[N_LAYOFFS][i] += 1
                code = LAYOFF
            else:
                slots[N_ATTRITION][i] += 1
                if fact.key:
                    slots[K][i] += n
                cp = fact.counterparty_id
                if cp and cp != fact.company_id:
                    pair = self.poaching.get(cp)
                    if pair is None:
                        pair = self.poaching[cp] = PairSeries()
                        self.counterparty_names[cp] = fact.counterparty_name or cp
                    pair.add(fact.day, n, quoted + b",")
        elif fact.kind == FUNDING:
            _bump(slots, F, i, fact.amount_micro)
            slots[R][i] += 1
        else:  # MODEL_RELEASE
            slots[M][i] += 1
        self.evidence[i] += b"%d,%b," % (code, quoted)

    # ---- window totals ---------------------------------------------------------------------
    def totals(self, window_days: int, day: int) -> WindowTotals:
        """Indicators of the window of ``window_days`` ending on ``day`` (inclusive)."""
        days = self.days
        lo, hi = bisect_left(days, day - window_days + 1), bisect_right(days, day)
        if lo >= hi:
            return ZERO
        s = self.slots
        return WindowTotals(sum(s[H][lo:hi]), sum(s[D][lo:hi]), sum(s[K][lo:hi]), sum(s[F][lo:hi]),
                            sum(s[R][lo:hi]), sum(s[M][lo:hi]), sum(s[L][lo:hi]))

    def totals_on(self, window_days: int, query_days: list[int]) -> list[WindowTotals]:
        """``totals`` for each of the sorted ``query_days``, remembered until the next ``add``: a flush asks
        for the same windows for its rows and for every rule with that window."""
        memo = self._memo.get(window_days)
        if memo is None:
            memo = self._memo[window_days] = {}
        missing = sorted(set(query_days).difference(memo))
        if missing:
            memo.update(zip(missing, self._slide(window_days, missing)))
        return list(map(memo.__getitem__, query_days))

    def forget_totals(self) -> None:
        """Drop remembered totals (a flush is over: they are cheap to recompute, costly to keep)."""
        self._memo = {}

    def _slide(self, window_days: int, query_days: list[int]) -> list[WindowTotals]:
        """Totals for sorted query days: buckets enter and leave running sums; a jump sums slices afresh."""
        days = self.days
        hs, ds, ks, fs, rs, ms, ls = self.slots[:7]
        out = []
        lo = hi = 0
        h = d = k = f = r = m = l = 0
        for q in query_days:
            new_hi = bisect_right(days, q, hi)
            new_lo = bisect_left(days, q - window_days + 1, lo)
            if new_lo >= hi or new_hi - hi + new_lo - lo > new_hi - new_lo:
                h, d, k = sum(hs[new_lo:new_hi]), sum(ds[new_lo:new_hi]), sum(ks[new_lo:new_hi])
                f, r, m, l = sum(fs[new_lo:new_hi]), sum(rs[new_lo:new_hi]), sum(ms[new_lo:new_hi]), sum(ls[new_lo:new_hi])
            else:
                for i in range(hi, new_hi):
                    h += hs[i]; d += ds[i]; k += ks[i]; f += fs[i]; r += rs[i]; m += ms[i]; l += ls[i]  # noqa: E702
                for i in range(lo, new_lo):
                    h -= hs[i]; d -= ds[i]; k -= ks[i]; f -= fs[i]; r -= rs[i]; m -= ms[i]; l -= ls[i]  # noqa: E702
            lo, hi = new_lo, new_hi
            out.append(_totals(WindowTotals, (h, d, k, f, r, m, l)))
        return out

    def pair_departures(self, counterparty_id: str, window_days: int, day: int) -> int:
        pair = self.poaching.get(counterparty_id)
        return 0 if pair is None else pair.departures(window_days, day)

    # ---- evidence ----------------------------------------------------------------------------
    def event_ids(
        self, window_days: int, day: int, kinds: frozenset[int], counterparty_id: str | None = None
    ) -> tuple[list[str], int]:
        """Ids of the events of ``kinds`` in the window ending on ``day`` (first 100, in event-time order) and their count."""
        if counterparty_id is not None:
            pair = self.poaching.get(counterparty_id)
            return pair.event_ids(window_days, day) if pair is not None and DEPARTURE in kinds else ([], 0)
        days = self.days
        lo, hi = bisect_left(days, day - window_days + 1), bisect_right(days, day)
        counts = [self.slots[slot] for kind, slot in COUNT_SLOTS if kind in kinds]
        count = sum(sum(values[lo:hi]) for values in counts)
        chosen: list[str] = []
        enough = min(count, 100)
        for i in range(lo, hi):
            if len(chosen) >= enough:
                break
            if any(values[i] for values in counts):  # else none of the day's events is evidence: not decoded
                flat = _decode(self.evidence[i])
                chosen.extend([e for c, e in zip(flat[::2], flat[1::2]) if c in kinds])
        return chosen[:100], count


# evidence classes: the kind codes, with layoffs apart from other departures
LAYOFF = 4
COUNT_SLOTS = ((HIRING, N_HIRES), (DEPARTURE, N_ATTRITION), (LAYOFF, N_LAYOFFS), (FUNDING, R), (MODEL_RELEASE, M))
PEOPLE = frozenset({HIRING, DEPARTURE, LAYOFF})
ATTRITION_AND_HIRES = frozenset({HIRING, DEPARTURE})  # departures other than layoffs, and hires
DEPARTURES = frozenset({DEPARTURE})  # departures other than layoffs
LAYOFFS = frozenset({LAYOFF})
FUNDINGS = frozenset({FUNDING})
RELEASES = frozenset({MODEL_RELEASE})


def _quoted(event_id: str) -> bytes:
    """An event id as a JSON string: a day's records ``code,"event_id",`` read back as one JSON array."""
    try:
        return orjson.dumps(event_id)
    except orjson.JSONEncodeError:  # a lone surrogate: never from the wire, but not lost either
        return json.dumps(event_id).encode()


def _decode(records: bytes) -> list:
    """A day's evidence records as a flat list: [code, event_id, code, event_id, …] (a pair's: [event_id, …])."""
    text = b"[" + records[:-1] + b"]"
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)

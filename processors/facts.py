"""The compact form of an accepted event that the indicator and alert logic reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from streams.companies import CompanyNormalizer
from streams.events import KEY_SENIORITIES

HIRING, DEPARTURE, FUNDING, MODEL_RELEASE = 0, 1, 2, 3
KIND_CODES = {"hiring": HIRING, "departure": DEPARTURE, "funding": FUNDING, "model_release": MODEL_RELEASE}
MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(slots=True)  # not frozen (a frozen dataclass costs ~1 µs more per event to make); never changed
class Fact:
    """One accepted event, reduced to what indicators and alerts need.

    ``amount_micro`` is the amount in integer micro-dollars so that window sums are exact and
    thresholds such as ``funding_usd ≥ 1e9`` never miss by a rounding error.
    """

    event_id: str
    kind: int
    company_id: str
    counterparty_id: str | None
    day: int  # proleptic Gregorian ordinal of the UTC date
    time_us: int  # microseconds since the Unix epoch
    headcount: int
    key: bool  # a key (senior) departure that was not a layoff
    amount_micro: int
    layoff: bool  # a departure with reason ``layoff``: the employer cut the job
    name: str = ""  # the company as the source spells it (for alert summaries)
    counterparty_name: str | None = None  # to_company / from_company as spelled


FACT_WIDTH = len(Fact.__slots__)


def fact_tuple(fact: Fact) -> tuple:
    """The fact as a plain tuple (its field order), for the internal facts topic; ``Fact(*t)`` undoes it."""
    return (fact.event_id, fact.kind, fact.company_id, fact.counterparty_id, fact.day, fact.time_us, fact.headcount,
            fact.key, fact.amount_micro, fact.layoff, fact.name, fact.counterparty_name)


_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_DAY_US = 86_400 * MICROS


def time_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds


def day_of_us(time_us: int) -> int:
    """The proleptic Gregorian ordinal of the UTC date of a time in µs since the epoch."""
    return _EPOCH_ORDINAL + time_us // _DAY_US


def fact_from_fields(
    event_id: str,
    kind: str,
    company_id: str,
    counterparty_id: str | None,
    occurred_at: datetime,
    headcount: int | None,
    seniority: str | None,
    reason: str | None,
    amount_usd: float | None,
    name: str = "",
    counterparty_name: str | None = None,
) -> Fact:
    moment = occurred_at if occurred_at.tzinfo is timezone.utc else occurred_at.astimezone(timezone.utc)
    at = time_us(moment)
    layoff = kind == "departure" and reason == "layoff"
    return Fact(  # positional: a dataclass's keyword call costs more, and this runs for every event
        event_id,
        KIND_CODES[kind],
        company_id,
        counterparty_id or None,
        day_of_us(at),
        at,
        (headcount or 1) if kind in ("hiring", "departure") else 1,  # elsewhere these are extra fields
        kind == "departure" and not layoff and seniority in KEY_SENIORITIES,
        round((amount_usd or 0.0) * MICROS) if kind == "funding" else 0,
        layoff,
        name,
        counterparty_name or None,
    )


def fact_from_event(event, companies: CompanyNormalizer) -> Fact:
    """Build the fact of a validated SPEC §2 event: a model, or a dict from ``streams.events.parse_lines``."""
    return Fact(*fact_row(event, companies))


def fact_row(event, companies: CompanyNormalizer, *tail) -> tuple:
    """``fact_tuple(fact_from_event(event, companies)) + tail``, without making the ``Fact`` (this runs
    for every event the sequencer sees).

    Only the fields its kind declares count (an extra ``to_company`` on a funding event is not a
    counterparty): a dict also holds the extras, so each kind reads its own fields."""
    fields = event if event.__class__ is dict else event.__dict__
    kind = fields["kind"]
    moment = fields["occurred_at"]
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    at = time_us(moment)
    name = fields["company"]
    company_id = companies.company_id
    other = None
    headcount, key, layoff, amount = 1, False, False, 0
    if kind == "hiring":
        other = fields["from_company"]
        headcount = fields["headcount"] or 1
    elif kind == "departure":
        other = fields["to_company"]
        headcount = fields["headcount"] or 1
        layoff = fields["reason"] == "layoff"
        key = not layoff and fields["seniority"] in KEY_SENIORITIES
    elif kind == "funding":
        amount = round(fields["amount_usd"] * MICROS)
    other = other or None
    return (fields["event_id"], KIND_CODES[kind], company_id(name), other and (company_id(other) or None),
            day_of_us(at), at, headcount, key, amount, layoff, name, other, *tail)

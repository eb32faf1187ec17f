"""Adapters from real datasets to SPEC §2 events. Every input row is accounted for: used, or skipped with a reason.

* ``epoch`` — Epoch AI "Notable AI Models": one ``model_release`` per (model, organisation).
* ``aiwatch`` — AI Watch positions: each person's consecutive positions of any type at one
  organisation are collapsed into a spell (a promotion, or a board seat taken within 90 days of
  leaving the staff, is neither a hire nor a departure); a spell gives a ``hiring`` where employment
  begins and a ``departure`` (reason ``unknown``) where it ends, unless the person stays involved;
  the next spell's organisation is the departure's ``to_company`` and that hire's ``from_company``.
* ``layoffs`` — the layoffs.fyi export: one ``departure`` with ``reason = layoff`` per layoff.

Dates with ``month`` precision are placed on the first day of the month, ``year`` and
``multi-year`` on 1 January of the year given.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterator

from streams.companies import slugify
from streams.reader import InputFileError

csv.field_size_limit(10_000_000)


@dataclass
class Accounting:
    """rows = used + skipped, always."""

    rows: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _id(prefix: str, *parts: str) -> str:
    return f"{prefix}-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def place_date(text: str, precision: str) -> date | None:
    """A dataset date at its precision: month → first of the month, year → 1 January."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        m = re.match(r"^(\d{4})(?:-(\d{2}))?", text)
        if not m:
            raise ValueError(f"unreadable date {text!r}") from None
        day = date(int(m.group(1)), int(m.group(2) or 1), 1)
    p = (precision or "day").strip().lower()
    if p == "month":
        return day.replace(day=1)
    if p in ("year", "multi-year"):
        return day.replace(month=1, day=1)
    return day


# ---- Epoch AI -------------------------------------------------------------------------------
REGION_OF_COUNTRY = {
    "united states of america": "US", "united states": "US", "usa": "US", "canada": "US",
    "united kingdom": "UK", "uk": "UK", "china": "CN", "hong kong": "CN",
    "germany": "EU", "france": "EU", "netherlands": "EU", "switzerland": "EU", "italy": "EU", "spain": "EU",
    "sweden": "EU", "finland": "EU", "denmark": "EU", "belgium": "EU", "austria": "EU", "ireland": "EU",
    "poland": "EU", "czechia": "EU", "norway": "EU", "israel": "Asia", "japan": "Asia", "korea (republic of)": "Asia",
    "south korea": "Asia", "india": "Asia", "singapore": "Asia", "taiwan": "Asia", "united arab emirates": "Asia",
    "saudi arabia": "Asia", "russia": "EU",
}


def _modality(domain: str) -> str | None:
    parts = [p.strip().lower() for p in (domain or "").split(",") if p.strip()]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "multimodal"


def _open_weights(access: str) -> bool | None:
    a = (access or "").strip().lower()
    if a.startswith("open weights"):
        return True
    if a.startswith(("api access", "hosted access", "unreleased", "closed")):
        return False
    return None


@contextmanager
def csv_text(path: Path, encoding: str = "utf-8"):
    """A CSV file as text; one that is not UTF-8 is a one-line error naming the file, not a traceback."""
    with open(path, newline="", encoding=encoding) as fh:
        try:
            yield fh
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None


EPOCH_COLUMNS = ("Model", "Organization", "Publication date")


def epoch_events(path: Path, acc: Accounting) -> Iterator[tuple[str, dict]]:
    with csv_text(path) as fh:
        yield from epoch_rows(fh, path.name, acc)


def epoch_rows(fh, name: str, acc: Accounting, unreadable=None) -> Iterator[tuple[str, dict]]:
    """Events of an Epoch CSV read from any text stream; ``unreadable(origin, row)`` hears of rows
    whose publication date cannot be read (a live source dead-letters them)."""
    for number, row in enumerate(csv.DictReader(fh), 2):
        acc.rows += 1
        model = (row.get("Model") or "").strip()
        orgs = [o.strip() for o in (row.get("Organization") or "").split(",") if slugify(o)]
        if not model:
            acc.skip("no model name")
            continue
        if not orgs:
            acc.skip("no organization")
            continue
        try:
            day = place_date(row.get("Publication date", ""), "day")
        except ValueError:
            acc.skip("unreadable publication date")
            if unreadable is not None:
                unreadable(f"{name}:{number}", row)
            continue
        if day is None:
            acc.skip("no publication date")
            continue
        acc.used += 1
        try:
            params = float(row.get("Parameters") or "")
        except ValueError:
            params = None
        countries = [c.strip().lower() for c in (row.get("Country (of organization)") or "").split(",")]
        region = next((REGION_OF_COUNTRY[c] for c in countries if c in REGION_OF_COUNTRY), None)
        for org in dict.fromkeys(orgs):
            event = {"event_id": _id("epoch", model, slugify(org)), "kind": "model_release", "company": org,
                     "occurred_at": day.isoformat(), "source": "epoch", "model_name": model}
            for key, value in (("modality", _modality(row.get("Domain", ""))), ("parameters", params),
                               ("open_weights", _open_weights(row.get("Model accessibility", ""))),
                               ("region", region)):
                if value is not None:
                    event[key] = value
            acc.events["model_release"] += 1
            yield f"{name}:{number}", event


# ---- AI Watch -------------------------------------------------------------------------------
SENIORITY_PATTERNS = [  # first match wins; matched against the lower-cased title
    ("founder", r"\bco-?founder\b|\bfounder\b|\bfounding\b"),
    ("c_level", r"\bchief\b|\bceo\b|\bcto\b|\bcoo\b|\bcfo\b|\bcso\b|\bpresident\b(?!.*\bvice\b)"),
    ("vp", r"\bvice[- ]president\b|\bvp\b|\bsvp\b|\bevp\b|\bhead of\b"),
    ("director", r"\bdirector\b"),
    ("principal", r"\bprincipal\b|\bdistinguished\b|\bfellow\b"),
    ("manager", r"\bmanager\b|\blead\b"),
    ("staff", r"\bstaff\b"),
    ("senior", r"\bsenior\b|\bsr\.?\b"),
    ("intern", r"\bintern\b|\binternship\b"),
    ("junior", r"\bjunior\b|\bassistant\b|\bassociate\b"),
    ("mid", r"\bresearcher\b|\bengineer\b|\bscientist\b|\banalyst\b|\bresearch\b"),
]
_SENIORITY_RE = [(level, re.compile(p)) for level, p in SENIORITY_PATTERNS]
NOT_EMPLOYMENT = {"board member", "advisor", "volunteer", "affiliate", "contractor"}
CONTINUITY_DAYS = 90  # a position at the same organisation starting this soon after one ends: the person stayed


def seniority_of(title: str) -> str:
    t = (title or "").lower()
    for level, pattern in _SENIORITY_RE:
        if pattern.search(t):
            return level
    return "unknown"


@dataclass
class Spell:
    """A person's continuous involvement with one organisation: consecutive positions of any type.

    ``start`` is when employment began (None when no employee position has a start); ``leaves`` says
    whether the involvement ends with an employee position (a departure) rather than continuing, or
    ending, as a board member, advisor or the like."""

    person: str
    organization: str
    start: date | None
    end: date | None
    open_ended: bool
    first_title: str
    last_title: str
    origin: str
    employed: bool = True  # holds at least one employee position
    leaves: bool = True


@dataclass
class _Position:
    start: date | None
    end: date | None
    org: str
    title: str
    origin: str
    employed: bool

    @property
    def first(self) -> date:
        return self.start or self.end

    @property
    def last(self) -> date:
        return date.max if self.end is None else self.end


def aiwatch_spells(path: Path, acc: Accounting) -> list[Spell]:
    """Rows → spells per person and organisation, each row counted as used or skipped.

    Positions at one organisation are one spell while each starts within ``CONTINUITY_DAYS`` of the
    end of the ones before it, whatever their type: a promotion, a new title, or a board seat taken
    right after employment is neither a departure nor a hire. Only employee positions make events;
    others count (as skipped rows, with the reason) only as continued involvement."""
    positions: dict[str, list[_Position]] = defaultdict(list)
    with csv_text(path) as fh:
        for number, row in enumerate(csv.DictReader(fh), 2):
            acc.rows += 1
            person, org = (row.get("person") or "").strip(), (row.get("organization") or "").strip()
            if not person or not slugify(org):
                acc.skip("no person or organization")
                continue
            kind = (row.get("employment_type") or "").strip().lower()
            try:
                start = place_date(row.get("start_date", ""), row.get("start_date_precision", ""))
                end = place_date(row.get("end_date", ""), row.get("end_date_precision", ""))
            except ValueError:
                acc.skip("unreadable date")
                continue
            if start is None and end is None:
                acc.skip("no dates")
                continue
            if start is not None and end is not None and end < start:
                acc.skip("ends before it starts")
                continue
            employed = kind not in NOT_EMPLOYMENT
            if employed:
                acc.used += 1
            else:
                acc.skip(f"not employment ({kind}): no event, only continued involvement")
            positions[person].append(_Position(start, end, org, row.get("title") or "", f"{path.name}:{number}", employed))
    spells: list[Spell] = []
    for person, rows in positions.items():
        by_org: dict[str, list[_Position]] = defaultdict(list)
        for position in rows:
            by_org[slugify(position.org)].append(position)
        for chain_positions in by_org.values():
            chain_positions.sort(key=lambda p: (p.first, p.last))
            chains: list[list[_Position]] = []
            for position in chain_positions:
                if chains:
                    reach = max(p.last for p in chains[-1])
                    if reach == date.max or (position.first - reach).days <= CONTINUITY_DAYS:
                        chains[-1].append(position)
                        continue
                chains.append([position])
            for chain in chains:
                jobs = [p for p in chain if p.employed]
                last = max(chain, key=lambda p: p.last)
                if not jobs:
                    spells.append(Spell(person, chain[0].org, None, None, last.end is None, chain[0].title,
                                        last.title, chain[0].origin, employed=False, leaves=False))
                    continue
                last_job = max(jobs, key=lambda p: p.last)
                starts = [p.start for p in jobs if p.start is not None]
                spells.append(Spell(
                    person, jobs[0].org, min(starts) if starts else None, last.end if last.end is not None else None,
                    last.end is None, jobs[0].title, last_job.title, jobs[0].origin,
                    leaves=last.end is not None and last.employed and last_job.last == last.last))
    return spells


def aiwatch_events(path: Path, acc: Accounting) -> Iterator[tuple[str, dict]]:
    """A hire where employment begins, a departure (reason ``unknown``: the source does not say why) where
    the involvement ends with it; the neighbouring spells name where the person came from and went."""
    spells = aiwatch_spells(path, acc)
    by_person: dict[str, list[Spell]] = defaultdict(list)
    for spell in spells:
        if spell.employed:
            by_person[spell.person].append(spell)
    for person, mine in by_person.items():
        mine.sort(key=lambda s: (s.start or s.end or date.min))
        for i, spell in enumerate(mine):
            previous = mine[i - 1] if i > 0 else None
            following = mine[i + 1] if i + 1 < len(mine) else None
            base = {"company": spell.organization, "source": "aiwatch", "person": person}
            if spell.start is not None:
                hire = {**base, "event_id": _id("aiwatch-hire", person, spell.organization, spell.start.isoformat()),
                        "kind": "hiring", "occurred_at": spell.start.isoformat(), "role": spell.first_title,
                        "seniority": seniority_of(spell.first_title)}
                if previous is not None and slugify(previous.organization) != slugify(spell.organization):
                    hire["from_company"] = previous.organization
                acc.events["hiring"] += 1
                yield spell.origin, hire
            if spell.end is not None and spell.leaves:
                leave = {**base, "event_id": _id("aiwatch-departure", person, spell.organization, spell.end.isoformat()),
                         "kind": "departure", "occurred_at": spell.end.isoformat(), "role": spell.last_title,
                         "seniority": seniority_of(spell.last_title), "reason": "unknown"}
                if following is not None and slugify(following.organization) != slugify(spell.organization):
                    leave["to_company"] = following.organization
                acc.events["departure"] += 1
                yield spell.origin, leave


# ---- layoffs.fyi ----------------------------------------------------------------------------
LAYOFFS_COLUMNS = ("company", "total_laid_off", "date")


def _layoff_date(text: str) -> date:
    """``M/D/YYYY`` (the site's export) or ISO 8601 (other copies of it)."""
    text = text.strip()
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
    if m:
        return date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
    return date.fromisoformat(text[:10])


def _number(text: str) -> float | None:
    text = (text or "").strip().replace(",", "").replace("$", "").rstrip("%")
    if not text or text.lower() in ("null", "none", "nan", "n/a", "unknown"):
        return None
    return float(text)


def layoffs_events(path: Path, acc: Accounting) -> Iterator[tuple[str, dict]]:
    """One ``departure`` with ``reason = layoff`` and ``headcount = total_laid_off`` per row.

    A row that gives only a percentage is skipped (and counted, with its reason): a made-up headcount,
    even 1, would enter the ``layoffs`` sums that ``workforce_reduction`` compares with its thresholds.
    Location, industry, stage, country, percentage and funds raised stay in the payload."""
    with csv_text(path, "utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        missing = [c for c in LAYOFFS_COLUMNS if c not in fields]
        if missing:
            raise MappingError(f"{path.name} is not a layoffs.fyi export: no column {missing[0]!r}")
        for number, raw in enumerate(reader, 2):
            acc.rows += 1
            row = {key: (raw.get(name) or "").strip() for key, name in fields.items()}
            company = row["company"]
            if not slugify(company):
                acc.skip("no company")
                continue
            try:
                day = _layoff_date(row["date"])
            except ValueError:
                acc.skip("unreadable date" if row["date"] else "no date")
                continue
            try:
                total = _number(row["total_laid_off"])
                percentage = _number(row.get("percentage_laid_off", ""))
                funds = _number(row.get("funds_raised", "") or row.get("funds_raised_millions", ""))
            except ValueError:
                acc.skip("unreadable number")
                continue
            if total is None:
                acc.skip("no number laid off (a percentage at most)")
                continue
            if total < 1 or total != int(total):
                acc.skip("number laid off is not a whole number of at least 1")
                continue
            acc.used += 1
            event = {"event_id": _id("layoffs", slugify(company), day.isoformat(), row.get("location", ""), str(int(total))),
                     "kind": "departure", "reason": "layoff", "company": company, "occurred_at": day.isoformat(),
                     "headcount": int(total), "source": "layoffs.fyi"}
            countries = [row.get("country", "").lower()]
            region = next((REGION_OF_COUNTRY[c] for c in countries if c in REGION_OF_COUNTRY), None)
            extras = (("region", region), ("location", row.get("location")), ("industry", row.get("industry")),
                      ("stage", row.get("stage")), ("country", row.get("country")),
                      ("percentage_laid_off", percentage), ("funds_raised", funds))
            event.update({key: value for key, value in extras if value not in (None, "")})
            acc.events["departure"] += 1
            yield f"{path.name}:{number}", event


# ---- any CSV, with a column mapping ---------------------------------------------------------
INT_FIELDS = {"headcount", "schema_version"}
FLOAT_FIELDS = {"amount_usd", "parameters"}
BOOL_FIELDS = {"open_weights"}
LIST_FIELDS = {"investors"}


class MappingError(ValueError):
    """The column mapping cannot be used; the message is one line."""


@dataclass
class CsvMapping:
    """Event field → CSV column, constant fields for every row, a fixed kind (or a kind column), the date format."""

    columns: dict[str, str]
    kind: str | None = None
    date_format: str | None = None  # strptime format; None = ISO 8601
    constants: dict[str, str] = field(default_factory=dict)  # event field → value on every row

    @classmethod
    def parse(cls, pairs: list[str], kind: str | None, date_format: str | None, mapping_file: Path | None,
              sets: list[str] = ()) -> "CsvMapping":
        columns: dict[str, str] = {}
        constants: dict[str, str] = {}
        if mapping_file is not None:
            import tomllib
            try:
                data = tomllib.loads(Path(mapping_file).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise MappingError(f"cannot read mapping file {mapping_file}: {exc}") from None
            columns.update({str(k): str(v) for k, v in data.get("columns", {}).items()})
            constants.update({str(k): str(v) for k, v in data.get("set", {}).items()})
            kind = kind or data.get("kind")
            date_format = date_format or data.get("date_format")
        for option, target_map, pair_list in (("--map", columns, pairs), ("--set", constants, sets)):
            for pair in pair_list:
                target, sep, value = pair.partition("=")
                if not sep or not target.strip() or not value.strip():
                    raise MappingError(f"{option} takes FIELD={'COLUMN' if option == '--map' else 'VALUE'}, got {pair!r}")
                target_map[target.strip()] = value.strip()
        both = sorted(set(columns) & set(constants))
        if both:
            raise MappingError(f"{both[0]} is both mapped to a column and set to a value; choose one")
        if "kind" in constants:
            kind = kind or constants.pop("kind")
        if "company" not in columns or "occurred_at" not in columns:
            raise MappingError("the mapping needs at least company=COLUMN and occurred_at=COLUMN")
        if kind is None and "kind" not in columns:
            raise MappingError("give --kind KIND or map a kind column (--map kind=COLUMN)")
        return cls(columns, kind, date_format, constants)


def _convert(name: str, text: str, date_format: str | None):
    from datetime import datetime, timezone

    if name == "occurred_at" and date_format:
        try:
            moment = datetime.strptime(text, date_format)
        except ValueError:
            raise ValueError(f"occurred_at {text!r} does not match {date_format!r}") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()
    if name in INT_FIELDS:
        return int(text.replace(",", ""))
    if name in FLOAT_FIELDS:
        return float(text.replace(",", "").replace("$", ""))
    if name in BOOL_FIELDS:
        low = text.strip().lower()
        if low in ("true", "yes", "1", "y"):
            return True
        if low in ("false", "no", "0", "n"):
            return False
        raise ValueError(f"{name}: not a boolean: {text!r}")
    if name in LIST_FIELDS:
        return [part.strip() for part in text.split(";") if part.strip()]
    return text


def csv_events(path: Path, acc: Accounting, mapping: CsvMapping) -> Iterator[tuple[str, dict]]:
    from streams.events import InvalidEvent, parse_event
    import orjson

    with csv_text(path, "utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in mapping.columns.values() if c not in (reader.fieldnames or [])]
        if missing:
            raise MappingError(f"{path.name} has no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])})")
        for number, row in enumerate(reader, 2):
            acc.rows += 1
            event: dict = {"source": "csv"}
            if mapping.kind:
                event["kind"] = mapping.kind
            try:
                for target, value in mapping.constants.items():
                    event[target] = _convert(target, value, mapping.date_format)
                for target, column in mapping.columns.items():
                    text = (row.get(column) or "").strip()
                    if text:
                        event[target] = _convert(target, text, mapping.date_format)
                parse_event(orjson.dumps(event))
            except (ValueError, InvalidEvent) as exc:
                acc.skip(str(exc).splitlines()[0][:200])
                continue
            acc.used += 1
            acc.events[event["kind"]] += 1
            yield f"{path.name}:{number}", event


ADAPTERS = {"epoch": epoch_events, "aiwatch": aiwatch_events, "layoffs": layoffs_events}

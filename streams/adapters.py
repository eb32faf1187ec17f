"""Adapters from real datasets to SPEC §2 events. Every input row is accounted for: used, or skipped with a reason.

* ``epoch`` — Epoch AI "Notable AI Models": one ``model_release`` per (model, organisation).
* ``aiwatch`` — AI Watch positions: each person's consecutive positions at one organisation are
  collapsed into a spell (a promotion is neither a hire nor a departure); a spell gives a ``hiring``
  at its start and a ``departure`` at its end; the next spell's organisation is the departure's
  ``to_company`` and that hire's ``from_company``.

Dates with ``month`` precision are placed on the first day of the month, ``year`` and
``multi-year`` on 1 January of the year given.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterator

from streams.companies import slugify

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


EPOCH_COLUMNS = ("Model", "Organization", "Publication date")


def epoch_events(path: Path, acc: Accounting) -> Iterator[tuple[str, dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
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
SPELL_GAP_DAYS = 31  # positions at one organisation this close together are one spell


def seniority_of(title: str) -> str:
    t = (title or "").lower()
    for level, pattern in _SENIORITY_RE:
        if pattern.search(t):
            return level
    return "unknown"


@dataclass
class Spell:
    person: str
    organization: str
    start: date | None
    end: date | None
    open_ended: bool
    first_title: str
    last_title: str
    origin: str


def aiwatch_spells(path: Path, acc: Accounting) -> list[Spell]:
    """Rows → spells per person, each row counted as used or skipped."""
    positions: dict[str, list[tuple]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.DictReader(fh), 2):
            acc.rows += 1
            person, org = (row.get("person") or "").strip(), (row.get("organization") or "").strip()
            if not person or not slugify(org):
                acc.skip("no person or organization")
                continue
            kind = (row.get("employment_type") or "").strip().lower()
            if kind in NOT_EMPLOYMENT:
                acc.skip(f"not employment ({kind})")
                continue
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
            acc.used += 1
            positions[person].append((start or end, end, start, org, row.get("title") or "", f"{path.name}:{number}"))
    spells: list[Spell] = []
    for person, rows in positions.items():
        rows.sort(key=lambda r: (r[0], r[1] or date.max))
        mine: list[Spell] = []
        for _, end, start, org, title, origin in rows:
            current = next((s for s in reversed(mine) if slugify(s.organization) == slugify(org)), None)
            if current is not None and (current.open_ended or current.end is None
                                        or start is None or (start - current.end).days <= SPELL_GAP_DAYS):
                # consecutive positions at one organisation: one spell (a promotion or a new title)
                if end is None:
                    current.open_ended, current.end = True, None
                elif not current.open_ended:
                    current.end = max(current.end, end) if current.end else end
                current.last_title = title
                continue
            mine.append(Spell(person, org, start, end, end is None, title, title, origin))
        spells.extend(mine)
    return spells


def aiwatch_events(path: Path, acc: Accounting) -> Iterator[tuple[str, dict]]:
    spells = aiwatch_spells(path, acc)
    by_person: dict[str, list[Spell]] = defaultdict(list)
    for spell in spells:
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
            if spell.end is not None and not spell.open_ended:
                leave = {**base, "event_id": _id("aiwatch-departure", person, spell.organization, spell.end.isoformat()),
                         "kind": "departure", "occurred_at": spell.end.isoformat(), "role": spell.last_title,
                         "seniority": seniority_of(spell.last_title)}
                if following is not None and slugify(following.organization) != slugify(spell.organization):
                    leave["to_company"] = following.organization
                acc.events["departure"] += 1
                yield spell.origin, leave


# ---- any CSV, with a column mapping ---------------------------------------------------------
INT_FIELDS = {"headcount", "schema_version"}
FLOAT_FIELDS = {"amount_usd", "parameters"}
BOOL_FIELDS = {"open_weights"}
LIST_FIELDS = {"investors"}


class MappingError(ValueError):
    """The column mapping cannot be used; the message is one line."""


@dataclass
class CsvMapping:
    """Event field → CSV column, a fixed kind (or a kind column), and the date format."""

    columns: dict[str, str]
    kind: str | None = None
    date_format: str | None = None  # strptime format; None = ISO 8601

    @classmethod
    def parse(cls, pairs: list[str], kind: str | None, date_format: str | None, mapping_file: Path | None) -> "CsvMapping":
        columns: dict[str, str] = {}
        if mapping_file is not None:
            import tomllib
            try:
                data = tomllib.loads(Path(mapping_file).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise MappingError(f"cannot read mapping file {mapping_file}: {exc}") from None
            columns.update({str(k): str(v) for k, v in data.get("columns", {}).items()})
            kind = kind or data.get("kind")
            date_format = date_format or data.get("date_format")
        for pair in pairs:
            target, sep, column = pair.partition("=")
            if not sep or not target.strip() or not column.strip():
                raise MappingError(f"--map takes FIELD=COLUMN, got {pair!r}")
            columns[target.strip()] = column.strip()
        if "company" not in columns or "occurred_at" not in columns:
            raise MappingError("the mapping needs at least company=COLUMN and occurred_at=COLUMN")
        if kind is None and "kind" not in columns:
            raise MappingError("give --kind KIND or map a kind column (--map kind=COLUMN)")
        return cls(columns, kind, date_format)


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

    with open(path, newline="", encoding="utf-8-sig") as fh:
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


ADAPTERS = {"epoch": epoch_events, "aiwatch": aiwatch_events}

"""A raw input line before any event is built from it: the longest it may be, and the times the contract
accepts (SPEC §2). The replay order reads both in processes of their own, which then need neither
pydantic nor the event models (their import was a fifth of such a process's start)."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any

MAX_LINE_BYTES = 64 * 1024
MIN_YEAR, MAX_YEAR = 1900, 2100


def to_utc(value: Any) -> datetime:
    """ISO 8601 date or date-time → aware UTC datetime. A date is 00:00 UTC; no zone means UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                parsed = datetime.combine(date.fromisoformat(text), time(0), tzinfo=timezone.utc)
            else:
                parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date or date-time: {value[:40]!r}") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError("must be an ISO 8601 date or date-time string")
    zone = parsed.tzinfo
    if zone is not timezone.utc:  # this runs for every event: a time already in UTC is kept as it is
        parsed = parsed.replace(tzinfo=timezone.utc) if zone is None else parsed.astimezone(timezone.utc)
    if not MIN_YEAR <= parsed.year < MAX_YEAR:
        raise ValueError(f"year {parsed.year} is outside {MIN_YEAR}..{MAX_YEAR - 1}")
    return parsed

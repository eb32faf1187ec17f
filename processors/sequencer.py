"""De-duplication, watermark and lateness: the one place that decides whether an event counts.

It runs on a single-partition topic so that "first one wins" and "greatest ``occurred_at``
accepted so far" have one global meaning, whatever the number of downstream partitions.
"""

from __future__ import annotations

from enum import Enum
from hashlib import blake2b

from processors.facts import MICROS


def id_digest(event_id: str) -> int:
    """An event id as 8 bytes (an int): a few dozen bytes less per remembered id than the string.
    Two ids share a digest with probability ~n²/2⁶⁵ (about 3·10⁻⁸ after a million events)."""
    return int.from_bytes(blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Verdict(str, Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


class Sequencer:
    """Decides accepted / duplicate / late for each event, in arrival order."""

    def __init__(self, lateness_days: float = 7.0) -> None:
        self.lateness_us = round(lateness_days * 86_400 * MICROS)
        self.seen: set[int] = set()  # id_digest of every event id seen
        self.max_time_us: int | None = None  # greatest occurred_at accepted so far

    @property
    def watermark_us(self) -> int | None:
        return None if self.max_time_us is None else self.max_time_us - self.lateness_us

    def admit(self, event_id: str, time_us: int) -> Verdict:
        digest = id_digest(event_id)
        seen = self.seen
        if digest in seen:
            return Verdict.DUPLICATE
        seen.add(digest)
        watermark = self.watermark_us
        if watermark is not None and time_us < watermark:
            return Verdict.LATE
        if self.max_time_us is None or time_us > self.max_time_us:
            self.max_time_us = time_us
        return Verdict.ACCEPTED

    def restore(self, seen_ids, max_time_us: int | None) -> None:
        """Continue from durable state: every id stored so far, and the greatest accepted time."""
        self.seen.update(map(id_digest, seen_ids))
        if max_time_us is not None and (self.max_time_us is None or max_time_us > self.max_time_us):
            self.max_time_us = max_time_us

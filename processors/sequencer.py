"""De-duplication, watermark and lateness: the one place that decides whether an event counts.

It runs on a single-partition topic so that "first one wins" and "greatest ``occurred_at``
accepted so far" have one global meaning, whatever the number of downstream partitions.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable

from processors.facts import MICROS


def id_digest(event_id: str) -> int:
    """An event id as 8 bytes (a signed 64-bit int): Python's keyed SipHash of the string, which the
    string caches. Ids are digested again from their text when the sequencer restores, so the
    per-process key never has to be stored. Two ids share a digest with probability ~n²/2⁶⁵ (about
    3·10⁻⁸ after a million events), and the key keeps crafted collisions out of reach."""
    return hash(event_id)


class SeenIds:
    """Every digest seen, exactly, in about 10 bytes per id (a set of ints takes ~70).

    The digests are spread by their low bits over 16,384 ``bytearray`` buckets of 8-byte entries; a
    lookup is one C-level ``find`` in one bucket (~60 entries at a million ids), an insert an append.
    Measured at 1M ids: ~0.5 µs per lookup against ~0.25 µs for a set of ints.
    """

    BITS = 14

    def __init__(self) -> None:
        self._mask = (1 << self.BITS) - 1
        self._buckets = [bytearray() for _ in range(1 << self.BITS)]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: int) -> bool:
        return self._find(self._buckets[digest & self._mask], digest.to_bytes(8, "little", signed=True))

    @staticmethod
    def _find(bucket: bytearray, entry: bytes) -> bool:
        i = bucket.find(entry)
        while i >= 0:
            if not i & 7:  # a match that straddles two entries is not one
                return True
            i = bucket.find(entry, i + 1)
        return False

    def add(self, digest: int) -> bool:
        """Remember a digest; False when it was already there."""
        bucket = self._buckets[digest & self._mask]
        entry = digest.to_bytes(8, "little", signed=True)
        if bucket.find(entry) >= 0 and self._find(bucket, entry):
            return False
        bucket += entry
        self._count += 1
        return True

    def update(self, digests: Iterable[int]) -> None:
        for digest in digests:
            self.add(digest)

    def nbytes(self) -> int:
        """Memory held: the bucket list, the bytearray objects and their buffers (allocated capacity)."""
        return self._buckets.__sizeof__() + sum(bucket.__sizeof__() for bucket in self._buckets)


class Verdict(str, Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


class Sequencer:
    """Decides accepted / duplicate / late for each event, in arrival order."""

    def __init__(self, lateness_days: float = 7.0) -> None:
        self.lateness_us = round(lateness_days * 86_400 * MICROS)
        self.seen = SeenIds()  # id_digest of every event id seen
        self.max_time_us: int | None = None  # greatest occurred_at accepted so far

    @property
    def watermark_us(self) -> int | None:
        return None if self.max_time_us is None else self.max_time_us - self.lateness_us

    def admit(self, event_id: str, time_us: int) -> Verdict:
        if not self.seen.add(hash(event_id)):  # hash: id_digest, inlined (this runs for every event)
            return Verdict.DUPLICATE
        max_time_us = self.max_time_us
        if max_time_us is None:
            self.max_time_us = time_us
            return Verdict.ACCEPTED
        if time_us < max_time_us - self.lateness_us:
            return Verdict.LATE
        if time_us > max_time_us:
            self.max_time_us = time_us
        return Verdict.ACCEPTED

    def restore(self, seen_ids, max_time_us: int | None) -> None:
        """Continue from durable state: every id stored so far, and the greatest accepted time."""
        self.seen.update(map(id_digest, seen_ids))
        if max_time_us is not None and (self.max_time_us is None or max_time_us > self.max_time_us):
            self.max_time_us = max_time_us

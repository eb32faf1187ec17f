"""What every live source shares: the result of one poll, and cursors kept in small JSON files."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streams.sources.polite import INVALID_ITEM, PoliteClient, SourceError


def event_id(prefix: str, *parts: str) -> str:
    """A stable id from the source's own identifiers: the same fact polled twice gets the same id."""
    return f"{prefix}-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


@dataclass
class Item:
    """One line for the ingest topic: an event, or something malformed that becomes a dead letter."""

    origin: str  # "<source name>:<the source's identifier>"
    raw: bytes
    event_id: str | None = None  # None: expected to be dead-lettered


@dataclass
class Poll:
    """What one poll of one source found. ``cursor`` is committed only after the items are stored."""

    name: str
    items: list[Item] = field(default_factory=list)
    fetched: int = 0  # items read from the source (models, CSV rows, filings)
    unchanged: int = 0  # read, but already known (or part of a launch already announced)
    skipped: int = 0  # read, not an event (no date, before `since`, nothing sold)
    errors: list[SourceError] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)
    requests: int = 0

    def event(self, origin: str, event: dict) -> None:
        self.items.append(Item(origin, orjson.dumps(event), event["event_id"]))

    def malformed(self, origin: str, raw: bytes | dict, why: str) -> None:
        """A malformed item: sent as it is so the pipeline dead-letters it with the validator's reason."""
        self.items.append(Item(origin, raw if isinstance(raw, bytes) else orjson.dumps(raw), None))
        self.errors.append(SourceError(INVALID_ITEM, f"{origin}: {why}"))

    @property
    def failed(self) -> bool:
        """True when the source itself failed (not only some of its items)."""
        return any(e.kind != INVALID_ITEM for e in self.errors)

    @property
    def dead_letters(self) -> int:
        return sum(1 for i in self.items if i.event_id is None)


class CursorStore:
    """One JSON file per source in ``directory``; written atomically (a crash leaves the old one)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> dict:
        try:
            cursor = json.loads(self.path(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise self._unreadable(name, exc) from None
        if not isinstance(cursor, dict):
            raise self._unreadable(name, f"a JSON {type(cursor).__name__}, not an object")
        return cursor

    def _unreadable(self, name: str, why) -> SourceError:
        return SourceError("malformed", f"cursor file {self.path(name)} is unreadable ({why}); remove it to poll from the start")

    def save(self, name: str, cursor: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(cursor, sort_keys=True, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, target)


class LiveSource:
    """A producer that polls one public source. Subclasses implement :meth:`poll`."""

    type = ""

    def __init__(self, name: str, config) -> None:
        self.name = name
        self.config = config

    def client(self, user_agent: str, validators: dict) -> PoliteClient:
        c = self.config
        return PoliteClient(user_agent=c.user_agent or user_agent, timeout=c.timeout_seconds,
                            max_requests=c.max_requests, requests_per_second=c.requests_per_second,
                            max_attempts=c.max_attempts, backoff_seconds=c.backoff_seconds,
                            max_backoff_seconds=c.max_backoff_seconds,
                            max_retry_after_seconds=c.max_retry_after_seconds, validators=validators)

    async def poll(self, client: PoliteClient, cursor: dict) -> Poll:  # pragma: no cover - abstract
        raise NotImplementedError

"""Running live sources: poll, hand the items to the pipeline, and only then move each cursor.

A source that fails never stops the others: its error is reported (one line per kind), counted in
``aisignals_source_errors_total{source,kind}``, and its cursor stays where it was (what it had fully
processed is kept), so the next poll picks up from there. Event ids come from the sources' own
identifiers, so items delivered twice (a crash between delivery and the cursor write) are duplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from streams.sources.base import CursorStore, Item, LiveSource, Poll
from streams.sources.config import SourcesConfig
from streams.sources.epoch import EpochSource
from streams.sources.huggingface import HuggingFaceSource
from streams.sources.polite import SourceError
from streams.sources.sec_form_d import SecFormDSource

SOURCE_TYPES: dict[str, type[LiveSource]] = {
    "huggingface": HuggingFaceSource, "epoch": EpochSource, "sec_form_d": SecFormDSource}

Deliver = Callable[[list[Item]], Awaitable[set[str]]]  # items → ids of the events newly stored


@dataclass
class SourceStats:
    """What the metrics show: errors by (source, kind), and each source's last fully successful poll."""

    errors: Counter = field(default_factory=Counter)
    last_success: dict[str, float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


@dataclass
class Report:
    """One poll of one source, as the summary prints it."""

    name: str
    type: str
    fetched: int = 0
    new: int = 0
    unchanged: int = 0
    skipped: int = 0
    dead_letters: int = 0
    errors: list[SourceError] = field(default_factory=list)
    requests: int = 0

    @property
    def failed(self) -> bool:
        return any(e.kind != "invalid_item" for e in self.errors)


def describe(name: str, errors: list[SourceError]) -> list[str]:
    """One line per failure kind."""
    by_kind: dict[str, list[SourceError]] = {}
    for e in errors:
        by_kind.setdefault(e.kind, []).append(e)
    lines = []
    for kind, group in by_kind.items():
        more = f" (and {len(group) - 1} more)" if len(group) > 1 else ""
        lines.append(f"source {name}: {kind}: {group[0]}{more}")
    return lines


class Watcher:
    def __init__(self, config: SourcesConfig, state_dir: Path, deliver: Deliver,
                 say: Callable[[str], None] = print, stats: SourceStats | None = None) -> None:
        self.config = config
        self.sources = [SOURCE_TYPES[c.type](name, c) for name, c in config.named()]
        self.cursors = CursorStore(state_dir)
        self.deliver = deliver
        self.say = say
        self.stats = stats if stats is not None else SourceStats()
        self.stats.sources = [s.name for s in self.sources]
        self._delivering = asyncio.Lock()
        self._reported: dict[str, set[str]] = {}

    async def _poll(self, source: LiveSource) -> tuple[Poll, dict]:
        """One poll; never raises (a failure is an error of the poll)."""
        try:
            cursor = self.cursors.load(source.name)
        except SourceError as exc:
            poll = Poll(source.name, errors=[exc])
            poll.cursor = None  # the unreadable file is left as it is
            return poll, {}
        client = source.client(self.config.watch.user_agent, dict(cursor.get("http") or {}))
        try:
            poll = await source.poll(client, cursor)
        except SourceError as exc:  # a source's own guard missed it
            poll = Poll(source.name, errors=[exc], cursor=cursor)
        except Exception as exc:  # noqa: BLE001 - a bug in one source must not stop the others
            poll = Poll(source.name, errors=[SourceError("malformed", f"{type(exc).__name__}: {exc}")], cursor=cursor)
        finally:
            await client.close()
        poll.requests = client.requests
        # validators are kept only when everything they vouch for was processed: after a partial
        # failure the next poll must read the resource again instead of getting a 304
        poll.cursor = {**poll.cursor, "http": client.validators if not poll.failed else dict(cursor.get("http") or {})}
        return poll, cursor

    def _finish(self, source: LiveSource, poll: Poll, new_ids: set[str], quiet_repeats: bool) -> Report:
        if poll.cursor is not None:
            self.cursors.save(source.name, poll.cursor)
        ids = {i.event_id for i in poll.items if i.event_id}
        report = Report(source.name, source.type, poll.fetched, len(ids & new_ids), poll.unchanged + len(ids - new_ids),
                        poll.skipped, poll.dead_letters, poll.errors, poll.requests)
        for e in poll.errors:
            self.stats.errors[(source.name, e.kind)] += 1
        if not poll.failed:
            self.stats.last_success[source.name] = time.time()
        lines = describe(source.name, poll.errors)
        if quiet_repeats:  # a continuing outage is reported once per kind, and its end once
            kinds = {e.kind for e in poll.errors if e.kind != "invalid_item"}
            before = self._reported.get(source.name, set())
            lines = [ln for ln, e in zip(lines, _kinds_in_order(poll.errors))
                     if e == "invalid_item" or e not in before]
            if before and not kinds:
                lines.append(f"source {source.name}: polled successfully again")
            self._reported[source.name] = kinds
        for line in lines:
            self.say(line)
        return report

    async def once(self) -> list[Report]:
        """Poll every source once (concurrently), deliver everything in one replay, move the cursors."""
        polls = await asyncio.gather(*(self._poll(s) for s in self.sources))
        items = [item for poll, _ in polls for item in poll.items]
        new_ids = await self.deliver(items) if items else set()
        return [self._finish(source, poll, new_ids, False) for source, (poll, _) in zip(self.sources, polls)]

    async def run(self, stop: asyncio.Event, on_report: Callable[[Report], None] | None = None) -> None:
        """Poll each source on its own interval until ``stop`` is set."""
        async def one(source: LiveSource) -> None:
            while not stop.is_set():
                started = time.monotonic()
                poll, _ = await self._poll(source)
                async with self._delivering:  # one replay at a time
                    new_ids = await self.deliver(poll.items) if poll.items else set()
                report = self._finish(source, poll, new_ids, True)
                if on_report is not None:
                    on_report(report)
                wait = max(0.0, source.config.interval_seconds - (time.monotonic() - started))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass

        await asyncio.gather(*(one(s) for s in self.sources))


def _kinds_in_order(errors: list[SourceError]) -> list[str]:
    seen: list[str] = []
    for e in errors:
        if e.kind not in seen:
            seen.append(e.kind)
    return seen

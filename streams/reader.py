"""Reading event files: JSON Lines as raw lines with their origin, and the replay order of a backfill."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from streams.events import InvalidEvent, parse_event, to_wire


class InputFileError(OSError):
    """An input file cannot be read; the message is one line."""


@dataclass(slots=True)
class RawLine:
    """One non-empty input line and where it came from."""

    origin: str
    raw: bytes


@dataclass(slots=True)
class ReplayItem:
    """What a producer sends: a validated event in wire form, or a raw line that failed validation."""

    origin: str
    value: bytes
    key: str | None  # company name for valid events
    time_ms: int | None  # occurred_at in ms since the epoch (None before 1970)


def check_readable(paths: Iterable[Path]) -> list[Path]:
    out = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise InputFileError(f"no such file: {p}")
        if not p.is_file():
            raise InputFileError(f"not a file: {p}")
        try:
            with open(p, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise InputFileError(f"cannot read {p}: {exc.strerror}") from None
        out.append(p)
    return out


def jsonl_lines(path: Path) -> Iterator[RawLine]:
    """Non-empty lines of a JSON Lines file (a blank line is not an event and not a dead letter)."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            stripped = line.strip()
            if stripped:
                yield RawLine(f"{path.name}:{number}", stripped)


def replay_order(lines: Iterable[RawLine]) -> list[ReplayItem]:
    """Validate lines and order them for a backfill: invalid lines first, then events by ``occurred_at``.

    The sort is stable, so events at the same instant keep their file order ("first one wins").
    """
    bad: list[ReplayItem] = []
    good: list[tuple[int, int, ReplayItem]] = []
    for index, line in enumerate(lines):
        try:
            event = parse_event(line.raw)
        except InvalidEvent:
            bad.append(ReplayItem(line.origin, line.raw, None, None))  # the sequencer dead-letters it
            continue
        ts = event.occurred_at.timestamp()
        good.append((int(ts * 1_000_000), index, ReplayItem(line.origin, to_wire(event), event.company,
                                                            int(ts * 1000) if ts >= 0 else None)))
    good.sort(key=lambda item: (item[0], item[1]))
    return bad + [item for _, _, item in good]

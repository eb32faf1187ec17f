"""Reading event files: JSON Lines as raw lines with their origin, and the replay order of a backfill."""

from __future__ import annotations

import operator
import os
import tempfile
from array import array
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import msgspec
import orjson

from streams.lines import MAX_LINE_BYTES, to_utc

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class _Timed(msgspec.Struct):
    """A line's ``occurred_at`` alone: msgspec checks the whole line's JSON but builds only this field."""

    occurred_at: object = None


_occurred_at = msgspec.json.Decoder(_Timed).decode


class InputFileError(OSError):
    """An input file cannot be read; the message is one line."""


@dataclass(slots=True)
class RawLine:
    """One non-empty input line and where it came from (``path``/``offset``: where to read it again)."""

    origin: str
    raw: bytes
    path: Path | None = None
    offset: int = 0


@dataclass(slots=True)
class LineRun:
    """Lines that follow each other in a file, one line break apart, sent as one: ``data`` is the bytes of
    the file that hold them, ``first_line`` the number of the first (the others' follow)."""

    name: str  # the file's name: a line's origin is "name:number"
    first_line: int
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class NumberedOrigins:
    """The origins of a ``LineRun``'s lines ("name:number", as ``jsonl_lines`` names a line), made only when
    one is asked for (a dead letter's), not for every line."""

    name: str
    first: int

    def __getitem__(self, i: int) -> str:
        return f"{self.name}:{self.first + i}"


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


def _nonblank(path: Path, start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset of its text, text) of each non-blank line: a blank line is not an event
    and not a dead letter. ``start``/``end``: only the lines that begin in that byte range (``start`` is
    the beginning of a line, numbered ``first_line``)."""
    offset = start
    with open(path, "rb") as fh:
        fh.seek(start)
        for number, line in enumerate(fh, first_line):
            if end is not None and offset >= end:
                return
            stripped = line.strip()
            if stripped:
                yield number, offset if stripped[0] == line[0] else offset + len(line) - len(line.lstrip()), stripped
            offset += len(line)


def jsonl_lines(path: Path) -> Iterator[RawLine]:
    """Non-empty lines of a JSON Lines file."""
    path = Path(path)
    for number, offset, text in _nonblank(path):
        yield RawLine(f"{path.name}:{number}", text, path, offset)


NO_TIME = -(2**63)
READ_SPAN = 1 << 20  # bytes read at once when replaying lines that lie next to each other
READ_GAP = 4096  # bytes between two lines still read in one span (a line break, blank lines)


class ReplayPlan:
    """A backfill's lines in replay order, without holding them: a line read from a file is kept as
    (file, offset, length, line number) and read again when it is sent; a line made in memory
    (adapters) is written to a temporary spill file and kept the same way, its origin as a shared
    prefix and a number. Replaying millions of events costs ~30 bytes per event in memory (a list of
    ``RawLine`` objects took ~400 bytes per event)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self._path_no: dict[Path, int] = {}
        self._prefixes: list[str] = []  # origins of in-memory lines, without their number
        self._prefix_no: dict[str, int] = {}
        self._spill: BinaryIO | None = None
        self._spill_end = 0
        self.file_no = array("i")  # >= 0: index into ``paths``; < 0: in the spill file, prefix -1 - file_no
        self.offset = array("q")  # byte offset in the file or the spill file
        self.length = array("I")
        self.line_no = array("I")  # 0: an in-memory origin without a number
        self.time_ms = array("q")  # occurred_at in ms, NO_TIME for invalid lines and times before 1970
        self.order = array("I")

    def append(self, line: RawLine, time_ms: int | None) -> int:
        if line.path is None:
            prefix, number = _split_origin(line.origin)
            self.file_no.append(-1 - self._number(self._prefix_no, self._prefixes, prefix))
            self.offset.append(self._spill_line(line.raw))
            self.line_no.append(number)
        else:
            self.file_no.append(self._number(self._path_no, self.paths, line.path))
            self.offset.append(line.offset)
            self.line_no.append(int(line.origin.rpartition(":")[2]))
        self.length.append(len(line.raw))
        self.time_ms.append(NO_TIME if time_ms is None else time_ms)
        return len(self.file_no) - 1

    @staticmethod
    def _number(numbers: dict, names: list, name) -> int:
        number = numbers.get(name)
        if number is None:
            number = numbers[name] = len(names)
            names.append(name)
        return number

    def _spill_line(self, raw: bytes) -> int:
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="aisignals-replay-")
        at = self._spill_end
        self._spill.write(raw)
        self._spill_end += len(raw)
        return at

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[ReplayItem]:
        """Lines in replay order."""
        handles: dict[int, int] = {}
        if self._spill is not None:
            self._spill.flush()
        try:
            yield from self._items(0, len(self.order), handles)
        finally:
            for fd in handles.values():
                os.close(fd)

    def packs(self, per_pack: int, pack_bytes: int, max_line: int) -> Iterator[LineRun | list[ReplayItem]]:
        """The replay order in packs of up to ``per_pack`` lines. Lines that follow each other in one file,
        one line break apart (input already in time order), up to ``pack_bytes`` of them and none over
        ``max_line``, come as the bytes of the file that hold them (``LineRun``): one read, no object per
        line. Any other pack comes as its items (``chunks``)."""
        handles: dict[int, int] = {}
        if self._spill is not None:
            self._spill.flush()
        order, file_no, offset, length, line_no = self.order, self.file_no, self.offset, self.length, self.line_no
        n, k = len(order), 0
        try:
            while k < n:
                stop = min(k + per_pack, n)
                at = order[k:stop]
                first, last = at[0], at[-1]
                number = file_no[first]
                if (number >= 0 and last - first == stop - k - 1 and file_no[last] == number
                        and all(map(operator.lt, at, islice(at, 1, None)))):  # consecutive lines of one file
                    lengths = length[first:last + 1]
                    size = offset[last] + length[last] - offset[first]
                    if size == sum(lengths) + last - first and size <= pack_bytes and max(lengths) <= max_line:
                        data = os.pread(self._handle(number, handles), size, offset[first])
                        if len(data) == size and _utf8(data):
                            yield LineRun(self.paths[number].name, line_no[first], stop - k, data)
                            k = stop
                            continue
                yield from chunks(self._items(k, stop, handles), per_pack, pack_bytes)
                k = stop
        finally:
            for fd in handles.values():
                os.close(fd)

    def _handle(self, number: int, handles: dict[int, int]) -> int:
        fd = handles.get(number)
        if fd is None:
            fd = handles[number] = os.open(self.paths[number], os.O_RDONLY)
        return fd

    def _items(self, k: int, n: int, handles: dict[int, int]) -> Iterator[ReplayItem]:
        """The items of ``order[k:n]``. Lines that follow each other in one file (input already in time
        order) are read with one ``pread`` per span of up to READ_SPAN bytes: one system call per line
        released the interpreter lock a million times in a backfill, and each time waited to take it back."""
        names = [path.name for path in self.paths]
        order, file_no, offset, length, line_no, time_ms = (
            self.order, self.file_no, self.offset, self.length, self.line_no, self.time_ms)
        pread = os.pread
        while k < n:
            first = order[k]
            number = file_no[first]
            start = end = offset[first]
            stop = k
            while stop < n:  # the run of lines that lie close after each other in the same file
                i = order[stop]
                if file_no[i] != number or not 0 <= offset[i] - end <= READ_GAP or offset[i] + length[i] - start > READ_SPAN:
                    break
                end = offset[i] + length[i]
                stop += 1
            if stop == k:  # one line longer than a span
                end, stop = start + length[first], k + 1
            fd = self._spill.fileno() if number < 0 else self._handle(number, handles)
            span = pread(fd, end - start, start)
            for i in order[k:stop]:
                at = offset[i] - start
                when = None if time_ms[i] == NO_TIME else time_ms[i]
                if number < 0:
                    prefix = self._prefixes[-1 - number]
                    yield ReplayItem(f"{prefix}:{line_no[i]}" if line_no[i] else prefix, span[at:at + length[i]], None, when)
                else:
                    yield ReplayItem(f"{names[number]}:{line_no[i]}", span[at:at + length[i]], None, when)
            k = stop


def chunks(items: Iterable[ReplayItem], per_pack: int, pack_bytes: int) -> Iterator[list[ReplayItem]]:
    """Items in packs of up to ``per_pack``, each closed once it holds ``pack_bytes``."""
    size = 0
    chunk: list[ReplayItem] = []
    for item in items:
        chunk.append(item)
        size += len(item.value)
        if len(chunk) == per_pack or size >= pack_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _split_origin(origin: str) -> tuple[str, int]:
    """``"events.csv:12"`` → ``("events.csv", 12)``; an origin that does not end in such a number is
    kept whole (number 0), so joining the two gives back exactly the same text."""
    prefix, _, tail = origin.rpartition(":")
    if prefix and tail.isdigit() and tail.isascii() and str(int(tail)) == tail and 0 < int(tail) < 2**32:
        return prefix, int(tail)
    return origin, 0


def replay_time_us(raw: bytes) -> int | None:
    """The ``occurred_at`` of a line in µs since the epoch, read as the validator reads it; None when the
    line cannot be a valid event (not a JSON object, too long, no valid ``occurred_at``). Only the
    replay order needs it: the stream processors validate every line in full.

    msgspec reads the field in a third of the time ``orjson.loads`` takes to build the whole object (0.6
    against 1.8 µs a line). It checks the JSON of the fields it skips but not that their strings are
    valid UTF-8, so a line that is not plain ASCII is read by orjson, which does check (invalid UTF-8 is
    not an event). Nor does it check the range of a number it skips: a line with a number beyond a
    float's range in another field (which orjson refuses) is ordered by its time, and the sequencer
    dead-letters it there as it would anywhere."""
    if len(raw) > MAX_LINE_BYTES:
        return None
    try:
        value = _occurred_at(raw).occurred_at if raw.isascii() else orjson.loads(raw)["occurred_at"]
        return (to_utc(value) - _EPOCH) // _MICROSECOND
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, msgspec.DecodeError):
        return None  # orjson.JSONDecodeError is a ValueError


def replay_order(lines: Iterable[RawLine]) -> ReplayPlan:
    """Order lines for a backfill: lines that cannot be events first, then the rest by ``occurred_at``.

    The sort is stable, so events at the same instant keep their file order ("first one wins").
    Lines are sent as they were written; the stream processors validate them (and dead-letter what
    breaks SPEC §2, wherever it stands in the order).
    """
    plan = ReplayPlan()
    bad = array("I")
    good = array("I")
    times = array("q")  # µs, for the sort
    for line in lines:
        at = replay_time_us(line.raw)
        if at is None:
            bad.append(plan.append(line, None))  # the sequencer dead-letters it
            continue
        good.append(plan.append(line, at // 1000 if at >= 0 else None))
        times.append(at)
    plan.order = _in_order(bad, good, times)
    return plan


@dataclass(frozen=True, slots=True)
class FileRange:
    """The lines of one input file that begin in ``[start, end)``; ``number``: the file's place in the input."""

    path: Path
    number: int
    start: int
    end: int


@dataclass(slots=True)
class FilePart:
    """A ``FileRange`` read: its lines' places and times (the plan's arrays), and which of them cannot be
    events (``bad``) or can (``good``, with their ``times`` in µs), as positions within the part."""

    offset: array
    length: array
    line_no: array
    time_ms: array
    bad: array
    good: array
    times: array


def file_ranges(paths: Iterable[Path], pieces: int = 1, min_bytes: int = 1 << 22) -> list[FileRange]:
    """Each file in up to ``pieces`` ranges of about equal size (not below ``min_bytes``), each beginning
    at the start of a line, so that the ranges can be read apart and side by side."""
    ranges = []
    for number, path in enumerate(paths):
        size = os.path.getsize(path)
        cuts = [0]
        with open(path, "rb") as fh:
            for k in range(1, max(1, min(pieces, size // min_bytes))):
                at = max(size * k // pieces, cuts[-1])
                fh.seek(at)
                fh.readline()  # to the end of the line that holds ``at``
                if fh.tell() < size:
                    cuts.append(fh.tell())
        cuts.append(size)
        ranges += [FileRange(Path(path), number, a, b) for a, b in zip(cuts, cuts[1:]) if b > a or size == 0]
    return ranges


def read_range(part: FileRange) -> FilePart:
    """The lines of one range with their replay times (``replay_time_us``)."""
    first_line = 1
    if part.start:  # lines before the range, counted in blocks (the same line breaks ``_nonblank`` splits on)
        with open(part.path, "rb") as fh:
            left = part.start
            while left:
                block = fh.read(min(left, READ_SPAN))
                first_line += block.count(b"\n")
                left -= len(block)
    out = FilePart(array("q"), array("I"), array("I"), array("q"), array("I"), array("I"), array("q"))
    offsets, lengths, line_nos, time_ms, bad, good, times = (
        out.offset, out.length, out.line_no, out.time_ms, out.bad, out.good, out.times)
    time_of = replay_time_us
    k = 0
    for line_no, offset, text in _nonblank(part.path, part.start, part.end, first_line):
        offsets.append(offset)
        lengths.append(len(text))
        line_nos.append(line_no)
        at = time_of(text)
        if at is None:
            time_ms.append(NO_TIME)
            bad.append(k)
        else:
            time_ms.append(at // 1000 if at >= 0 else NO_TIME)
            good.append(k)
            times.append(at)
        k += 1
    return out


def replay_files(paths: Iterable[Path], pieces: int = 1, map_parts=map, min_piece_bytes: int = 1 << 22) -> ReplayPlan:
    """``replay_order`` of the lines of JSON Lines files (``jsonl_lines``), read straight into the plan's
    arrays: making a ``RawLine`` per line and taking it apart again was most of the 12 µs a line that
    reading cost. ``map_parts`` reads the ranges (up to ``pieces`` per file): given one that reads them
    in other processes, they are read side by side, and the plan is the same."""
    paths = [Path(path) for path in paths]
    ranges = file_ranges(paths, pieces, min_piece_bytes)
    plan = ReplayPlan()
    plan.paths = paths
    plan._path_no = {path: number for number, path in enumerate(paths)}
    bad, good, times = array("I"), array("I"), array("q")
    for part, read in zip(ranges, map_parts(read_range, ranges)):
        base = len(plan.offset)
        plan.file_no.extend(array("i", [part.number]) * len(read.offset))
        plan.offset.extend(read.offset)
        plan.length.extend(read.length)
        plan.line_no.extend(read.line_no)
        plan.time_ms.extend(read.time_ms)
        bad.extend(array("I", (base + k for k in read.bad)) if base else read.bad)
        good.extend(array("I", (base + k for k in read.good)) if base else read.good)
        times.extend(read.times)
    plan.order = _in_order(bad, good, times)
    return plan


def _in_order(bad: array, good: array, times: array) -> array:
    """The replay order: the lines that cannot be events, then the others by time (``times`` is theirs)."""
    return bad + array("I", (good[k] for k in _stable_argsort(times)))


def _stable_argsort(times: array) -> Iterator[int]:
    """Positions of ``times`` in ascending order, ties in their original order. One list of unique
    keys (time, then position) instead of ``sorted(range(n), key=...)``'s two lists of ints: about half
    the transient memory (~45 MB less at a million lines), and none for input already in time order."""
    n = len(times)
    if all(map(operator.le, times, islice(times, 1, None))):  # already in order (n < 2 included): no keys at all
        return iter(range(n))
    low = min(times)
    ordered = [(t - low) * n + k for k, t in enumerate(times)]
    ordered.sort()
    return (key % n for key in ordered)

"""What Linux's /proc says of a live process, for the benchmarks' memory and CPU figures."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, key: str) -> float | None:
    """A ``/proc/PID/status`` size in MB: ``VmRSS`` (resident now) or ``VmHWM`` (peak); None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) the process has used so far; None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """The processes that ``pid`` (any of its threads) has started; empty once it has exited."""
    try:
        out = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
        return out
    except OSError:
        return []


def child_running(pid: int, word: str) -> int | None:
    """The first child of ``pid`` whose command line holds ``word`` (e.g. the embedded broker, "tansu")."""
    for child in children(pid):
        try:
            if word.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except OSError:
            continue
    return None


def cores_by_period(readings: list[float | None], period: float) -> list[float] | None:
    """Cores used in each period from ``cpu_seconds`` read every ``period`` seconds; None if a read failed."""
    if None in readings:
        return None
    return [(b - a) / period for a, b in zip(readings, readings[1:])]

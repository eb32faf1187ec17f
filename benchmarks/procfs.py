"""What Linux's /proc says of a live process, for the benchmarks' memory figures."""

from __future__ import annotations

from pathlib import Path


def status_mb(pid: int, key: str) -> float | None:
    """A ``/proc/PID/status`` size in MB: ``VmRSS`` (resident now) or ``VmHWM`` (peak); None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None

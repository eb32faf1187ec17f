from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CONFORMANCE = DATA / "conformance"


def aisignals(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real command line."""
    proc = subprocess.run([sys.executable, "-m", "aisignals", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"aisignals {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fetch(db: Path, sql: str):
    """Read the DuckDB file like any other process would (retrying while the sink flushes)."""
    from sinks.database import Database

    with Database(db).reader(sandboxed=False) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def broker(tmp_path):
    """A real Tansu broker for the test, stopped afterwards."""
    b = EmbeddedBroker(tmp_path / "tansu.log")
    b.start()
    yield b
    b.stop()

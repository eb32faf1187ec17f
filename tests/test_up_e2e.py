"""`aisignals up` end to end, bounded with --for: the DuckDB file afterwards holds the replay."""

from __future__ import annotations

import pytest

from tests.conftest import aisignals, fetch

pytestmark = pytest.mark.e2e


def test_up_replays_bundled_data_and_stops_cleanly(tmp_path):
    db = tmp_path / "up.duckdb"
    out = aisignals("up", "--db", str(db), "--for", "45", timeout=240)
    assert "ai-signals is up" in out.stdout and "stopped" in out.stdout
    sources = dict(fetch(db, "SELECT source, count(*) FROM events GROUP BY source"))
    assert sources.get("epoch", 0) > 1000 and sources.get("aiwatch", 0) > 10_000
    assert fetch(db, "SELECT count(*) FROM indicators")[0][0] > 1000
    assert fetch(db, "SELECT count(*) FROM alerts")[0][0] > 0

"""Hostile SQL is refused or cut off with a clear error; the file and the machine stay untouched."""

from __future__ import annotations

import time

import pytest

from sinks.database import Database
from sinks.query import QueryError, run_sql
from tests.conftest import aisignals

HOSTILE = [
    "INSERT INTO events (event_id) VALUES ('x')",
    "UPDATE events SET late = true",
    "DELETE FROM events",
    "DROP TABLE events",
    "CREATE TABLE t AS SELECT 1",
    "ALTER TABLE events ADD COLUMN x INT",
    "TRUNCATE events",
    "ATTACH '/tmp/other.duckdb' AS other",
    "DETACH aisignals",
    "COPY events TO '/tmp/stolen.csv'",
    "COPY events FROM '/etc/passwd'",
    "EXPORT DATABASE '/tmp/export'",
    "IMPORT DATABASE '/tmp/export'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/shadow')",
    "SELECT * FROM read_json_auto('/etc/hosts')",
    "SELECT * FROM read_parquet('http://example.invalid/x.parquet')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM '/etc/passwd'",
    "PRAGMA database_list",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET memory_limit = '100GB'",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "USE memory",
    "SELECT 1; DROP TABLE events",
    "SELECT 1; SELECT 2",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "SELECT count(*) FROM range(100000000000) a, range(100000000000) b",
    "SELECT string_agg(x::VARCHAR, ',') FROM range(1000000000) t(x)",
    "SELEC broken",
]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("sql") / "h.duckdb"
    database = Database(path)
    database.create()
    with database.writer() as con:
        con.execute("INSERT INTO dead_letters VALUES ('d1', now(), 'o', 'raw', 'err', NULL)")
    return database


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_statement_is_refused_or_cut_off(db, sql):
    started = time.monotonic()
    with pytest.raises(QueryError) as info:
        run_sql(db, sql, max_rows=1000, timeout=2.0)
    assert "\n" not in str(info.value) and str(info.value)
    assert time.monotonic() - started < 30
    # nothing changed, and the file still answers
    names, rows, _ = run_sql(db, "SELECT count(*) FROM dead_letters", 10, 2.0)
    assert rows == [(1,)]


def test_row_cap_truncates(db):
    names, rows, truncated = run_sql(db, "SELECT * FROM range(100000)", 50, 5.0)
    assert len(rows) == 50 and truncated


def test_at_least_thirty_hostile_statements():
    assert len(HOSTILE) >= 30


def test_cli_refuses_in_one_line(db):
    for sql in ("DROP TABLE events", "SELECT * FROM read_csv('/etc/passwd')", "SELECT 1; SELECT 2"):
        proc = aisignals("query", "--db", str(db.path), sql, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr

"""Read-only SQL over the DuckDB file, rendered as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import threading
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson

from sinks.database import Database


class QueryError(ValueError):
    """The statement failed; the message is one line."""


def run_query(db: Path | Database, sql: str, max_rows: int = 10_000, params: list | None = None,
              timeout: float = 30.0) -> tuple[list[str], list[tuple]]:
    """Rows of one read-only SELECT (at most ``max_rows``)."""
    names, rows, _ = run_sql(db, sql, max_rows, timeout, params)
    return names, rows


def run_sql(db: Path | Database, sql: str, max_rows: int, timeout: float,
            params: list | None = None) -> tuple[list[str], list[tuple], bool]:
    """Exactly one SELECT, on a sandboxed read-only connection (no files, network or extensions,
    settings locked, memory capped), interrupted after ``timeout`` seconds; returns (names, rows, truncated)."""
    database = db if isinstance(db, Database) else Database(Path(db))
    with database.reader() as con:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(" ".join(str(exc).split())[:300]) from None
        if len(statements) != 1:
            raise QueryError(f"exactly one statement is allowed, got {len(statements)}")
        if statements[0].type != duckdb.StatementType.SELECT:
            raise QueryError(f"only SELECT queries are allowed, got {statements[0].type.name}")
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            cursor = con.execute(sql, params) if params else con.execute(sql)
            names = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchmany(max_rows + 1) if names else []
        except duckdb.InterruptException:
            raise QueryError(f"query cancelled after {timeout:g} s") from None
        except duckdb.Error as exc:
            raise QueryError(" ".join(str(exc).split())[:300]) from None
        finally:
            timer.cancel()
    return names, rows[:max_rows], len(rows) > max_rows


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def to_csv(names: list[str], rows: list[tuple]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if v is None else _plain(v) for v in row])
    return out.getvalue()


def to_json(names: list[str], rows: list[tuple]) -> str:
    return orjson.dumps([{n: _plain(v) for n, v in zip(names, row)} for row in rows],
                       option=orjson.OPT_INDENT_2, default=str).decode()

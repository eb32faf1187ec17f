"""Read-only SQL over the DuckDB file, rendered as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson

from sinks.database import Database


class QueryError(ValueError):
    """The statement failed; the message is one line."""


def run_query(db: Path, sql: str, max_rows: int = 10_000, params: list | None = None) -> tuple[list[str], list[tuple]]:
    database = db if isinstance(db, Database) else Database(Path(db))
    with database.reader() as con:
        try:
            cursor = con.execute(sql, params) if params else con.execute(sql)
        except duckdb.Error as exc:
            raise QueryError(str(exc).splitlines()[0]) from None
        if cursor.description is None:
            return [], []
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchmany(max_rows)
        return names, rows


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

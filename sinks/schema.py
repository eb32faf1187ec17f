"""DuckDB DDL derived from the pydantic record models in ``streams.records`` (never typed by hand)."""

from __future__ import annotations

import types
import typing
from datetime import date, datetime
from typing import Any, Literal, Union, get_args, get_origin

from streams.records import TABLES, Stored

_SCALARS = {str: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", datetime: "TIMESTAMPTZ", date: "DATE"}
# SPEC §5 spells some column types out; honour them exactly
_OVERRIDES = {("events", "headcount"): "INTEGER", ("indicators", "window_days"): "INTEGER"}
# how DuckDB stores a column's values, where its own choice costs more: a row's whole JSON text compresses
# smaller and cheaper with zstd than with the FSST DuckDB picks (300k events in flushes of 20,480 rows:
# 0.63 -> 0.43 s of CPU compressing as they commit, and a file of 31 MB instead of 46; alert history:
# 7.1 -> 4.2 MB). The other columns are short, repeated values DuckDB stores best itself
_COMPRESSION = {("events", "payload"): "zstd", ("alert_history", "message"): "zstd"}


def duckdb_type(annotation: Any) -> tuple[str, bool]:
    """(DuckDB type, nullable) of a field annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner, _ = duckdb_type(args[0])
        return inner, True
    if origin is Literal:
        return "VARCHAR", False
    if origin in (dict, list) or annotation in (dict, list) or annotation is Any:
        return "JSON", False
    if origin is typing.Annotated:
        return duckdb_type(get_args(annotation)[0])
    return _SCALARS[annotation], False


def columns(model: type[Stored]) -> list[tuple[str, str, bool]]:
    out = []
    for name, field in model.model_fields.items():
        sql_type, nullable = duckdb_type(field.annotation)
        out.append((name, _OVERRIDES.get((model.table, name), sql_type), nullable))
    return out


def create_table_sql(model: type[Stored]) -> str:
    cols = [f"{name} {sql_type}{_using(model.table, name)}{'' if nullable or name not in model.primary_key else ' NOT NULL'}"
            for name, sql_type, nullable in columns(model)]
    if model.primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(model.primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {model.table} (\n  " + ",\n  ".join(cols) + "\n)"


def _using(table: str, column: str) -> str:
    method = _COMPRESSION.get((table, column))
    return f" USING COMPRESSION {method}" if method else ""


def all_ddl() -> list[str]:
    return [create_table_sql(model) for model in TABLES]


# what a column added by a later revision holds in rows written before it existed (SPEC 1.1: every
# earlier departure had no reason, so none was a layoff)
_BACKFILL_VALUES = {
    ("events", "reason"): "CASE WHEN kind = 'departure' THEN 'unknown' END",
    ("indicators", "layoffs"): "0",
    ("indicators", "attrition"): "departures",
}


def missing_columns_sql(con) -> list[str]:
    """ALTER/UPDATE statements that bring tables written by an earlier revision up to the models."""
    have = {(t, c) for t, c in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns").fetchall()}
    out = []
    for model in TABLES:
        for name, sql_type, _ in columns(model):
            if (model.table, name) in have:
                continue
            out.append(f"ALTER TABLE {model.table} ADD COLUMN {name} {sql_type}")
            value = _BACKFILL_VALUES.get((model.table, name))
            if value is not None:
                out.append(f"UPDATE {model.table} SET {name} = {value}")
    return out


def markdown_reference() -> str:
    """The tables as Markdown, for the docs."""
    parts = []
    for model in TABLES:
        parts.append(f"### `{model.table}`\n\n{(model.__doc__ or '').strip()}\n")
        parts.append("| column | type | null | meaning |\n|---|---|---|---|")
        for name, sql_type, nullable in columns(model):
            desc = model.model_fields[name].description or ""
            key = " (key)" if name in model.primary_key else ""
            parts.append(f"| `{name}`{key} | {sql_type} | {'yes' if nullable else 'no'} | {desc} |")
        parts.append("")
    return "\n".join(parts)

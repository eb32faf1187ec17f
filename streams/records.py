"""Pydantic models of every stored record: the single source of the DuckDB tables and their docs.

The hot path builds plain dicts of these shapes; the sink derives its DDL from these models and
tests validate the dicts against them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field


class Stored(BaseModel):
    """A table row. ``table`` names the table; ``primary_key`` its key columns."""

    table: ClassVar[str]
    primary_key: ClassVar[tuple[str, ...]] = ()


class EventRow(Stored):
    """``events``: every accepted or late event, once."""

    table: ClassVar[str] = "events"
    primary_key: ClassVar[tuple[str, ...]] = ("event_id",)
    event_id: str = Field(description="unique id (given, or derived from the content)")
    kind: Literal["hiring", "departure", "funding", "model_release"]
    company_id: str = Field(description="normalised company slug")
    company: str = Field(description="company name as the source spells it")
    counterparty_id: str | None = Field(description="normalised to_company (departure) or from_company (hiring)")
    occurred_at: datetime = Field(description="event time, UTC")
    ingested_at: datetime = Field(description="when the sink stored it")
    headcount: int | None
    seniority: str | None
    reason: str | None = Field(default=None, description="departure: why they left (unknown when absent); NULL for other kinds")
    amount_usd: float | None
    model_name: str | None
    modality: str | None = Field(default=None, description="model_release: the modality field, as a column for fast grouping")
    source: str | None
    region: str | None
    late: bool = Field(description="older than the watermark: stored, but left out of indicators and alerts")
    payload: dict[str, Any] = Field(description="the whole event as JSON, extra fields included")
    batch_id: str | None = Field(default=None, description="the backfill that brought it (none for live events)")


class IndicatorRow(Stored):
    """``indicators``: SPEC §3, one row per (company, window, day with an event)."""

    table: ClassVar[str] = "indicators"
    primary_key: ClassVar[tuple[str, ...]] = ("company_id", "window_days", "window_end")
    company_id: str
    window_days: int
    window_end: date
    hires: int
    departures: int = Field(description="headcount of departures, every reason")
    layoffs: int = Field(description="headcount of departures with reason layoff")
    attrition: int = Field(description="departures − layoffs: people who left for any other reason")
    key_departures: int = Field(description="senior departures (principal … founder), layoffs left out")
    net_talent_flow: int
    talent_drain_ratio: float = Field(description="attrition / max(hires, 1)")
    funding_usd: float
    funding_rounds: int
    model_releases: int


class AlertRow(Stored):
    """``alerts``: one row per alert instance, holding its latest state."""

    table: ClassVar[str] = "alerts"
    primary_key: ClassVar[tuple[str, ...]] = ("fingerprint", "starts_at")
    fingerprint: str
    rule: str
    company_id: str
    counterparty_id: str | None
    severity: str
    status: Literal["firing", "resolved"]
    starts_at: date
    ends_at: date | None
    evidence: dict[str, Any]
    labels: dict[str, Any]
    annotations: dict[str, Any]
    updated_at: datetime


class AlertChangeRow(Stored):
    """``alert_history``: every published alert state change, once."""

    table: ClassVar[str] = "alert_history"
    primary_key: ClassVar[tuple[str, ...]] = ("change_id",)
    change_id: str = Field(description="hash of the instance, the change and the state it announces (severity, status, end)")
    fingerprint: str
    starts_at: date
    change: str
    severity: str
    status: str
    ends_at: date | None
    previous_starts_at: date | None
    recorded_at: datetime
    message: dict[str, Any]


class DeadLetterRow(Stored):
    """``dead_letters``: input that broke SPEC §2, with the reason. Nothing is dropped silently."""

    table: ClassVar[str] = "dead_letters"
    primary_key: ClassVar[tuple[str, ...]] = ("dead_letter_id",)
    dead_letter_id: str = Field(description="hash of origin and raw line: a redelivery is not a second row")
    received_at: datetime
    origin: str
    raw: str
    error: str
    batch_id: str | None = Field(default=None, description="the backfill that brought it (none for live input)")


class BackfillRow(Stored):
    """``backfills``: a finished backfill and its summary."""

    table: ClassVar[str] = "backfills"
    primary_key: ClassVar[tuple[str, ...]] = ("batch_id",)
    batch_id: str
    finished_at: datetime
    summary: dict[str, Any]


class SinkOffsetRow(Stored):
    """``sink_offsets``: the next offset per topic partition, committed with the rows it covers."""

    table: ClassVar[str] = "sink_offsets"
    primary_key: ClassVar[tuple[str, ...]] = ("run_id", "topic", "partition")
    run_id: str = Field(description="names the logs the offsets point into: one embedded broker's lifetime, or one"
                        " incarnation of the topics on a cluster (their topic ids)")
    topic: str
    partition: int
    next_offset: int


TABLES: tuple[type[Stored], ...] = (EventRow, IndicatorRow, AlertRow, AlertChangeRow, DeadLetterRow, BackfillRow, SinkOffsetRow)

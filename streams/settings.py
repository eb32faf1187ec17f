"""One typed settings object for every command: environment variables (``AISIGNALS_*``) and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A setting's value (flag or environment variable) is not valid; the message is one line."""


class Settings(BaseSettings):
    """Everything configurable. CLI flags override environment variables, which override defaults."""

    model_config = SettingsConfigDict(env_prefix="AISIGNALS_", extra="ignore")

    bootstrap: str | None = Field(
        default=None, description="HOST:PORT of an existing Kafka cluster; unset = start the embedded broker"
    )
    db: Path = Field(default=Path("aisignals.duckdb"), description="DuckDB file the sink writes")
    partitions: int = Field(default=4, ge=1, le=64, description="partitions of the company-keyed topics")
    topic_prefix: str = Field(default="aisignals", description="prefix of every topic name")
    lateness_days: float = Field(default=7.0, ge=0, description="allowed lateness behind the greatest event time")
    windows: tuple[int, ...] = Field(default=(30, 90), description="indicator window lengths in days")
    rules_file: Path | None = Field(default=None, description="alert rules TOML; unset = the shipped defaults")
    aliases_file: Path | None = Field(default=None, description="extra company aliases TOML, merged over the shipped table")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of `aisignals up` / `serve`")
    flush_rows: int = Field(default=20_000, ge=1, description="sink: flush after this many buffered records")
    flush_seconds: float = Field(default=0.5, gt=0, description="sink: flush at least this often")
    bulk_flush_rows: int = Field(default=200_000, ge=1, description="sink during a backfill: flush after this many"
                                 " buffered records (each flush rewrites the file's indexes: fewer, larger ones)")
    bulk_flush_seconds: float = Field(default=3.0, gt=0, description="sink during a backfill: flush at least this often")
    host: str = Field(default="127.0.0.1", description="HTTP bind address (without a token only loopback is allowed)")
    token: str | None = Field(default=None, description="bearer token for POST /v1/events and /v1/query", repr=False)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="largest accepted HTTP request body")
    rate_limit_per_second: float = Field(default=50.0, gt=0, description="POST requests per second per client")
    rate_limit_burst: int = Field(default=100, ge=1, description="POST requests a client may burst")
    sse_max_connections: int = Field(default=2000, ge=1, description="open alert streams (/v1/alerts/stream) in all; 503 past it")
    sse_max_per_client: int = Field(default=100, ge=1, description="open alert streams per client address; 503 past it")
    sse_buffer: int = Field(default=5000, ge=100, description="recent alert changes kept in memory for Last-Event-ID resumes")
    query_timeout_seconds: float = Field(default=5.0, gt=0, description="ad-hoc SQL is interrupted after this")
    query_max_rows: int = Field(default=10_000, ge=1, description="ad-hoc SQL returns at most this many rows")
    webhooks_file: Path | None = Field(default=None, description="TOML file of webhook receivers ([[webhook]] url, secret, filters)")
    alertmanager_url: str | None = Field(default=None, description="push alerts to this Alertmanager (…/api/v2/alerts)")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="/metrics port of `worker` and `sink` (the HTTP server has its own)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how every Kafka client connects")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle to verify the brokers")
    kafka_ssl_certfile: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(default=None, repr=False, description="client key (mutual TLS)")
    kafka_compression: Literal["none", "snappy", "lz4", "zstd", "gzip"] = Field(
        default="snappy", description="codec of the record batches the pipeline's stages produce (not the input"
        " sent to the ingest topic): docs/performance.md, \"Compression\"")
    log_dir: Path | None = Field(default=None, description="where the embedded broker log goes; unset = beside the DB")

    def producer_kwargs(self) -> dict:
        """What the stages' producers (aiokafka) add to their client keyword arguments."""
        return {} if self.kafka_compression == "none" else {"compression_type": self.kafka_compression}

    def log_path(self) -> Path:
        base = self.log_dir if self.log_dir is not None else self.db.parent
        return base / f"{self.db.name}.broker.log"


def load_settings(**flags) -> Settings:
    """Environment variables, overridden by the flags given (None = not given); an invalid value is one
    ``SettingsError`` naming the setting and its environment variable."""
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))} (AISIGNALS_{str(e['loc'][0]).upper()}): {e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise SettingsError("invalid setting " + "; ".join(problems)) from None

"""The ``aisignals`` command line. Every failure is one readable line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

from aisignals.children import spawn_early  # imports little

spawn_early(sys.argv[1:])  # a backfill's child processes import their parts beside this module's imports
# everything below is imported after that spawn
import asyncio
import os
from enum import Enum
from pathlib import Path
from typing import List, Optional

import orjson
import typer
from typer._click import exceptions as cli_errors  # Typer vendors its own click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aisignals.runtime import one_malloc_arena
from processors.alerts import alert_matches
from processors.rules import RulesFileError, load_rules
from sinks.database import SinkError
from sinks.query import QueryError, run_query, to_csv, to_json
from streams.broker import BrokerError
from sinks.delivery import WebhookConfigError
from streams.adapters import MappingError
from streams.admin import TopicLayoutError
from streams.companies import AliasFileError
from streams.events import json_schema
from streams.producer import ProduceError
from streams.reader import InputFileError, check_readable, replay_order
from streams.settings import Settings, SettingsError
from streams.settings import load_settings as settings_from  # env vars, overridden by the flags given
from streams.sources.config import SourcesFileError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ai-signals: AI-industry events in, event-time indicators and alerts out, in DuckDB.")
console = Console()
err = Console(stderr=True)

KNOWN_ERRORS = (BrokerError, SinkError, InputFileError, RulesFileError, AliasFileError, ProduceError, QueryError,
                TopicLayoutError, TimeoutError, MappingError, WebhookConfigError, SourcesFileError, SettingsError, OSError)


def bootstrap_option():
    return typer.Option(..., "--bootstrap", envvar="AISIGNALS_BOOTSTRAP", help="HOST:PORT of the Kafka broker")


def db_option(help_text: str = "DuckDB file"):
    return typer.Option(Path("aisignals.duckdb"), "--db", envvar="AISIGNALS_DB", help=help_text)


def partitions_option():
    return typer.Option(None, "--partitions", min=1, max=64, help="partitions of company-keyed topics")


def sse_max_connections_option():
    return typer.Option(None, "--sse-max-connections", min=1,
                        help="open alert streams in all (env AISIGNALS_SSE_MAX_CONNECTIONS, default 2000); 503 past it")


def sse_max_per_client_option():
    return typer.Option(None, "--sse-max-per-client", min=1,
                        help="open alert streams per client address (env AISIGNALS_SSE_MAX_PER_CLIENT, default 100); 503 past it")


class InputFormat(str, Enum):
    jsonl = "jsonl"
    epoch = "epoch"
    aiwatch = "aiwatch"
    layoffs = "layoffs"
    csv = "csv"


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def read_items(files: list[Path], fmt: InputFormat, mapping=None):
    """Replay items of the files, and the adapter's row accounting (None for JSONL)."""
    if fmt is InputFormat.jsonl:
        from aisignals.children import read_jsonl

        return read_jsonl(files), None
    from functools import partial

    from streams.adapters import ADAPTERS, Accounting, csv_events
    from streams.reader import RawLine

    acc = Accounting()
    adapter = partial(csv_events, mapping=mapping) if fmt is InputFormat.csv else ADAPTERS[fmt.value]
    lines = (RawLine(origin, orjson.dumps(event)) for path in files for origin, event in adapter(path, acc))
    return replay_order(lines), acc  # the lines are consumed (and ``acc`` filled) before this returns


def load_input(files, fmt: InputFormat, maps, kind, date_format, mapping_file, sets=()):
    """Readable files → replay items in order; adapters print their row accounting."""
    paths = check_readable(files)
    mapping = None
    if fmt is InputFormat.csv:
        from streams.adapters import CsvMapping

        mapping = CsvMapping.parse(maps, kind, date_format, mapping_file, list(sets))
    items, accounting = read_items(paths, fmt, mapping)
    if accounting is not None:
        print_accounting(accounting)
    return items


def pipeline_topics(bootstrap: str, settings: Settings):
    """The pipeline's topics, made on the broker with their partition counts (or checked) before a part that
    is not the pipeline uses them: it may start first, and no client creates a topic by naming it."""
    from streams.admin import ensure_topics
    from streams.security import kafka_python_kwargs
    from streams.topics import Topics

    topics = Topics(settings.topic_prefix, settings.partitions)
    ensure_topics(bootstrap, topics, kafka_python_kwargs(settings))
    return topics


def print_accounting(acc) -> None:
    table = Table(title="input rows", show_header=False)
    table.add_row("rows", str(acc.rows))
    table.add_row("used", str(acc.used))
    for reason, n in acc.skipped.most_common():
        table.add_row(f"skipped: {reason}", str(n))
    for kind, n in sorted(acc.events.items()):
        table.add_row(f"{kind} events", str(n))
    console.print(table)


@app.command()
def backfill(
    files: List[Path] = typer.Argument(..., help="input files, merged and replayed in occurred_at order"),
    db: Path = typer.Option(..., "--db", help="DuckDB file to write"),
    fmt: InputFormat = typer.Option(InputFormat.jsonl, "--format", help="input format"),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="HOST:PORT of a Kafka cluster (default: embedded broker)"),
    partitions: Optional[int] = typer.Option(None, "--partitions", min=1, max=64, help="partitions of company-keyed topics"),
    rules: Optional[Path] = typer.Option(None, "--rules", help="alert rules TOML (backtesting)"),
    lateness_days: Optional[float] = typer.Option(None, "--lateness-days", min=0, help="allowed lateness"),
    maps: List[str] = typer.Option([], "--map", help="csv: FIELD=COLUMN (repeatable), e.g. --map company=org"),
    kind: Optional[str] = typer.Option(None, "--kind", help="csv: the kind of every row"),
    date_format: Optional[str] = typer.Option(None, "--date-format", help="csv: strptime format of occurred_at"),
    mapping_file: Optional[Path] = typer.Option(None, "--mapping", help="csv: TOML file with [columns], [set], kind, date_format"),
    sets: List[str] = typer.Option([], "--set", help="csv: FIELD=VALUE on every row (repeatable), e.g. --set reason=layoff"),
    webhooks: Optional[Path] = typer.Option(None, "--webhooks", help="TOML file of webhook receivers to notify"),
) -> None:
    """Replay files through the streaming pipeline, wait until everything is written, print a summary."""
    from aisignals.pipeline import backfill as run_backfill, check_db_writable
    from aisignals.runtime import quiet_logs

    quiet_logs()
    settings = settings_from(db=db, bootstrap=bootstrap, partitions=partitions, rules_file=rules, lateness_days=lateness_days,
                             webhooks_file=webhooks)
    from sinks.delivery import load_receivers

    load_receivers(settings.webhooks_file)
    check_db_writable(settings.db)
    rule_set = load_rules(settings.rules_file)
    check_readable(files)  # before anything starts
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("replaying", total=None)

        def load():  # read and ordered while the broker and the stream processors start
            items = load_input(files, fmt, maps, kind, date_format, mapping_file, sets)
            progress.update(task, total=len(items))
            return items

        summary = asyncio.run(run_backfill(settings, load, lambda n: progress.advance(task, n), rule_set,
                                           reads_elsewhere=fmt is InputFormat.jsonl))
    names, rows = run_query(settings.db, "SELECT (SELECT count(*) FROM indicators), (SELECT count(*) FROM alerts)")
    summary.indicator_rows, summary.alerts = rows[0]
    table = Table(title=f"backfill → {settings.db}", show_header=False)
    for label, value in [
        ("lines", summary.lines), ("accepted", summary.accepted), ("duplicates", summary.duplicates),
        ("late", summary.late), ("dead letters", summary.dead_letters),
        ("indicator rows (table)", summary.indicator_rows), ("alert instances (table)", summary.alerts),
        ("seconds", f"{summary.seconds:.1f}"), ("events/s", f"{summary.events_per_second:,.0f}"),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    leave_without_teardown()


_without_teardown = False


def leave_without_teardown() -> None:
    """After a backfill the process holds millions of small objects (the stream processors' state);
    freeing them one by one at interpreter exit takes seconds (2 s at 300k events) and serves
    nobody: everything is written and closed. ``main`` then ends the process at once."""
    global _without_teardown
    _without_teardown = True


@app.command()
def up(
    db: Path = typer.Option(Path("aisignals.duckdb"), "--db", help="DuckDB file"),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="HOST:PORT of a Kafka cluster (default: embedded broker)"),
    no_demo: bool = typer.Option(False, "--no-demo", help="do not replay the bundled data nor feed live events"),
    seconds: Optional[float] = typer.Option(None, "--for", min=1, help="stop after this many seconds"),
    rate: float = typer.Option(20.0, "--rate", min=0,
                               help="synthetic events a second (fictional organisations) after the replay; 0 = none"),
    partitions: Optional[int] = partitions_option(),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="HTTP port (0 = any free port)"),
    host: Optional[str] = typer.Option(None, "--host", help="HTTP bind address (needs a token unless loopback)"),
    webhooks: Optional[Path] = typer.Option(None, "--webhooks", help="TOML file of webhook receivers"),
    alertmanager: Optional[str] = typer.Option(None, "--alertmanager", help="Alertmanager base URL to push alerts to"),
    sse_max_connections: Optional[int] = sse_max_connections_option(),
    sse_max_per_client: Optional[int] = sse_max_per_client_option(),
    sources: Optional[Path] = typer.Option(None, "--sources", help="SOURCES.toml: poll these live sources too"),
) -> None:
    """The whole pipeline on one machine: broker, worker, sink, replay of the bundled real data, live trickle."""
    from aisignals.live import run_up
    from aisignals.pipeline import check_db_writable
    from aisignals.runtime import quiet_logs

    quiet_logs()
    settings = settings_from(db=db, bootstrap=bootstrap, partitions=partitions, port=port, host=host,
                             webhooks_file=webhooks, alertmanager_url=alertmanager,
                             sse_max_connections=sse_max_connections, sse_max_per_client=sse_max_per_client)
    from sinks.delivery import load_receivers

    load_receivers(settings.webhooks_file)  # a malformed file fails here, in one line
    check_db_writable(settings.db)
    from streams.sources.config import load_sources

    watched = load_sources(sources) if sources is not None else None
    asyncio.run(run_up(settings, not no_demo, seconds, rate, console, watched))


@app.command()
def watch(
    sources_file: Path = typer.Argument(..., metavar="SOURCES.toml", help="the live sources to poll"),
    db: Path = typer.Option(Path("aisignals.duckdb"), "--db", envvar="AISIGNALS_DB", help="DuckDB file to write"),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="HOST:PORT of a Kafka cluster (default: embedded broker)"),
    once: bool = typer.Option(False, "--once", help="poll every source once, wait until written, print a summary"),
    partitions: Optional[int] = partitions_option(),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535, help="serve /metrics here"),
) -> None:
    """Poll live sources (Hugging Face Hub, Epoch AI, SEC Form D) and feed what is new to the pipeline."""
    from aisignals.pipeline import check_db_writable
    from aisignals.runtime import quiet_logs
    from aisignals.watch import run_watch
    from streams.sources.config import load_sources

    quiet_logs()
    config = load_sources(sources_file)
    settings = settings_from(db=db, bootstrap=bootstrap, partitions=partitions)
    check_db_writable(settings.db)
    reports = asyncio.run(run_watch(settings, config, once, err, metrics_port))
    for r in reports:  # --once: one summary line per source
        failures = sum(1 for e in r.errors if e.kind != "invalid_item")
        console.print(f"{r.name} ({r.type}): {r.fetched} fetched, {r.new} new events, {r.unchanged} unchanged,"
                      f" {r.skipped} skipped, {r.dead_letters} dead letters, {failures} errors",
                      soft_wrap=True, markup=False, highlight=False)


@app.command()
def produce(
    files: List[Path] = typer.Argument(..., help="input files"),
    bootstrap: str = bootstrap_option(),
    fmt: InputFormat = typer.Option(InputFormat.jsonl, "--format", help="input format"),
    partitions: Optional[int] = partitions_option(),
    maps: List[str] = typer.Option([], "--map", help="csv: FIELD=COLUMN (repeatable)"),
    kind: Optional[str] = typer.Option(None, "--kind", help="csv: the kind of every row"),
    date_format: Optional[str] = typer.Option(None, "--date-format", help="csv: strptime format of occurred_at"),
    mapping_file: Optional[Path] = typer.Option(None, "--mapping", help="csv: TOML mapping file"),
    sets: List[str] = typer.Option([], "--set", help="csv: FIELD=VALUE on every row (repeatable)"),
) -> None:
    """Send events to the ingest topic with kafka-python (key = company_id, timestamp = occurred_at)."""
    from aisignals.runtime import quiet_logs
    from streams.broker import check_reachable
    from streams.companies import normalizer
    from streams.producer import EventProducer
    from streams.security import kafka_python_kwargs

    quiet_logs()
    check_reachable(bootstrap)
    settings = settings_from(bootstrap=bootstrap, partitions=partitions)
    items = load_input(files, fmt, maps, kind, date_format, mapping_file, sets)
    topics = pipeline_topics(bootstrap, settings)
    producer = EventProducer(bootstrap, topics, normalizer(settings.aliases_file), **kafka_python_kwargs(settings))
    try:
        sent = producer.send_all(items)
        producer.flush()
    finally:
        producer.close()
    console.print(f"sent {sent} records to {topics.ingest}")


@app.command()
def worker(
    bootstrap: str = bootstrap_option(),
    db: Path = db_option("DuckDB file to restore state from"),
    partitions: Optional[int] = partitions_option(),
    rules: Optional[Path] = typer.Option(None, "--rules", help="alert rules TOML"),
    metrics_port: int = typer.Option(9101, "--metrics-port", min=0, max=65535, help="port of /metrics"),
) -> None:
    """The Faust stream processors on their own (a consumer group: start several to share partitions)."""
    from aisignals.pipeline import run_parts
    from aisignals.runtime import quiet_logs

    quiet_logs()
    settings = settings_from(bootstrap=bootstrap, db=db, partitions=partitions, rules_file=rules,
                             metrics_port=metrics_port)
    load_rules(settings.rules_file)
    asyncio.run(run_parts(settings, worker=True, sink=False, console=console))


@app.command()
def sink(
    bootstrap: str = bootstrap_option(),
    db: Path = db_option("DuckDB file to write"),
    partitions: Optional[int] = partitions_option(),
    webhooks: Optional[Path] = typer.Option(None, "--webhooks", help="TOML file of webhook receivers"),
    alertmanager: Optional[str] = typer.Option(None, "--alertmanager", help="Alertmanager base URL"),
    metrics_port: int = typer.Option(9102, "--metrics-port", min=0, max=65535, help="port of /metrics"),
) -> None:
    """The DuckDB sink (and alert delivery) on its own: the single writer of the DuckDB file."""
    from aisignals.pipeline import check_db_writable, run_parts
    from aisignals.runtime import quiet_logs

    quiet_logs()
    settings = settings_from(bootstrap=bootstrap, db=db, partitions=partitions, webhooks_file=webhooks,
                             alertmanager_url=alertmanager, metrics_port=metrics_port)
    check_db_writable(settings.db)
    asyncio.run(run_parts(settings, worker=False, sink=True, console=console))


@app.command()
def serve(
    bootstrap: str = bootstrap_option(),
    db: Path = db_option("DuckDB file the sink writes"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535),
    host: Optional[str] = typer.Option(None, "--host", help="bind address (needs a token unless loopback)"),
    partitions: Optional[int] = partitions_option(),
    sse_max_connections: Optional[int] = sse_max_connections_option(),
    sse_max_per_client: Optional[int] = sse_max_per_client_option(),
) -> None:
    """The HTTP server on its own, next to a worker and a sink that run elsewhere."""
    import uvicorn

    from aisignals.pipeline import bind_host
    from aisignals.runtime import quiet_logs
    from sinks.database import Database
    from sinks.http import create_app
    from streams.broker import check_reachable, wait_for_port
    from streams.companies import normalizer
    from streams.security import aiokafka_kwargs

    quiet_logs()
    settings = settings_from(bootstrap=bootstrap, db=db, port=port, host=host, partitions=partitions,
                             sse_max_connections=sse_max_connections, sse_max_per_client=sse_max_per_client)
    check_reachable(bootstrap)
    topics = pipeline_topics(bootstrap, settings)
    bind, note = bind_host(settings)
    if note:
        err.print(note)
    h, _, p = bootstrap.rpartition(":")

    def ready():
        broker = wait_for_port(h, int(p), 0.5)
        sink = settings.db.exists()
        parts = {"broker": broker, "sink": sink}
        if not broker:
            parts["reason"] = f"cannot reach the Kafka broker at {bootstrap}"
        elif not sink:
            parts["reason"] = f"no DuckDB file at {settings.db} yet (the sink has not written it)"
        return broker and sink, parts

    from sinks.dashboard import with_dashboard
    from sinks.metrics import register

    register("http", readiness=ready)  # build info and readiness on /metrics, as the other processes have

    database, companies = Database(settings.db), normalizer(settings.aliases_file)
    api = with_dashboard(create_app(settings, bootstrap, topics, database, companies, ready, aiokafka_kwargs(settings)),
                         database, companies, ready)
    console.print(f"ai-signals HTTP on http://{bind}:{settings.port}/ (broker {bootstrap}, DuckDB {settings.db})", soft_wrap=True)
    uvicorn.run(api, host=bind, port=settings.port, log_level="warning")


@app.command()
def query(
    sql: str = typer.Argument(..., help="one read-only SQL statement"),
    db: Path = db_option("DuckDB file"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, csv or json"),
    max_rows: int = typer.Option(10_000, "--max-rows", min=1, help="row cap"),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="seconds before the query is cancelled"),
) -> None:
    """Run one read-only SELECT against the DuckDB file (sandboxed: no files, network or extensions)."""
    names, rows = run_query(db, sql, max_rows=max_rows, timeout=timeout)
    if fmt is OutputFormat.csv:
        sys.stdout.write(to_csv(names, rows))
    elif fmt is OutputFormat.json:
        sys.stdout.write(to_json(names, rows) + "\n")
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)


@app.command()
def generate(
    output: Path = typer.Option(Path("-"), "--output", "-o", help="JSONL file to write ('-' = stdout)"),
    scenario: str = typer.Option("steady", "--scenario", help="steady, talent-war or conformance-mix"),
    events: int = typer.Option(10_000, "--events", min=1, help="number of events"),
    seed: int = typer.Option(1, "--seed", help="random seed: the same seed gives the same file"),
    start: str = typer.Option("2024-01-01", "--start", help="first day (YYYY-MM-DD)"),
    days: int = typer.Option(365, "--days", min=1, help="days covered"),
) -> None:
    """Write synthetic SPEC §2 events about fictional organisations (deterministic for a seed)."""
    from datetime import date

    from streams.synthetic import SCENARIOS, generate as make

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    try:
        first = date.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter(f"not a date: {start!r}", param_hint="--start") from None
    out = sys.stdout.buffer if str(output) == "-" else open(output, "wb")
    try:
        for event in make(scenario, events, seed, first, days):
            out.write(orjson.dumps(event) + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()


alerts_app = typer.Typer(no_args_is_help=True, help="Alert instances: list them, explain one with its evidence.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    db: Path = db_option("DuckDB file"),
    status: Optional[str] = typer.Option(None, "--status", help="firing or resolved"),
    rule: Optional[str] = typer.Option(None, "--rule", help="talent_drain, talent_poaching, workforce_reduction, funding_surge, release_burst, hiring_spree"),
    company: Optional[str] = typer.Option(None, "--company", help="company name or id"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """Alert instances, newest first."""
    from streams.companies import normalizer

    where, params = [], []
    if status:
        where.append("status = ?"); params.append(status)
    if rule:
        where.append("rule = ?"); params.append(rule)
    if company:
        cid = normalizer(settings_from().aliases_file).company_id(company)  # the user's aliases too
        where.append("(company_id = ? OR counterparty_id = ?)"); params += [cid] * 2
    sql = ("SELECT fingerprint, rule, company_id, coalesce(counterparty_id, '') AS counterparty, severity, status,"
           " starts_at, ends_at, evidence->>'count' AS evidence, annotations->>'summary' AS why FROM alerts"
           + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY starts_at DESC, rule LIMIT {limit}")
    names, rows = run_query(db, sql, params=params)
    table = Table(*names, title=f"alerts in {db}")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    # piped into a file or another program, a listing is not squeezed into 80 columns
    (console if console.is_terminal else Console(width=240)).print(table)


@alerts_app.command("explain")
def alerts_explain(
    fingerprint: str = typer.Argument(..., help="the alert's fingerprint (from `alerts list`)"),
    db: Path = db_option("DuckDB file"),
) -> None:
    """One alert's instances and the evidence events behind them, read from DuckDB."""
    names, rows = run_query(db, "SELECT rule, company_id, counterparty_id, severity, status, starts_at, ends_at,"
                                " annotations->>'summary', evidence FROM alerts WHERE fingerprint = ? ORDER BY starts_at",
                            params=[fingerprint])
    if not rows:
        raise QueryError(f"no alert with fingerprint {fingerprint!r} in {db}")
    for rule, company, counterparty, severity, status, starts, ends, summary, evidence in rows:
        ev = orjson.loads(evidence)
        console.print(f"[bold]{rule}[/bold] {company}{' → ' + counterparty if counterparty else ''}: {severity}, {status},"
                      f" {starts} → {ends or 'still firing'}")
        console.print(f"  {summary}")
        _, events = run_query(
            db, "SELECT event_id, kind, company, occurred_at::DATE AS day, headcount, seniority, reason,"
                " payload->>'to_company' AS to_company, amount_usd, model_name FROM events"
                " WHERE event_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY occurred_at", params=[ev["event_ids"]])
        table = Table("event_id", "kind", "company", "day", "headcount", "seniority", "reason", "to", "amount_usd", "model",
                      title=f"evidence: {len(ev['event_ids'])} of {ev['count']} events in the window on {starts}")
        for row in events:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)


@alerts_app.command("tail")
def alerts_tail(
    bootstrap: str = bootstrap_option(),
    rule: Optional[str] = typer.Option(None, "--rule"),
    severity: Optional[str] = typer.Option(None, "--severity"),
    company: Optional[str] = typer.Option(None, "--company"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the oldest retained alert"),
    partitions: Optional[int] = partitions_option(),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="stop after this many alerts"),
    idle: Optional[float] = typer.Option(None, "--idle", min=0.1, help="stop after this many seconds without alerts"),
) -> None:
    """Follow alert state changes on the alerts topic (one JSON line each)."""
    from streams.broker import check_reachable
    from streams.companies import normalizer
    from streams.security import aiokafka_kwargs
    from streams.topics import CONTROL

    check_reachable(bootstrap)
    settings = settings_from(partitions=partitions)
    topics = pipeline_topics(bootstrap, settings)
    company_id = normalizer(settings.aliases_file).company_id(company) if company else None

    async def follow() -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    **aiokafka_kwargs(settings))
        await consumer.start()
        try:
            tps = [TopicPartition(topics.alerts, p) for p in range(topics.partitions)]
            consumer.assign(tps)
            for tp in tps:
                await (consumer.seek_to_beginning(tp) if from_beginning else consumer.seek_to_end(tp))
            seen, quiet_since = 0, asyncio.get_running_loop().time()
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                now = asyncio.get_running_loop().time()
                if not batch and idle is not None and now - quiet_since > idle:
                    return
                for messages in batch.values():
                    for m in messages:
                        quiet_since = now
                        if any(k == CONTROL for k, _ in (m.headers or ())):
                            continue
                        a = orjson.loads(m.value)
                        if not alert_matches(a, (rule,) if rule else (), (severity,) if severity else (),
                                             (company_id,) if company_id else ()):
                            continue
                        sys.stdout.write(orjson.dumps({k: a[k] for k in (
                            "status", "change", "rule", "company_id", "counterparty_id", "severity", "starts_at",
                            "ends_at", "fingerprint")} | {"summary": a["annotations"]["summary"]}).decode() + "\n")
                        sys.stdout.flush()
                        seen += 1
                        if count is not None and seen >= count:
                            return
        finally:
            await consumer.stop()

    asyncio.run(follow())


@app.command()
def schema() -> None:
    """Print the JSON Schema of the event wire format (derived from the pydantic models)."""
    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"aisignals: {' '.join(message.split())}\n")
    sys.exit(code)


def main() -> None:
    """Entry point: turn every expected failure into one line on stderr."""
    one_malloc_arena()  # before any thread allocates
    try:
        app(standalone_mode=False)
        if _without_teardown:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    except cli_errors.UsageError as exc:
        fail(f"error: {exc.format_message()}", 2)
    except typer.Abort:
        fail("interrupted", 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except cli_errors.ClickException as exc:
        fail(f"error: {exc.format_message()}", 2)
    except KNOWN_ERRORS as exc:
        fail(f"error: {exc}", 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()

"""``aisignals up``: the whole pipeline on one machine, a replay of the bundled real data, then a live trickle."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
from rich.console import Group
from rich.live import Live
from rich.table import Table

from aisignals.pipeline import Pipeline, ReadinessReport, bind_host
from streams.adapters import Accounting, aiwatch_events, epoch_events
from streams.reader import RawLine, ReplayPlan, replay_order
from streams.settings import Settings
from streams.synthetic import steady

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "data" / "real"


def bundled_items() -> tuple[ReplayPlan, Accounting]:
    acc = Accounting()
    lines = [RawLine(o, orjson.dumps(e)) for o, e in epoch_events(REAL / "epoch_notable_ai_models.csv", acc)]
    lines += [RawLine(o, orjson.dumps(e)) for o, e in aiwatch_events(REAL / "aiwatch_positions.csv", acc)]
    return replay_order(lines), acc


def trickle(n: int, seed: int) -> ReplayPlan:
    """Live synthetic events stamped with the current time."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    events = list(steady(n, seed, now.date(), 1, companies=40))
    lines = []
    for e in events:
        e["event_id"] = f"live-{seed}-{e['event_id']}"
        e["occurred_at"] = now.isoformat().replace("+00:00", "Z")
        lines.append(RawLine("live", orjson.dumps(e)))
    return replay_order(lines)


def view(pipeline: Pipeline, started: float) -> Group:
    with pipeline.sink.db.reader() as cur:
        events, dead = cur.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters)").fetchone()
        drain = cur.execute(
            "SELECT company_id, attrition, hires, round(talent_drain_ratio, 2) FROM indicators i "
            "WHERE window_days = 90 AND window_end = (SELECT max(window_end) FROM indicators j "
            "WHERE j.company_id = i.company_id AND j.window_days = 90) AND attrition >= 3 "
            "ORDER BY talent_drain_ratio DESC, attrition DESC LIMIT 8").fetchall()
        alerts = cur.execute("SELECT rule, company_id, coalesce(counterparty_id, ''), severity, status, starts_at "
                             "FROM alerts ORDER BY updated_at DESC, starts_at DESC LIMIT 8").fetchall()
    elapsed = max(time.monotonic() - started, 1e-9)
    head = Table(show_header=False, title="ai-signals")
    head.add_row("events stored", f"{events:,}")
    head.add_row("events/s (since start)", f"{events / elapsed:,.0f}")
    head.add_row("dead letters", f"{dead:,}")
    top = Table("company", "left, not laid off (90d)", "hires (90d)", "drain ratio", title="top talent drain (latest 90-day row)")
    for row in drain:
        top.add_row(*(str(v) for v in row))
    latest = Table("rule", "company", "counterparty", "severity", "status", "starts", title="latest alerts")
    for row in alerts:
        latest.add_row(*(str(v) for v in row))
    return Group(head, top, latest)


async def run_up(settings: Settings, demo: bool, seconds: float | None, rate: float, console) -> None:
    pipeline = Pipeline(settings, live=True)
    await asyncio.to_thread(pipeline.start_broker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    try:
        await pipeline.start()
        host, note = bind_host(settings)
        if note:
            console.print(note)
        http = await pipeline.serve_http(host, settings.port)
        console.print(f"ai-signals is up: dashboard {http.url} · broker {pipeline.bootstrap} · DuckDB {settings.db} (Ctrl-C stops)",
                      soft_wrap=True)

        async def feed() -> None:
            if demo:
                items, acc = await asyncio.to_thread(bundled_items)
                await pipeline.replay(items)
                seed = 0
                while not stop.is_set():
                    seed += 1
                    await pipeline.replay(trickle(max(1, int(rate)), seed))
                    await asyncio.sleep(1.0)

        feeder = asyncio.create_task(feed())
        deadline = None if seconds is None else time.monotonic() + seconds
        report = ReadinessReport(lambda line: console.print(line, soft_wrap=True))
        checking: asyncio.Task | None = None  # referenced, so the task is not collected mid-run
        with Live(view(pipeline, started), console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()
                failed = pipeline.sink_failed()
                if failed is not None:
                    raise failed
                await asyncio.wait({asyncio.ensure_future(stop.wait())}, timeout=1.0)
                if report.update(*await asyncio.to_thread(pipeline.readiness)) and pipeline.broker is None:
                    checking = asyncio.create_task(pipeline.check_topics())  # a --bootstrap broker is back
                try:
                    live.update(view(pipeline, started))
                except Exception as exc:  # noqa: BLE001 - the view must not take the service down
                    console.print(f"view not updated: {exc}", soft_wrap=True)
        stop.set()
        feeder.cancel()
        try:
            await feeder
        except (asyncio.CancelledError, Exception):
            pass
    finally:
        if "http" in locals():
            await http.stop()
        await pipeline.stop()
        pipeline.stop_broker()
    console.print("ai-signals stopped; the DuckDB file is closed and usable.")

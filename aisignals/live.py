"""``aisignals up``: the whole pipeline on one machine, a replay of the bundled real data, then a live trickle."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from datetime import datetime, timezone
from importlib import resources
from typing import Iterator

import orjson
from rich.console import Group
from rich.live import Live
from rich.table import Table

from aisignals.pipeline import Pipeline, ReadinessReport, bind_host
from sinks.dashboard import SYNTHETIC_SOURCE, snapshot
from streams.adapters import Accounting, aiwatch_events, epoch_events
from streams.reader import RawLine, ReplayPlan, replay_order
from streams.settings import Settings
from streams.synthetic import steady

BUNDLED = (("epoch_notable_ai_models.csv", epoch_events), ("aiwatch_positions.csv", aiwatch_events))


def bundled_events(acc: Accounting) -> Iterator[tuple[str, dict]]:
    """The bundled real data (package data of ``aisignals.data.real``) as (origin, event) pairs."""
    real = resources.files("aisignals.data.real")
    for name, adapter in BUNDLED:
        with resources.as_file(real.joinpath(name)) as path:
            yield from adapter(path, acc)


def bundled_items() -> tuple[ReplayPlan, Accounting]:
    acc = Accounting()
    lines = [RawLine(o, orjson.dumps(e)) for o, e in bundled_events(acc)]
    return replay_order(lines), acc


def trickle(n: int, seed: int) -> ReplayPlan:
    """Live synthetic events stamped with the current time, about fictional organisations only."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    events = list(steady(n, seed, now.date(), 1, companies=40))
    rng = random.Random(seed)
    lines = []
    stamp = now.strftime("%Y%m%dT%H%M%S")  # a later run on the same file makes new ids, not duplicates
    for e in events:
        e["event_id"] = f"live-{stamp}-{seed}-{e['event_id']}"
        e["source"] = SYNTHETIC_SOURCE
        if e["kind"] == "departure":  # why they left; now and then a fictional company cuts jobs
            if rng.random() < 0.004:
                e.update(reason="layoff", headcount=rng.randrange(40, 400), seniority="unknown", role="staff")
                e.pop("to_company", None)
            else:
                e["reason"] = rng.choice(["voluntary", "voluntary", "unknown"])
        e["occurred_at"] = now.isoformat().replace("+00:00", "Z")
        lines.append(RawLine("live", orjson.dumps(e)))
    return replay_order(lines)


def _name(company_id: str | None, synthetic: bool) -> str:
    """A company as the terminal view shows it: synthetic ones are marked."""
    return f"{company_id or ''} [magenta]\\[synthetic][/magenta]" if synthetic and company_id else (company_id or "")


def view(pipeline: Pipeline, started: float) -> Group:
    with pipeline.sink.db.reader() as con:
        s = snapshot(con, top=8, resolved=8)
    elapsed = max(time.monotonic() - started, 1e-9)
    head = Table(show_header=False, title="ai-signals")
    head.add_row("events stored", f"{s['events']:,} ({s['synthetic_events']:,} synthetic)")
    head.add_row("events/s (since start)", f"{s['events'] / elapsed:,.0f}")
    head.add_row("dead letters", f"{s['dead_letters']:,}")
    head.add_row("firing alerts", f"{s['firing']:,}")
    top = Table("company", "left, not laid off (90d)", "hires (90d)", "drain ratio", title="top talent drain (latest 90-day row)")
    for r in s["top_drain"]:
        top.add_row(_name(r["company_id"], r["synthetic"]), str(r["attrition"]), str(r["hires"]),
                    f"{r['talent_drain_ratio']:.2f}")
    cuts = Table("company", "layoffs (30d)", "attrition (30d)", title="workforce reductions (latest 30-day row)")
    for r in s["top_workforce"]:
        cuts.add_row(_name(r["company_id"], r["synthetic"]), str(r["layoffs"]), str(r["attrition"]))
    latest = Table("status", "rule", "company", "counterparty", "severity", "starts", "ends",
                   title="alerts (firing, then recently resolved)")
    for a in s["alerts"][:8]:
        latest.add_row(a["status"], a["rule"], _name(a["company_id"], a["synthetic"]),
                       a["counterparty_id"] or "", a["severity"], a["starts_at"], a["ends_at"] or "")
    return Group(head, top, cuts, latest)


async def run_up(settings: Settings, demo: bool, seconds: float | None, rate: float, console, sources=None) -> None:
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
                while rate > 0 and not stop.is_set():  # --rate 0: no synthetic trickle
                    seed += 1
                    await pipeline.replay(trickle(max(1, round(rate)), seed))
                    await asyncio.sleep(1.0)

        feeder = asyncio.create_task(feed())
        if sources is not None:  # live sources, beside the demo feed (SOURCES.toml)
            from aisignals.watch import watcher_for

            watcher = watcher_for(pipeline, pipeline.sink.db, settings, sources,
                                  lambda line: console.print(line, soft_wrap=True, markup=False))
            watching = asyncio.create_task(watcher.run(stop), name="sources")
        deadline = None if seconds is None else time.monotonic() + seconds
        report = ReadinessReport(lambda line: console.print(line, soft_wrap=True))
        checking: asyncio.Task | None = None  # referenced, so the task is not collected mid-run
        with Live(view(pipeline, started), console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()
                if sources is not None and watching.done() and watching.exception() is not None:
                    raise watching.exception()
                failed = pipeline.sink_failed()
                if failed is not None:
                    raise failed
                await asyncio.wait({asyncio.ensure_future(stop.wait())}, timeout=1.0)
                if report.update(*await asyncio.to_thread(pipeline.readiness)) and pipeline.broker is None:
                    checking = asyncio.create_task(pipeline.check_topics())  # a --bootstrap broker is back
                try:  # read in a thread: waiting on the file's lock or a checkpoint must not stall the event loop
                    live.update(await asyncio.to_thread(view, pipeline, started))
                except Exception as exc:  # noqa: BLE001 - the view must not take the service down
                    console.print(f"view not updated: {exc}", soft_wrap=True)
        stop.set()
        feeder.cancel()
        if sources is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watching
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

"""``aisignals watch``: live sources feeding the pipeline (embedded, or a cluster with ``--bootstrap``),
the same way ``backfill`` does: each delivery is a replay that is waited for until it is written."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from aisignals.pipeline import Pipeline
from sinks.database import Database
from sinks.metrics import register_sources, serve_metrics
from streams.reader import RawLine, replay_order
from streams.settings import Settings
from streams.sources.base import Item
from streams.sources.config import SourcesConfig
from streams.sources.runner import Report, SourceStats, Watcher


STOP_GRACE_SECONDS = 10.0


def state_dir(settings: Settings, config: SourcesConfig) -> Path:
    """Where the sources' cursors live: ``[watch].state_dir``, else beside the DuckDB file."""
    return config.watch.state_dir or Path(f"{settings.db}.sources")


def stored_ids(db: Database, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    with db.reader(sandboxed=False) as con:
        rows = con.execute("SELECT event_id FROM events WHERE event_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
    return {r[0] for r in rows}


def deliverer(pipeline: Pipeline, db: Database):
    """Items → one replay through the pipeline, waited for; returns the ids of the events it stored."""
    async def deliver(items: list[Item]) -> set[str]:
        ids = [i.event_id for i in items if i.event_id]
        before = await asyncio.to_thread(stored_ids, db, ids)
        await pipeline.replay(replay_order(RawLine(i.origin, i.raw) for i in items))
        return await asyncio.to_thread(stored_ids, db, ids) - before

    return deliver


def watcher_for(pipeline: Pipeline, db: Database, settings: Settings, config: SourcesConfig, say) -> Watcher:
    stats = SourceStats()
    register_sources(stats)
    return Watcher(config, state_dir(settings, config), deliverer(pipeline, db), say, stats)


async def run_watch(settings: Settings, config: SourcesConfig, once: bool, console,
                    metrics_port: int | None = None) -> list[Report]:
    """``--once``: poll every source once, wait until written, return the reports. Otherwise poll on
    each source's interval until SIGINT/SIGTERM."""
    pipeline = Pipeline(settings, sink_process=True, live=not once)
    await asyncio.to_thread(pipeline.start_broker)
    say = lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False)  # noqa: E731
    try:
        await pipeline.start()
        watcher = watcher_for(pipeline, Database(settings.db), settings, config, say)
        if once:
            return await watcher.once()
        if metrics_port:
            serve_metrics(metrics_port, settings.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        say(f"watching {len(watcher.sources)} sources (broker {pipeline.bootstrap}, DuckDB {settings.db}); Ctrl-C stops")
        task = asyncio.create_task(watcher.run(stop, lambda r: say(
            f"{r.name}: {r.fetched} fetched, {r.new} new events, {r.unchanged} unchanged, {r.dead_letters} dead letters")))
        while not stop.is_set() and not task.done():
            failed = pipeline.sink_failed()
            if failed is not None:
                raise failed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        stop.set()
        if task.done() and task.exception() is not None:
            raise task.exception()
        # a poll under way finishes first (its events may be stored already: its report is said and its
        # cursor kept), within STOP_GRACE_SECONDS
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=STOP_GRACE_SECONDS)
        return []
    finally:
        await pipeline.stop()
        pipeline.stop_broker()

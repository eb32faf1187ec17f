"""Wiring: the broker, the Faust worker, the DuckDB sink and the producer, in one process.

This is the embedded set-up used by ``backfill`` and ``up``; with ``--bootstrap`` the same parts
talk to an existing Kafka cluster instead of the embedded broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from processors.app import Worker
from processors.rules import RuleSet, load_rules
from sinks.database import SinkError
from sinks.delivery import Delivery, load_receivers
from sinks.database import Database
from sinks.duckdb_sink import DuckDBSink, load_worker_state, rollback_unfinished
from sinks.metrics import register, serve_metrics
from streams.broker import EmbeddedBroker, check_reachable, wait_for_port
from streams.companies import CompanyNormalizer, normalizer
from streams.producer import EventProducer, new_batch_id
from streams.reader import ReplayPlan
from streams.security import aiokafka_kwargs, faust_kwargs, kafka_python_kwargs
from streams.settings import Settings
from streams.topics import Topics, ensure_topics

log = logging.getLogger("aisignals")


def quiet_logs(level: int = logging.WARNING) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(max(level, logging.ERROR))


def check_db_writable(db: Path) -> None:
    parent = Path(db).resolve().parent
    if not parent.exists():
        raise SinkError(f"cannot create DuckDB file {db}: directory {parent} does not exist")
    if Path(db).exists() and Path(db).is_dir():
        raise SinkError(f"cannot use {db} as a DuckDB file: it is a directory")


@dataclass
class Summary:
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    lines: int = 0
    indicator_rows: int = 0
    alerts: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


class Pipeline:
    """Broker (embedded or not) + worker + sink, started and stopped together."""

    def __init__(self, settings: Settings, rules: RuleSet | None = None,
                 companies: CompanyNormalizer | None = None, live: bool = False) -> None:
        self.settings = settings
        self.live = live
        self.rules = rules if rules is not None else load_rules(settings.rules_file)
        self.companies = companies if companies is not None else normalizer(settings.aliases_file)
        self.topics = Topics(settings.topic_prefix, settings.partitions)
        self.broker: EmbeddedBroker | None = None
        self.bootstrap: str | None = settings.bootstrap
        self.worker: Worker | None = None
        self.sink: DuckDBSink | None = None
        self._stop_sink = asyncio.Event()
        self._sink_task: asyncio.Task | None = None
        self._done: dict[str, asyncio.Future] = {}
        self.delivery: Delivery | None = None
        self._delivery_task: asyncio.Task | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start_broker(self) -> str:
        if self.bootstrap:
            check_reachable(self.bootstrap)
            run_id = f"kafka:{self.bootstrap}:{self.topics.prefix}"
        else:
            self.broker = EmbeddedBroker(self.settings.log_path())
            self.bootstrap = self.broker.start()
            run_id = f"embedded:{uuid.uuid4().hex}"
        ensure_topics(self.bootstrap, self.topics, kafka_python_kwargs(self.settings))
        self.run_id = run_id
        return self.bootstrap

    async def start(self, worker: bool = True, sink: bool = True) -> None:
        """Open the sink, restore the worker from what it committed, start both (or one of them)."""
        s = self.settings
        check_db_writable(s.db)
        if sink:
            self.sink = DuckDBSink(s.db, self.topics, self.companies, self.run_id, s.flush_rows, s.flush_seconds)
            self.sink.on_backfill.append(self._backfill_done)
        if worker:
            self.worker = Worker(self.bootstrap, self.topics, self.rules, self.companies, tuple(s.windows),
                                 s.lateness_days, broker_kwargs=faust_kwargs(s), live=self.live,
                                 client_kwargs=aiokafka_kwargs(s))
            database = self.sink.db if self.sink is not None else Database(s.db)
            # an interrupted backfill is rolled back, so that replaying it gives exactly a clean run's tables
            rebuild = rollback_unfinished(database) if self.sink is not None else False
            state = load_worker_state(database)
            pending = self.worker.restore(*state, rebuild=rebuild)
            await self.worker.start()
            for partition, rows, alerts in pending:
                if rows or alerts:
                    await self.worker.publish_now(partition, rows, alerts)
        if sink:
            self._sink_task = asyncio.create_task(self.sink.run(self.bootstrap, self._stop_sink, aiokafka_kwargs(s)),
                                                  name="sink")
            receivers = load_receivers(s.webhooks_file, self.companies.company_id)
            if receivers or s.alertmanager_url:
                self.delivery = Delivery(self.sink.db, receivers, s.alertmanager_url, f"http://{s.host}:{s.port}/")
                self.sink.after_flush.append(self.delivery.wake.set)
                self._delivery_task = asyncio.create_task(self.delivery.run(self._stop_sink), name="delivery")
        role = "all" if worker and sink else ("worker" if worker else "sink")
        register(role, self.worker, self.sink, self.delivery)

    async def stop(self, grace: float = 20.0) -> None:
        """Stop every part; each gets ``grace`` seconds (a dead broker must not hang the shutdown)."""
        self._stop_sink.set()
        if self.broker is not None and not self.broker.alive():
            grace = min(grace, 3.0)

        async def bounded(awaitable, what: str) -> None:
            try:
                await asyncio.wait_for(awaitable, grace)
            except asyncio.TimeoutError:
                log.warning("%s did not stop within %.0f s; abandoned", what, grace)
            except asyncio.CancelledError:
                pass

        if self._delivery_task is not None:
            await bounded(self._delivery_task, "alert delivery")
        if self._sink_task is not None:
            await bounded(self._sink_task, "the sink")
        if self.worker is not None:
            await bounded(self.worker.stop(), "the worker")
        if self.sink is not None:
            self.sink.close()

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def readiness(self) -> tuple[bool, dict]:
        """Ready only when the broker, the worker and the sink are; the answer says which is not."""
        if self.broker is not None:
            broker = self.broker.alive()
        elif self.bootstrap:
            host, _, port = self.bootstrap.rpartition(":")
            broker = wait_for_port(host, int(port), 0.3)
        else:
            broker = False
        worker = self.worker is None or self.worker.app.started
        sink = self.sink is None or (self._sink_task is not None and not self._sink_task.done())
        parts = {"broker": broker, "worker": worker, "sink": sink}
        if not broker:
            parts["reason"] = (f"the embedded broker has stopped (exit code {self.broker.process.returncode if self.broker.process else '?'})"
                               if self.broker is not None else f"cannot reach the Kafka broker at {self.bootstrap}")
        return broker and worker and sink, parts

    async def serve_http(self, host: str, port: int) -> "HttpServer":
        from sinks.http import create_app

        app = create_app(self.settings, self.bootstrap, self.topics, self.sink.db, self.companies, self.readiness,
                         aiokafka_kwargs(self.settings))
        server = HttpServer(app, host, port)
        await server.start()
        return server

    def sink_failed(self) -> BaseException | None:
        if self._sink_task is not None and self._sink_task.done() and not self._sink_task.cancelled():
            return self._sink_task.exception()
        return None

    # ---- backfill ----------------------------------------------------------------------
    def _backfill_done(self, batch_id: str, summary: dict) -> None:
        future = self._done.get(batch_id)
        if future is not None and not future.done():
            future.set_result(summary)

    async def replay(self, items: ReplayPlan, progress: Callable[[int], None] | None = None,
                     timeout: float = 3600.0) -> dict:
        """Produce items (kafka-python, in a thread), then wait until the sink has written all of it."""
        batch_id = new_batch_id()
        loop = asyncio.get_running_loop()
        self._done[batch_id] = loop.create_future()

        def produce() -> None:
            producer = EventProducer(self.bootstrap, self.topics, self.companies, **kafka_python_kwargs(self.settings))
            try:
                producer.send_packed(items, batch_id, progress)
                producer.barrier(batch_id)
                producer.flush()
            finally:
                producer.close()

        await asyncio.to_thread(produce)
        deadline = time.monotonic() + timeout
        future = self._done[batch_id]
        while not future.done():
            failed = self.sink_failed()
            if failed is not None:
                raise failed
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill not written within {timeout:.0f} s")
            await asyncio.wait({future}, timeout=0.2)
        if self.delivery is not None:  # and every alert change it caused has been delivered (or dead-lettered)
            self.delivery.wake.set()
            while await asyncio.to_thread(self.delivery.pending_count) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        return future.result()


async def backfill(settings: Settings, items: ReplayPlan, progress: Callable[[int], None] | None = None,
                   rules: RuleSet | None = None) -> Summary:
    """Replay items through the streaming pipeline and wait until everything is written."""
    pipeline = Pipeline(settings, rules)
    started = time.monotonic()
    await asyncio.to_thread(pipeline.start_broker)
    try:
        await pipeline.start()
        try:
            result = await pipeline.replay(items, progress)
        finally:
            await pipeline.stop()
    finally:
        pipeline.stop_broker()
    summary = Summary(**{k: int(result.get(k) or 0) for k in ("accepted", "duplicates", "late", "dead_letters")})
    summary.lines = len(items)
    summary.seconds = time.monotonic() - started
    return summary


class HttpServer:
    """uvicorn inside the pipeline's event loop."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.task: asyncio.Task | None = None
        self.host, self.port = host, port

    async def start(self, timeout: float = 15.0) -> None:
        self.task = asyncio.create_task(self.server.serve(), name="http")
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.task.done():
                exc = self.task.exception() if not self.task.cancelled() else None
                raise OSError(f"HTTP server could not start on {self.host}:{self.port}: {exc or 'exited'}")
            if time.monotonic() > deadline:
                raise TimeoutError("HTTP server did not start")
            await asyncio.sleep(0.05)
        sockets = [s for server in (self.server.servers or []) for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit, asyncio.TimeoutError):
                await asyncio.wait_for(self.task, 10)


def bind_host(settings: Settings) -> tuple[str, str | None]:
    """Without a token the server binds only to loopback; the note says so."""
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    if settings.token is None and not loopback:
        return "127.0.0.1", f"no token configured: binding to 127.0.0.1 instead of {settings.host}"
    return settings.host, None


async def run_parts(settings: Settings, worker: bool, sink: bool, console) -> None:
    """``aisignals worker`` / ``aisignals sink``: one part against a Kafka cluster, until SIGINT/SIGTERM."""
    import signal

    pipeline = Pipeline(settings)
    await asyncio.to_thread(pipeline.start_broker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await pipeline.start(worker=worker, sink=sink)
        if settings.metrics_port:
            serve_metrics(settings.metrics_port, settings.host)
        console.print(f"ai-signals {'worker' if worker else 'sink'} running (broker {pipeline.bootstrap}, DuckDB {settings.db})",
                      soft_wrap=True)
        while not stop.is_set():
            failed = pipeline.sink_failed()
            if failed is not None:
                raise failed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        await pipeline.stop()
        pipeline.stop_broker()

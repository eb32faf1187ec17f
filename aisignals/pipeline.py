"""Wiring: the broker, the Faust worker, the DuckDB sink and the producer, started and stopped together
(in one process for ``up``; a backfill runs the sink and the company engines in processes of their own).

This is the embedded set-up used by ``backfill`` and ``up``; with ``--bootstrap`` the same parts
talk to an existing Kafka cluster instead of the embedded broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from aisignals.children import ChildProcess, dismiss_early, run_engines, run_sink, take_early
from aisignals.runtime import tune_gc
from processors.app import COMPANIES, SEQUENCE, Worker, cancelled
from processors.rules import RuleSet, load_rules
from sinks.delivery import Delivery, delivered, start_delivery
from sinks.database import Database, SinkError
from sinks.state import load_worker_state, rollback_unfinished
from sinks.metrics import register, serve_metrics
from streams.admin import ensure_topics, incarnation
from streams.broker import EmbeddedBroker, check_reachable, wait_for_port
from streams.companies import CompanyNormalizer, normalizer
from streams.producer import EventProducer, new_batch_id
from streams.reader import ReplayPlan
from streams.security import aiokafka_kwargs, faust_kwargs, kafka_python_kwargs, stage_producer_kwargs
from streams.settings import Settings
from streams.topics import Topics

if TYPE_CHECKING:  # imported only where the sink runs in this process (a backfill's own process runs none)
    from sinks.duckdb_sink import DuckDBSink

log = logging.getLogger("aisignals")
TOPIC_CHECK_SECONDS = 10.0  # how often `worker`/`sink` check that the topics are still the ones they read
# the worker's consumer-group session (s). A fresh join on the embedded broker (Tansu) waits about half of
# it, rounded up to whole seconds (a bare aiokafka join: 3.0 s at 6 s, 2.0 s at 3 s, 1.0 s at 2 s and at
# anything shorter; measured): at 2 s a join takes 1.0 s instead of 3 (``up``; a backfill's stages, each the
# only member of its group on a private broker, take their partitions without one: see
# processors/faust_tuning.py). Heartbeats go every
# third of a second from the consumer's own thread; a session expiring mid-replay would move partitions
# and redeliver records, and none did in the end-to-end suite. A Kafka cluster refuses less than 6 s by default
# (group.min.session.timeout.ms): there the session is 10 s.
SESSION_TIMEOUT = 10.0
EMBEDDED_SESSION_TIMEOUT = 2.0


class ReadinessReport:
    """Says once when a process stops being ready (and why), again only if the reason changes while it is
    not, and once when it is ready again."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.down_since: float | None = None
        self.reason: object = None

    def update(self, ready: bool, parts: dict) -> bool:
        """True when the process has just become ready again."""
        if not ready:
            reason = parts.get("reason") or {k: v for k, v in parts.items() if not v}
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.say(f"not ready: {reason}")
            elif reason != self.reason:
                self.say(f"still not ready: {reason}")
            self.reason = reason
        elif self.down_since is not None:
            self.say(f"ready again after {time.monotonic() - self.down_since:.0f} s")
            self.down_since = self.reason = None
            return True
        return False


def check_db_writable(db: Path) -> None:
    parent = Path(db).resolve().parent
    if not parent.exists():
        raise SinkError(f"cannot create DuckDB file {db}: directory {parent} does not exist")
    if Path(db).exists() and Path(db).is_dir():
        raise SinkError(f"cannot use {db} as a DuckDB file: it is a directory")


def hold_writer_lock(db: Path) -> int:
    """One writing pipeline per DuckDB file. The sink opens the file only for its flushes (readers
    use it in between), so DuckDB's own lock does not keep a second writer out, and two writers would
    interleave their transactions and offsets. An advisory lock on the file (released by the kernel
    when the process ends, however it ends) does. Returns the descriptor to close when done."""
    fd = os.open(db, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SinkError(f"{db} is being written by another aisignals process (backfill, up or sink); "
                        "wait for it to end or use another --db") from None
    return fd


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


class _Abandoned(Exception):
    """Stops a replay's producer when the pipeline it feeds could not start."""


class Pipeline:
    """Broker (embedded or not) + worker + sink, started and stopped together.

    ``sink_process``: run the sink in a child process (a backfill: more throughput on two cores);
    ``engines_process``: on the embedded broker, the company engines too, so that the sequencer has
    this process's interpreter lock to itself (its topics and consumer groups live only as long as
    this run, so the two parts can be two Faust apps). Otherwise everything shares this process
    (``up``: the HTTP API reads the sink's state)."""

    def __init__(self, settings: Settings, rules: RuleSet | None = None,
                 companies: CompanyNormalizer | None = None, live: bool = False, sink_process: bool = False,
                 engines_process: bool = False) -> None:
        self.settings = settings
        self.live = live
        self.sink_process = sink_process
        self.engines_process = engines_process
        self._sink_process: ChildProcess | None = None
        self._engines_process: ChildProcess | None = None
        self.rules = rules if rules is not None else load_rules(settings.rules_file)
        self.companies = companies if companies is not None else normalizer(settings.aliases_file)
        self.topics = Topics(settings.topic_prefix, settings.partitions)
        self.broker: EmbeddedBroker | None = None
        self.bootstrap: str | None = settings.bootstrap
        self.topic_ids: dict[str, str | None] = {}
        self.worker: Worker | None = None
        self.sink: DuckDBSink | None = None
        self._stop_sink = asyncio.Event()
        self._sink_task: asyncio.Task | None = None
        self._done: dict[str, asyncio.Future] = {}
        self.delivery: Delivery | None = None
        self._delivery_task: asyncio.Task | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._writer_lock: int | None = None
        self.joining = asyncio.Event()  # set once only the app's start (a group join, if any) is left

    # ---- lifecycle ---------------------------------------------------------------------
    def spawn_children(self) -> None:
        """Start the child processes' interpreters before anything else (or take those the command spawned
        before its own imports): they import their parts (~0.6 s each) while this process starts the broker
        and restores, instead of after."""
        if self.sink_process and self._sink_process is None:
            self._sink_process = take_early("sink")
            self._sink_process.spawn()
        if self.engines_process and not self.bootstrap and self._engines_process is None:
            self._engines_process = take_early("company engines")
            self._engines_process.spawn()
        dismiss_early()

    def start_broker(self) -> str:
        if self.bootstrap:
            check_reachable(self.bootstrap)
        else:
            self.broker = EmbeddedBroker(self.settings.log_path())
            self.bootstrap = self.broker.start()
        self.topic_ids = ensure_topics(self.bootstrap, self.topics, kafka_python_kwargs(self.settings))
        self.run_id = self._run_id()
        return self.bootstrap

    def _run_id(self) -> str:
        """Names the logs the sink's stored offsets point into: one embedded broker's lifetime, or one
        incarnation of the topics on a cluster (offsets stored for topics since re-created are void)."""
        if self.broker is not None:
            return f"embedded:{uuid.uuid4().hex}"
        known = incarnation(self.topic_ids)
        return f"kafka:{self.bootstrap}:{self.topics.prefix}" + (f":{known}" if known else "")

    async def start(self, worker: bool = True, sink: bool = True) -> None:
        """Open the sink, restore the worker from what it committed, start both (or one of them).

        The worker's app starts first: its group join (a second on the embedded broker, none for a
        backfill's sole members) goes on while DuckDB is opened and the state restored, in a thread, and
        its agents wait for the restore."""
        s = self.settings
        check_db_writable(s.db)
        split = self.engines_process and self.broker is not None
        starting: asyncio.Future | None = None
        state: tuple | None = None
        if worker:
            # Faust wants a data directory even with the memory store: a temporary one, never the cwd
            self._scratch = tempfile.TemporaryDirectory(prefix="aisignals-worker-")
            self.worker = Worker(self.bootstrap, self.topics, self.rules, self.companies, tuple(s.windows),
                                 s.lateness_days, broker_kwargs={**faust_kwargs(s), "datadir": self._scratch.name},
                                 session_timeout=EMBEDDED_SESSION_TIMEOUT if self.broker is not None else SESSION_TIMEOUT,
                                 live=self.live, client_kwargs=stage_producer_kwargs(s),
                                 agents=(SEQUENCE,) if split else (SEQUENCE, COMPANIES),
                                 pack_events=split,  # a private broker: its one reader of events is the sink
                                 local_facts=self.broker is not None and not split,  # up: nobody else reads facts
                                 sole_member=split)
            (pending, state), starting = await self.worker.start_restoring(lambda: self._open(worker, sink))
        else:
            await asyncio.to_thread(self._open, worker, sink)
        try:
            if split:  # it restores and joins while this process does the same
                self._engines_process = self._engines_process or take_early("company engines")
                self._engines_process.start(run_engines, s, self.bootstrap, self.rules, state, EMBEDDED_SESSION_TIMEOUT)
            del state
            if sink and self.sink_process:  # it opens DuckDB while the worker joins its group
                self._sink_process = self._sink_process or take_early("sink")
                self._sink_process.start(run_sink, s, self.run_id, self.bootstrap, on_backfill=self._backfill_done)
        except BaseException:
            if starting is not None:
                await cancelled(starting)
            raise
        if worker:
            self.joining.set()
            await starting
            for partition, rows, alerts in pending:
                if rows or alerts:
                    await self.worker.publish_now(partition, rows, alerts)
        if sink and not self.sink_process:
            self._sink_task = asyncio.create_task(self.sink.run(self.bootstrap, self._stop_sink, aiokafka_kwargs(s)),
                                                  name="sink")
            self.delivery, self._delivery_task = start_delivery(self.sink, s, self.companies, self._stop_sink)
        tune_gc()  # after the restore: restored state is frozen out of collection too
        role = "all" if worker and sink else ("worker" if worker else "sink")
        register(role, self.worker, self.sink, self.delivery, self.readiness)

    def _open(self, worker: bool, sink: bool) -> tuple[list, tuple] | None:
        """Open (create) DuckDB and take the writer's lock; with the worker, restore it from what was committed
        (an interrupted backfill is rolled back first). Returns the worker's pending outputs and the state
        the company engines restore from."""
        s = self.settings
        database = Database(s.db)
        if sink and not self.sink_process:
            from sinks.duckdb_sink import DuckDBSink

            self.sink = DuckDBSink(s.db, self.topics, self.companies, self.run_id, s.flush_rows, s.flush_seconds)
            self.sink.on_backfill.append(self._backfill_done)
            database = self.sink.db
            database.reuse_reader = True  # the writer is in this process: reads share one connection between writes
        elif sink:
            database.create()
        if sink:
            self._writer_lock = hold_writer_lock(s.db)
        if not worker:
            return None
        # an interrupted backfill is rolled back, so that replaying it gives exactly a clean run's tables
        rolled_back_until = rollback_unfinished(database) if sink else None
        seen, max_time_us, facts, published = load_worker_state(database)
        pending = self.worker.restore(seen, max_time_us, facts, published, rolled_back_until_us=rolled_back_until)
        return pending, (max_time_us, facts, published, rolled_back_until)

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

        children = [c for c in (self._sink_process, self._engines_process) if c is not None]
        await asyncio.gather(*(child.stop(grace) for child in children))
        if self._delivery_task is not None:
            await bounded(self._delivery_task, "alert delivery")
        if self._sink_task is not None:
            await bounded(self._sink_task, "the sink")
        if self.worker is not None:
            await bounded(self.worker.stop(), "the worker")
        if self.sink is not None:
            self.sink.close()
        if self._scratch is not None:
            self._scratch.cleanup()
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    async def check_topics(self) -> bool:
        """Run when the broker is reachable again, and now and then. A Kafka cluster keeps its topics; a
        broker without durable storage (Tansu's memory engine) comes back empty, so the topics are
        created again before a client's first request auto-creates one with the wrong partition count,
        and a sink here reads the new logs from their start (their offsets say nothing about the old).
        False when the broker could not be asked (reported; the next check tries again)."""
        try:
            ids = await asyncio.to_thread(ensure_topics, self.bootstrap, self.topics, kafka_python_kwargs(self.settings),
                                          5000)
        except Exception as exc:  # noqa: BLE001 - reported; the next check tries again
            log.warning("topics not checked: %s", exc)
            return False
        renewed = sorted(t for t, tid in ids.items() if tid and self.topic_ids.get(t) and tid != self.topic_ids[t])
        self.topic_ids = {**self.topic_ids, **{t: tid for t, tid in ids.items() if tid}}
        if renewed:
            log.warning("topics created anew on the broker (it lost its data): %s", ", ".join(renewed))
            self.run_id = self._run_id()
            if self.sink is not None:
                self.sink.reread(self.run_id)
        return True

    def stop_broker(self, graceful: bool = True) -> None:
        if self.broker is not None:
            self.broker.stop(graceful=graceful)

    def readiness(self) -> tuple[bool, dict]:
        """Ready only when the broker, the worker and the sink are; the answer says which is not."""
        if self.broker is not None:
            broker = self.broker.alive()
        elif self.bootstrap:
            host, _, port = self.bootstrap.rpartition(":")
            broker = wait_for_port(host, int(port), 0.3)
        else:
            broker = False
        worker = self.worker is None or (self.worker.app.started and (
            self._engines_process is None or self._engines_process.alive()))
        if self._sink_process is not None:
            sink = self._sink_process.alive()
        else:
            sink = self.sink is None or (self._sink_task is not None and not self._sink_task.done())
        stalled = self.worker.ingest_stalled() if worker and self.worker is not None else None
        worker = worker and stalled is None
        parts = {"broker": broker, "worker": worker, "sink": sink}
        if not broker:
            parts["reason"] = (f"the embedded broker has stopped (exit code {self.broker.process.returncode if self.broker.process else '?'})"
                               if self.broker is not None else f"cannot reach the Kafka broker at {self.bootstrap}")
        elif stalled is not None:
            parts["reason"] = stalled + ("; the embedded broker stops serving a partition under a sustained live "
                                         "load (README: Tansu under a sustained live load)" if self.broker else "")
        return broker and worker and sink, parts

    async def serve_http(self, host: str, port: int) -> "HttpServer":
        from sinks.dashboard import with_dashboard
        from sinks.http import create_app

        app = with_dashboard(create_app(self.settings, self.bootstrap, self.topics, self.sink.db, self.companies,
                                        self.readiness, aiokafka_kwargs(self.settings), alerts_written=self.alerts_written),
                             self.sink.db, self.companies, self.readiness)
        server = HttpServer(app, host, port)
        await server.start()
        return server

    async def alerts_written(self, positions: dict[int, int], timeout: float) -> bool:
        """Wait until the sink has committed the alerts topic up to ``positions`` (partition → next offset),
        asking it to flush now rather than at its interval. False if that took longer than ``timeout``."""
        sink = self.sink
        if sink is None:
            return False
        want = {(self.topics.alerts, p): o for p, o in positions.items()}
        deadline = time.monotonic() + timeout
        while any(sink.committed.get(key, 0) < offset for key, offset in want.items()):
            left = deadline - time.monotonic()
            if left <= 0 or self._sink_task is None or self._sink_task.done():
                return False
            sink.flush_soon = True
            sink.flushed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sink.flushed.wait(), min(left, 0.1))
        return True

    def sink_failed(self) -> BaseException | None:
        """The failure of the sink, or of a part in a child process."""
        for child in (self._engines_process, self._sink_process):
            failed = child.failed() if child is not None else None
            if failed is not None:
                return failed
        if self._sink_task is not None and self._sink_task.done() and not self._sink_task.cancelled():
            return self._sink_task.exception()
        return None

    # ---- backfill ----------------------------------------------------------------------
    def _backfill_done(self, batch_id: str, summary: dict) -> None:
        future = self._done.get(batch_id)
        if future is not None and not future.done():
            future.set_result(summary)

    async def replay(self, items: ReplayPlan, progress: Callable[[int], None] | None = None,
                     timeout: float = 3600.0, starting: asyncio.Future | None = None) -> dict:
        """Produce items (kafka-python, in a thread), then wait until the sink has written all of it.

        ``starting``: the pipeline's start, still under way. The ingest topic holds what is produced
        until the worker reads it, so producing overlaps the group join; if the start fails, producing
        stops and its error is raised."""
        batch_id = new_batch_id()
        loop = asyncio.get_running_loop()
        self._done[batch_id] = loop.create_future()
        abandon = threading.Event()

        def step(n: int) -> None:
            if abandon.is_set():
                raise _Abandoned("the pipeline did not start")
            if progress is not None:
                progress(n)

        def produce() -> None:
            producer = EventProducer(self.bootstrap, self.topics, self.companies, **kafka_python_kwargs(self.settings))
            try:
                producer.send_packed(items, batch_id, step)
                producer.barrier(batch_id)
                producer.flush()
            finally:
                producer.close()

        producing = asyncio.ensure_future(asyncio.to_thread(produce))
        if starting is not None:
            try:
                await starting
            except BaseException:
                abandon.set()
                with contextlib.suppress(_Abandoned):
                    await producing
                raise
        await producing
        deadline = time.monotonic() + timeout
        future = self._done[batch_id]
        while not future.done():
            failed = self.sink_failed()
            if failed is not None:
                raise failed
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill not written within {timeout:.0f} s")
            await asyncio.wait({future}, timeout=0.2)
        await delivered(self.delivery, deadline)  # and every alert change it caused (a sink process waits itself)
        return future.result()


async def backfill(settings: Settings, items: ReplayPlan | Callable[[], ReplayPlan],
                   progress: Callable[[int], None] | None = None, rules: RuleSet | None = None,
                   reads_elsewhere: bool = False) -> Summary:
    """Replay items through the streaming pipeline and wait until everything is written. ``items`` may be
    a function that reads them: it then runs (in a thread) while the broker and the worker start, from the
    beginning if it reads in other processes (``reads_elsewhere``), else once the worker waits for its
    group join."""
    pipeline = Pipeline(settings, rules, sink_process=True, engines_process=True)
    started = time.monotonic()
    loading: asyncio.Future | None = None
    try:
        if callable(items) and reads_elsewhere:
            loading = asyncio.ensure_future(asyncio.to_thread(items))
        pipeline.spawn_children()
        try:
            await asyncio.to_thread(pipeline.start_broker)
        except BaseException:
            await pipeline.stop()  # the children waiting for their parts
            raise
        try:
            starting = asyncio.ensure_future(pipeline.start())
            try:
                if callable(items):
                    if loading is None:
                        # read once the start waits on the broker only: a reading thread begun earlier holds the
                        # interpreter lock the start's own work needs (at 1M lines the join began 5.2 s in, not 1.8)
                        joining = asyncio.ensure_future(pipeline.joining.wait())
                        await asyncio.wait({starting, joining}, return_when=asyncio.FIRST_COMPLETED)
                        joining.cancel()
                        if starting.done():
                            await starting  # raises its error: a start that ended before the join failed
                        loading = asyncio.ensure_future(asyncio.to_thread(items))
                    else:
                        await asyncio.wait({starting, loading}, return_when=asyncio.FIRST_COMPLETED)
                        if starting.done() and not loading.done():
                            await starting  # raises its error: a start that failed does not wait for the reading
                    items = await loading
                result = await pipeline.replay(items, progress, starting=starting)
            finally:
                if not starting.done():  # the input could not be read: let the start end, then stop
                    await asyncio.wait({starting})
                if not starting.cancelled():
                    starting.exception()  # raised above already, or to be superseded by the reading error
                await pipeline.stop()
        finally:
            pipeline.stop_broker(graceful=False)  # its topics live in its memory and every part has stopped
    finally:
        if loading is not None and not loading.done():
            await asyncio.wait({loading})  # a failed start-up: let the reading end before the process does
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
        broadcaster = getattr(self.server.config.app.state, "broadcaster", None)
        if broadcaster is not None:
            broadcaster.close_all()  # open alert streams end cleanly, so the server need not cut them
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
        report = ReadinessReport(lambda line: console.print(line, soft_wrap=True))
        next_check, checking = time.monotonic() + TOPIC_CHECK_SECONDS, None
        while not stop.is_set():
            failed = pipeline.sink_failed()
            if failed is not None:
                raise failed
            ready, parts = await asyncio.to_thread(pipeline.readiness)
            back = report.update(ready, parts)
            if ready and (back or time.monotonic() >= next_check) and (checking is None or checking.done()):
                checking = asyncio.create_task(pipeline.check_topics())  # in the background: readiness goes on
                next_check = time.monotonic() + TOPIC_CHECK_SECONDS
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        report.update(*await asyncio.to_thread(pipeline.readiness))  # a change since the last look is said too
    finally:
        await pipeline.stop()
        pipeline.stop_broker()

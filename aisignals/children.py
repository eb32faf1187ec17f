"""Parts of the pipeline in processes of their own, so that a backfill uses both cores (each process has
one interpreter lock): the sink, the company engines, and the reading of a backfill's input. This module
imports little: a child imports it first, then only what its part needs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable

from aisignals.runtime import one_malloc_arena, quiet_logs, tune_gc
from streams.broker import die_with_parent, name_process

log = logging.getLogger("aisignals")
# what each part imports, loaded while its child waits for the part (see ChildProcess.spawn)
ENGINES_IMPORTS = ("processors.app", "streams.security")
SINK_IMPORTS = ("sinks.duckdb_sink", "sinks.delivery", "streams.security")
PARTS = {"sink": SINK_IMPORTS, "company engines": ENGINES_IMPORTS}  # each part's child, and what it imports


class ChildProcess:
    """One part in a child process (the DuckDB sink with alert delivery, or the company engines). Finished
    backfills and failures come back over a pipe, and "stop" goes the other way (a pipe holds no named
    semaphores, so a process that ends without tearing down its objects leaves nothing behind).

    The interpreter can start before its part is known (:meth:`spawn`): it imports ``warm`` meanwhile
    and waits for :meth:`start` to send the part and its arguments."""

    def __init__(self, what: str, warm: tuple[str, ...] = ()) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.what = what
        self.messages, self._child_end = ctx.Pipe()
        self.stopping = False
        self.name = f"aisignals-{what.split()[-1]}"[:15]  # its /proc/PID/comm: aisignals-sink, aisignals-engin
        self.process = ctx.Process(target=_child_main, name=self.name, daemon=True,
                                   args=(self.name, warm, self._child_end))
        self.error: str | None = None

    def spawn(self) -> None:
        """Start the interpreter (once): it imports its modules while this process goes on."""
        if self.process.pid is None:
            with _main_script_hidden():
                self.process.start()
            self._child_end.close()  # the child's copy is its own: a child that dies shows as EOF here

    def start(self, target: Callable, *args, on_backfill: Callable[[str, dict], None] | None = None) -> None:
        """Run ``target(*args, pipe)`` in the child (spawning it if :meth:`spawn` has not)."""
        self.spawn()
        self.messages.send(("run", target, args))
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._listen, args=(loop, on_backfill), name=f"{self.what}-messages", daemon=True).start()

    def _listen(self, loop: asyncio.AbstractEventLoop, on_backfill: Callable[[str, dict], None] | None) -> None:
        while True:
            try:
                ready = self.messages.poll(0.5)
                what, *rest = self.messages.recv() if ready else (None,)
            except (EOFError, OSError):
                return
            if what is None:
                if not self.process.is_alive():
                    return
                continue
            if what == "backfill" and on_backfill is not None:
                loop.call_soon_threadsafe(on_backfill, *rest)
            elif what == "error":
                self.error = rest[0]

    def alive(self) -> bool:
        return self.process.is_alive()

    def failed(self) -> BaseException | None:
        from sinks.database import SinkError  # the parent has it loaded: the pipeline's failures are sink errors

        if self.error is not None:
            return SinkError(self.error)
        code = self.process.exitcode
        if code not in (None, 0) and not self.stopping:
            return SinkError(f"the {self.what} process exited with code {code}")
        return None

    def tell_to_stop(self) -> None:
        """Send "stop": a child still waiting for its part ends, one running it stops it in order."""
        self.stopping = True
        if self.process.pid is not None:
            with contextlib.suppress(OSError):
                self.messages.send(("stop",))

    async def stop(self, grace: float) -> None:
        self.tell_to_stop()
        if self.process.pid is None:
            return
        await asyncio.to_thread(self.process.join, grace)
        if self.process.is_alive():
            log.warning("the %s process did not stop within %.0f s; killed", self.what, grace)
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)


_EARLY: dict[str, ChildProcess] = {}  # spawned by ``spawn_early``, for the pipeline to take


def spawn_early(args: list[str]) -> None:
    """Called with the command's arguments before the CLI's own imports (~0.5 s of one core, the other idle):
    for a backfill, spawn the sink's and the company engines' interpreters now, so that they import their
    parts beside those imports. The pipeline takes them (``take_early``); ``dismiss_early`` ends the rest."""
    if args[:1] == ["backfill"] and not {"--help", "-h"} & set(args):
        for what, warm in PARTS.items():
            _EARLY[what] = child = ChildProcess(what, warm)
            child.spawn()


def take_early(what: str) -> ChildProcess:
    """The child of part ``what`` (a key of ``PARTS``) spawned early, or a new one."""
    return _EARLY.pop(what, None) or ChildProcess(what, PARTS[what])


def dismiss_early() -> None:
    """Children spawned early that the pipeline does not need (a backfill on a Kafka cluster runs its
    company engines in this process) are told to stop, and end."""
    while _EARLY:
        _EARLY.popitem()[1].tell_to_stop()


_HIDING = threading.Lock()  # one thread at a time hides the main script (the reading spawns from a thread)


@contextlib.contextmanager
def _main_script_hidden():
    """A spawned child runs the parent's main script again before its target (as ``__mp_main__``); for
    the ``aisignals`` console script that is the whole CLI, 0.4 s of imports a child never uses. Its
    targets live in this package and ``streams``, so the child is told of no main script."""
    with _HIDING:
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path is None or getattr(main, "__spec__", None) is not None:
            yield
            return
        del main.__file__
        try:
            yield
        finally:
            main.__file__ = path


READ_PROCESSES = min(4, max(2, os.cpu_count() or 2))  # ranges of the input read side by side


def read_jsonl(paths: list[Path], processes: int = READ_PROCESSES):
    """The replay plan of JSON Lines files (``streams.reader.replay_files``), their ranges read in processes
    of their own. Nothing is sent before the whole input is read and in order, and reading costs ~5 µs of
    one core a line: at a million lines that held a backfill's start for seconds with the other core idle.
    In other processes it runs beside the broker's start and the group join instead, on both cores; the
    plan is the same (tested). Small inputs are read here: starting the processes would cost more."""
    from streams.reader import replay_files

    if processes < 2:
        return replay_files(paths)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        def read_parts(read, ranges):
            if len(ranges) < 2:
                return map(read, ranges)
            with _main_script_hidden():
                futures = [pool.submit(read, r) for r in ranges]
            return _results(futures)

        return replay_files(paths, processes, read_parts)


def _results(futures: list):
    """Each future's result in turn, none kept once handed on (a part of a million lines is ~16 MB)."""
    futures.reverse()
    while futures:
        yield futures.pop().result()


def _child_main(name: str, warm: tuple[str, ...], parent) -> None:  # pragma: no cover - child
    one_malloc_arena()
    die_with_parent()
    name_process(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us in order
    quiet_logs()
    for module in warm:
        importlib.import_module(module)
    try:
        what, *part = parent.recv()
    except EOFError:  # the parent has gone before it had a part for us
        what = None
    if what != "run":  # "stop" before the part came: the parent's start failed
        os._exit(0)
    target, args = part
    tune_gc()
    try:
        asyncio.run(target(*args, parent))
    except Exception as exc:
        parent.send(("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        raise SystemExit(1) from None
    # the part has stopped and closed everything; freeing its state object by object would take seconds
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def until_stopped(parent) -> None:  # pragma: no cover - child
    """Until "stop" comes, or the parent has gone (EOF): woken by the pipe itself, not by polling it (a
    tenth of a second that each backfill's end waited)."""
    if parent.poll():
        return
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(parent.fileno(), readable.set)
    try:
        await readable.wait()
    finally:
        loop.remove_reader(parent.fileno())


async def run_engines(settings, bootstrap: str, rules, state: tuple, session_timeout: float,
                      parent) -> None:  # pragma: no cover - child
    """The company engines of a backfill (the ``companies`` agent as a Faust app of its own), restored
    from ``state`` (what the parent read from DuckDB)."""
    from processors.app import COMPANIES, Worker
    from streams.companies import normalizer
    from streams.security import faust_kwargs, stage_producer_kwargs
    from streams.topics import Topics

    topics = Topics(settings.topic_prefix, settings.partitions)
    with tempfile.TemporaryDirectory(prefix="aisignals-engines-") as scratch:
        worker = Worker(bootstrap, topics, rules, normalizer(settings.aliases_file), tuple(settings.windows),
                        settings.lateness_days, broker_kwargs={**faust_kwargs(settings), "datadir": scratch},
                        session_timeout=session_timeout, client_kwargs=stage_producer_kwargs(settings),
                        agents=(COMPANIES,), sole_member=True)
        max_time_us, facts, published, rolled_back_until = state
        restore = partial(worker.restore, [], max_time_us, facts, published, rolled_back_until_us=rolled_back_until)
        del facts, published, state  # the restored engines hold what they need: the rest goes once restored
        pending, starting = await worker.start_restoring(restore)
        del restore
        await starting
        try:
            for partition, rows, alerts in pending:
                if rows or alerts:
                    await worker.publish_now(partition, rows, alerts)
            del pending
            tune_gc()
            await until_stopped(parent)
        finally:
            await worker.stop()


async def run_sink(settings, run_id: str, bootstrap: str, parent) -> None:  # pragma: no cover - child
    """The DuckDB sink of a backfill, with alert delivery; says when a backfill is written."""
    from sinks.delivery import delivered, start_delivery
    from sinks.duckdb_sink import DuckDBSink
    from streams.companies import normalizer
    from streams.security import aiokafka_kwargs
    from streams.topics import Topics

    companies = normalizer(settings.aliases_file)
    topics = Topics(settings.topic_prefix, settings.partitions)
    # a sink process serves a backfill: fewer, larger transactions (a backfill's barrier still flushes at once)
    sink = DuckDBSink(settings.db, topics, companies, run_id, settings.bulk_flush_rows, settings.bulk_flush_seconds,
                      hold=True)
    stop = asyncio.Event()
    delivery, delivery_task = start_delivery(sink, settings, companies, stop)

    async def finished(batch_id: str, summary: dict) -> None:
        await delivered(delivery, time.monotonic() + 3600)
        parent.send(("backfill", batch_id, summary))

    sink.on_backfill.append(finished)

    async def watch() -> None:
        await until_stopped(parent)
        stop.set()

    watcher = asyncio.create_task(watch())
    try:
        await sink.run(bootstrap, stop, aiokafka_kwargs(settings))
    finally:
        stop.set()
        watcher.cancel()
        if delivery_task is not None:
            await delivery_task

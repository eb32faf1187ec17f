"""Child processes of a backfill: spawned before their part is known, told of no main script."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from aisignals.children import ChildProcess


async def report_back(batch_id: str, modules: tuple[str, ...], parent) -> None:
    """A part for the tests: says which of ``modules`` the child had loaded before it ran."""
    parent.send(("backfill", batch_id, {name: name in sys.modules for name in modules}))
    while not parent.poll(0.05):
        await asyncio.sleep(0.01)


def test_a_child_spawned_early_imports_its_modules_then_runs_the_part_sent_later():
    async def scenario() -> dict:
        child = ChildProcess("test part", ("decimal",))
        child.spawn()
        await asyncio.sleep(0.2)  # the part comes later, as in a backfill's start
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        child.start(report_back, "b1", ("decimal", "typer"), on_backfill=lambda b, s: got.set_result((b, s)))
        try:
            return await asyncio.wait_for(got, 30)
        finally:
            await child.stop(10)
            assert child.process.exitcode == 0

    batch_id, loaded = asyncio.run(scenario())
    assert batch_id == "b1"
    assert loaded == {"decimal": True, "typer": False}  # its warm-up, and not the CLI


def test_a_child_whose_part_never_comes_ends_cleanly():
    async def scenario() -> int | None:
        child = ChildProcess("test idle", ())
        child.spawn()
        await child.stop(10)
        return child.process.exitcode

    assert asyncio.run(scenario()) == 0


def test_a_never_spawned_child_stops_without_error():
    child = ChildProcess("test unused", ())
    asyncio.run(child.stop(1))
    assert child.process.pid is None and child.failed() is None


def test_the_parent_script_is_not_run_again_in_the_child(tmp_path, monkeypatch):
    """Spawned children re-run the parent's main script (for ``aisignals`` the whole CLI) unless told of none."""
    marker = tmp_path / "ran"
    script = tmp_path / "main_script.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    fake_main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", fake_main)

    async def scenario() -> None:
        child = ChildProcess("test script", ())
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        child.start(report_back, "b2", (), on_backfill=lambda b, s: got.set_result(b))
        try:
            await asyncio.wait_for(got, 30)
        finally:
            await child.stop(10)

    asyncio.run(scenario())
    assert fake_main.__file__ == str(script)  # given back
    assert not marker.exists()


@pytest.mark.parametrize("agents", [("sequence",), ("companies",), ("sequence", "companies")])
def test_worker_apps_start_without_the_table_managers_second(agents):
    """Faust's table manager sleeps 1 s on start for tables these apps never declare."""
    from processors.app import Worker
    from processors.rules import load_rules
    from streams.companies import normalizer
    from streams.topics import Topics

    worker = Worker("127.0.0.1:9", Topics(), load_rules(None), normalizer(None), agents=agents)
    manager = worker.app.tables
    slept, started = [], []

    async def sleep(seconds):
        slept.append(seconds)

    async def noop():
        started.append(True)

    async def scenario() -> None:
        manager.sleep = sleep
        manager._update_channels = noop
        manager.recovery.start = noop
        await manager.on_start()

    asyncio.run(scenario())
    assert slept == [] and len(started) == 2


def test_a_backfill_spawns_its_children_before_its_own_imports_and_the_pipeline_takes_them(tmp_path):
    """``aisignals backfill`` spawns the sink's and the engines' interpreters before the CLI's imports; the
    pipeline takes them, and one it does not need (on a Kafka cluster the engines run in its process) ends."""
    from aisignals import children
    from aisignals.pipeline import Pipeline
    from streams.settings import Settings

    children.spawn_early(["query", "SELECT 1"])
    children.spawn_early(["backfill", "--help"])
    assert not children._EARLY  # other commands, and help, spawn nothing
    children.spawn_early(["backfill", "events.jsonl", "--db", "x.duckdb"])
    early = dict(children._EARLY)
    assert set(early) == {"sink", "company engines"} and all(c.process.pid for c in early.values())
    pipeline = Pipeline(Settings(db=tmp_path / "x.duckdb", bootstrap="127.0.0.1:9"), sink_process=True,
                        engines_process=True)
    pipeline.spawn_children()
    assert pipeline._sink_process is early["sink"] and pipeline._engines_process is None
    assert not children._EARLY
    unused = early["company engines"].process
    unused.join(30)
    assert unused.exitcode == 0
    asyncio.run(pipeline._sink_process.stop(10))
    assert early["sink"].process.exitcode == 0


def test_a_part_waiting_to_be_stopped_wakes_on_stop_and_on_a_parent_gone():
    """``until_stopped`` returns once "stop" is in the pipe or the parent's end is closed (EOF), and not
    before: the part is woken by the pipe."""
    import multiprocessing

    from aisignals.children import until_stopped

    async def scenario(close: bool) -> tuple[bool, bool]:
        parent_end, child_end = multiprocessing.Pipe()
        waiting = asyncio.ensure_future(until_stopped(child_end))
        await asyncio.sleep(0.2)
        early = waiting.done()
        parent_end.close() if close else parent_end.send(("stop",))
        await asyncio.wait_for(waiting, 5)
        return early, waiting.done()

    assert asyncio.run(scenario(close=False)) == (False, True)
    assert asyncio.run(scenario(close=True)) == (False, True)

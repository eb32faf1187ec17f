"""Eager delivery: Faust's consumer hands a record over without four tasks per record, and keeps the
behaviour of ``wait_first`` whenever the hand-over has to wait or the flow is suspended."""

import asyncio

import pytest
from faust.transport.consumer import Consumer
from mode import Service
from mode.utils.locks import Event

import processors.app  # noqa: F401 - applies the tuning, as the worker does
from processors.faust_tuning import Resumed


class Flow(Service):
    """What the patched ``wait_first`` reads of a consumer: its flow events, on a real mode Service."""

    wait_first = Consumer.wait_first

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


def tasks_started(run):
    """Run ``run()`` (a coroutine function taking the flow) and count the tasks created meanwhile."""
    async def main():
        loop = asyncio.get_running_loop()
        created = []
        factory = loop.get_task_factory()

        def counting(loop, coro, **kwargs):
            created.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs) if factory is None else factory(loop, coro, **kwargs)

        loop.set_task_factory(counting)
        result = await run(Flow())
        loop.set_task_factory(factory)
        return result, len(created)
    return asyncio.run(main())


def test_tuning_is_applied_to_faust():
    assert getattr(Consumer, "_aisignals_eager", False)


def test_a_hand_over_that_does_not_wait_starts_no_task():
    delivered = []

    async def callback(record):
        delivered.append(record)
        return record * 2

    async def run(flow):
        results = await flow.wait_first(callback(21), flow.suspend_flow.wait())
        return results.results, results.stopped

    (results, stopped), started = tasks_started(run)
    assert (delivered, results, stopped, started) == ([21], [42], False, 0)


def test_a_hand_over_that_waits_finishes_in_a_task():
    async def run(flow):
        gate = asyncio.get_running_loop().create_future()
        steps = []

        async def callback():
            steps.append("first")
            value = await gate
            steps.append("rest")
            return value

        waiting = asyncio.ensure_future(flow.wait_first(callback(), flow.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert steps == ["first"] and not waiting.done()
        gate.set_result("ok")
        results = await waiting
        return steps, results.results

    (steps, results), started = tasks_started(run)
    assert steps == ["first", "rest"] and "ok" in results
    assert started > 0  # it went through wait_first


def test_suspending_the_flow_still_abandons_a_waiting_hand_over():
    async def run(flow):
        cancelled = asyncio.Event()

        async def callback():
            try:
                await asyncio.get_running_loop().create_future()  # a full buffer that never drains
            except asyncio.CancelledError:
                cancelled.set()
                raise

        waiting = asyncio.ensure_future(flow.wait_first(callback(), flow.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        flow.suspend_flow.set()
        results = await asyncio.wait_for(waiting, 2)
        await asyncio.wait_for(cancelled.wait(), 2)
        return results.results, cancelled.is_set()

    (results, cancelled), _ = tasks_started(run)
    assert cancelled and results == [True]  # the suspension won; the callback was cancelled


def test_a_suspended_flow_takes_the_original_path():
    async def run(flow):
        flow.suspend_flow.set()

        async def callback():
            return "x"

        return (await flow.wait_first(callback(), flow.suspend_flow.wait())).stopped

    stopped, started = tasks_started(run)
    assert stopped is False and started >= 2  # wait_first's own tasks, as before


def test_an_error_in_the_hand_over_is_raised():
    async def run(flow):
        async def callback():
            raise ValueError("bad record")

        with pytest.raises(ValueError, match="bad record"):
            await flow.wait_first(callback(), flow.suspend_flow.wait())
        return True

    assert tasks_started(run)[0]


def test_resumed_passes_values_and_errors_through():
    async def main():
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()

        async def work():
            a = await first
            try:
                await second
            except KeyError as exc:
                return a, str(exc)

        coro = work()
        pending = coro.send(None)
        assert pending is first
        task = asyncio.ensure_future(Resumed(coro, pending))
        first.set_result(7)
        await asyncio.sleep(0)
        second.set_exception(KeyError("gone"))
        return await task

    assert asyncio.run(main()) == (7, "'gone'")


def test_building_a_worker_marks_nothing_for_autodiscovery(monkeypatch):
    """Faust's agent decorator no longer inspects its caller's frame for venusian (which resolved the path
    of every loaded module): nothing here runs Faust's autodiscovery, which alone reads those marks."""
    import inspect

    from processors.app import Worker
    from processors.rules import load_rules
    from streams.companies import normalizer
    from streams.topics import Topics

    inspected = []
    frame_info = inspect.getframeinfo
    monkeypatch.setattr(inspect, "getframeinfo", lambda *args, **kwargs: inspected.append(args) or frame_info(*args, **kwargs))
    worker = Worker("127.0.0.1:1", Topics("tuning", 1), load_rules(None), normalizer())  # never started
    assert set(worker.agents) and inspected == []

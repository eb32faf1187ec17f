"""What ai-signals changes in Faust's behaviour, and why: each change is measured, small, and applied
once, when the Faust side is imported.

* The fetch wait. Faust hard-codes aiokafka's ``fetch_max_wait_ms=1500``; on a broker that holds
  fetches until that timeout (Tansu does) every hop adds up to 1.5 s of latency.
* Eager delivery. For every record it reads, Faust's consumer waits for the record to be handed to
  its streams *or* for the flow to be suspended (a rebalance), with ``Service.wait_first``: four tasks
  started and three cancelled per record, ~115 µs here. Handing a record over almost never waits
  (a full stream buffer or a suspended flow does), so the hand-over's first step runs at once, and
  only one that has to wait goes through ``wait_first`` as before.
* Sole members take their partitions. An app that is by construction the only member of its group
  (a backfill's stage on its private broker) is given every partition of its topics at once, as if a
  rebalance had assigned them, instead of joining the group: the embedded broker answers a join only
  after a second (docs/performance.md, "Start-up"). Its records, offsets and commits are the same.
* No marks for autodiscovery. Faust marks each agent it makes for :pypi:`venusian`, which only its
  ``autodiscover`` scan reads (these apps never scan); making the mark inspects the caller's frame, and
  the first inspection resolves the path of every loaded module: ~0.09 s of a backfill's start, in each
  process that builds an app.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Generator

FETCH_MAX_WAIT_MS = 50  # bulk work: few, full fetches
LIVE_FETCH_MAX_WAIT_MS = 10  # live: shorter waits make Tansu stall fetches for seconds (measured)


def short_fetch_wait() -> None:
    """Cap the fetch wait of every Faust consumer at its app's ``aisignals_fetch_wait_ms``."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_aisignals_patched", False):
        return
    create = thread._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "aisignals_fetch_wait_ms", FETCH_MAX_WAIT_MS)
        return consumer

    thread._create_worker_consumer = _create_worker_consumer
    thread._aisignals_patched = True


class Resumed:
    """The rest of a coroutine whose first step has run and yielded ``pending`` (what it waits on):
    awaiting this finishes it, so a task can take it over where it stopped."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro, pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task (a cancellation): the coroutine gets it
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def _waits_on(coro: Any, event: Any) -> bool:
    """``coro`` is ``event.wait()``, not started."""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and getattr(coro, "cr_code", None) is type(event).wait.__code__ \
        and frame.f_locals.get("self") is event


def eager_delivery() -> None:
    """Faust's consumer hands each record over with ``wait_first(callback(record), suspend_flow.wait())``;
    run the callback's first step at once instead, and fall back to ``wait_first`` only when it waits."""
    from faust.transport.consumer import Consumer
    from mode.services import WaitResults

    if getattr(Consumer, "_aisignals_eager", False):
        return
    original = Consumer.wait_first

    async def wait_first(self, *coros, timeout=None):
        if (len(coros) == 2 and timeout is None and inspect.iscoroutine(coros[0]) and _waits_on(coros[1], self.suspend_flow)
                and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())):
            first, flow = coros
            try:
                pending = first.send(None)
            except StopIteration as stop:
                flow.close()
                return WaitResults([first], [stop.value], False)
            except BaseException:
                flow.close()
                raise
            coros = (Resumed(first, pending), flow)
        return await original(self, *coros, timeout=timeout)

    Consumer.wait_first = wait_first
    Consumer._aisignals_eager = True


def sole_member_assignment() -> None:
    """An app with ``aisignals_sole_member`` (topic name -> partitions) assigns itself every partition of
    the topics it subscribes to and runs Faust's on-assigned chain, as a rebalance would, without a join."""
    from aiokafka import TopicPartition
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_aisignals_sole", False):
        return
    subscribe = thread.subscribe

    async def subscribe_or_assign(self, topics):
        partitions = getattr(self.app, "aisignals_sole_member", None)
        if not partitions:
            return await subscribe(self, topics)
        assigned = [TopicPartition(topic, p) for topic in sorted(set(topics)) for p in range(partitions[topic])]
        await self.call_thread(assign, self, assigned)

    def assign(self, assigned) -> None:
        """In the consumer's thread: take the partitions, then run the chain as a task of that thread's loop,
        where aiokafka runs it after a join (the chain waits for the subscription this is part of)."""
        self._ensure_consumer().assign(assigned)
        self._aisignals_assigning = asyncio.ensure_future(self._rebalance_listener.on_partitions_assigned(assigned))

    thread.subscribe = subscribe_or_assign
    thread._aisignals_sole = True


def no_autodiscovery_marks() -> None:
    """Faust's ``venusian.attach`` (what ``App.discover`` would find) does nothing: nothing here discovers."""
    from faust.utils import venusian

    def attach(obj: Any, category: str, **kwargs: Any) -> None:
        return None

    venusian.attach = attach


def apply() -> None:
    short_fetch_wait()
    eager_delivery()
    sole_member_assignment()
    no_autodiscovery_marks()

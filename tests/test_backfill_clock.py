"""A backfill announces the same alert changes whatever its batch boundaries (the sequencer's clock).

The worker's sequencer and company engines are driven directly (no Kafka): a sorted replay is cut into
batches of several sizes, each batch's facts and clock records are handed to the engines, and every alert
change they publish is collected. Cut anywhere, each alert's changes are the same, in the same order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date, datetime, timezone

import orjson
import pytest

from processors.app import Outputs, RawLines, Worker
from processors.rules import load_rules
from streams.companies import normalizer
from streams.reader import RawLine, replay_order
from streams.synthetic import generate
from streams.topics import CLOCK, CONTROL, Topics

TOPICS = Topics("clock", 4)


def worker_without_kafka(live: bool = False) -> Worker:
    """A worker whose sequencer and engines are driven by hand: its app is built, never started."""
    return Worker("127.0.0.1:1", TOPICS, load_rules(None), normalizer(), live=live)


@pytest.fixture(scope="module")
def replay() -> list[tuple[str, bytes]]:
    lines = [orjson.dumps(e) for e in generate("conformance-mix", 3000, 11, date(2024, 1, 1), 240)]
    return [(item.origin, item.value) for item in replay_order(RawLine(f"mix:{i}", raw) for i, raw in enumerate(lines))]


def announced(items: list[tuple[str, bytes]], batch: int, batch_id: str = "b1") -> tuple[list[dict], list[int]]:
    """The alert changes a backfill of ``items`` in batches of ``batch`` publishes, in order (without
    ``stream_time``, the day each was announced on), and the clock days the engines were sent."""
    worker = worker_without_kafka()
    alerts: list[dict] = []
    clocks: list[int] = []

    def engines(out: Outputs) -> None:
        by_partition = {p: records for (topic, p), records in out.records.items() if topic == TOPICS.facts}
        clocks.extend(orjson.loads(value)["stream_day"] for _, value, _, headers in by_partition.get(0, ())
                      if headers == [(CONTROL, CLOCK)])  # each goes to every partition
        published = Outputs()
        worker._run_engines(published, by_partition)
        for (topic, _), records in sorted(published.records.items()):
            if topic == TOPICS.alerts:
                alerts.extend({k: v for k, v in orjson.loads(value).items() if k != "stream_time"}
                              for _, value, _, headers in records if not headers)

    for i in range(0, len(items), batch):
        out, facts = Outputs(), defaultdict(list)
        worker._admit(out, facts, RawLines.of(items[i : i + batch]), batch_id, None)
        worker._facts_and_clock(out, facts)
        engines(out)
    out = Outputs()
    worker._facts_and_clock(out, defaultdict(list))
    worker._barrier(out, batch_id)
    engines(out)
    return alerts, clocks


def by_alert(changes: list[dict]) -> dict[str, list[dict]]:
    """Each alert's changes in the order announced (alerts of different companies are announced in the
    order their engines are flushed)."""
    out = defaultdict(list)
    for change in changes:
        out[change["fingerprint"]].append(change)
    return dict(out)


def test_the_alert_changes_of_a_backfill_do_not_depend_on_its_batches(replay):
    whole, _ = announced(replay, len(replay))
    assert len(whole) > 50 and {a["change"] for a in whole} >= {"firing", "resolved"}
    for batch in (1_000, 337, 41):
        got, clocks = announced(replay, batch)
        assert by_alert(got) == by_alert(whole), batch
        assert clocks == sorted(set(clocks)) and len(clocks) > 2  # the day alerts are read through moves on, never back
    # no instance is announced and then taken back: the replay is sorted, nothing arrives out of order
    assert not {a["change"] for a in whole} & {"retracted", "corrected"}


def test_live_events_move_the_clock_to_their_own_day(replay):
    """Outside a backfill (no batch id) alerts fire as soon as the day's data says so: the clock is the
    latest event's own day, not the day before."""
    worker = worker_without_kafka()
    for batch_id, expected_lag in (("b1", 1), ("", 0)):
        out, facts = Outputs(), defaultdict(list)
        worker.clock_day = None
        worker._admit(out, facts, RawLines.of(replay[:500]), batch_id, None)
        worker._facts_and_clock(out, facts)
        (clock,) = {orjson.loads(v)["stream_day"] for (t, _), records in out.records.items() if t == TOPICS.facts
                    for _, v, _, h in records if h == [(CONTROL, CLOCK)]}
        latest = max(orjson.loads(raw)["occurred_at"] for _, raw in replay[:500])
        assert clock == date.fromisoformat(latest[:10]).toordinal() - expected_lag


def test_the_wall_clock_moves_stream_time_to_today_once_a_day(replay):
    """Live, stream time also follows the wall clock (alerts resolve as real days pass): one clock record
    of today to every partition while the events known are older, none again that day, none when an
    event of today is known."""
    worker = worker_without_kafka(live=True)
    sent: list[Outputs] = []

    async def produce(out: Outputs) -> None:  # instead of the Kafka producer: what would be sent
        sent.append(out)

    worker._produce = produce
    worker._admit(Outputs(), defaultdict(list), RawLines.of(replay[:500]), "", None)  # events of 2024
    worker._facts_and_clock(Outputs(), defaultdict(list))
    today = datetime.now(timezone.utc).date().toordinal()
    for _ in range(2):
        asyncio.run(worker._wall_clock())
    (out,) = sent
    assert {p: [orjson.loads(v)["stream_day"] for _, v, _, h in records if h == [(CONTROL, CLOCK)]]
            for (t, p), records in out.records.items() if t == TOPICS.facts} == {p: [today] for p in range(4)}
    fresh = worker_without_kafka(live=True)
    fresh._produce = produce
    fresh.sequencer.max_time_us = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
    asyncio.run(fresh._wall_clock())
    assert len(sent) == 1

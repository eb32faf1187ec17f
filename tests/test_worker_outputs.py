"""The worker's outputs on a backfill's private broker: events packed a line each, in order, none lost."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from benchmarks.run import synthetic_lines
from processors.app import Outputs, RawLines, Worker, pack_lines
from processors.rules import load_rules
from streams.companies import normalizer
from streams.topics import BARRIER, BATCH, CONTROL, FORMAT, LINES, Topics


def test_pack_lines_fills_each_value_up_to_the_limit_in_order():
    values = [b"x" * n for n in (3, 4, 2, 9, 12, 1, 1)]
    assert pack_lines(values, limit=9) == [b"xxx\nxxxx", b"xx", b"x" * 9, b"x" * 12, b"x\nx"]
    assert pack_lines([], limit=9) == []


@pytest.mark.parametrize("seed", range(20))
def test_pack_lines_against_a_greedy_reference(seed):
    rng = random.Random(seed)
    values = [bytes([97 + i % 26]) * rng.randint(0, 40) for i in range(rng.randint(1, 60))]
    limit = rng.randint(1, 120)
    expected, pack = [], None
    for value in values:  # greedy, one value at a time
        if pack is not None and len(pack) + 1 + len(value) <= limit:
            pack += b"\n" + value
        else:
            if pack is not None:
                expected.append(pack)
            pack = value
    expected.append(pack)
    assert pack_lines(values, limit) == expected


def test_packed_events_keep_their_place_before_a_control_record():
    out = Outputs()
    out.lines_tag = [(BATCH, b"b1")]
    out.lines[("ev", 0)] += [b"a", b"b"]
    out.lines[("ev", 1)].append(b"c")
    barrier = [(CONTROL, BARRIER), (BATCH, b"b1")]
    out.add("ev", 0, None, b"end", headers=barrier)
    packed = [(FORMAT, LINES), (BATCH, b"b1")]
    assert out.records[("ev", 0)] == [(None, b"a\nb", None, packed), (None, b"end", None, barrier)]
    assert out.records[("ev", 1)] == [(None, b"c", None, packed)] and not out.lines


def test_a_worker_that_packs_sends_the_same_events_in_the_same_order():
    """The same ingest batches through ``_admit`` with and without packing: unpacked, each events
    partition holds the same SPEC §2 records in the same order, under the same batch id."""
    topics = Topics("outputs", 4)
    items = [(f"f:{i}", line) for i, line in enumerate(synthetic_lines(5_000))]
    sent = {}
    for pack in (False, True):
        worker = Worker("127.0.0.1:1", topics, load_rules(None), normalizer(), pack_events=pack)
        out = Outputs()
        for i in range(0, len(items), 1_000):
            worker._admit(out, defaultdict(list), RawLines.of(items[i : i + 1_000]), "b1" if i < 3_000 else "b2", None)
        if out.lines:
            out.pack()
        sent[pack] = {tp: records for tp, records in out.records.items() if tp[0] == topics.events}
    assert sum(map(len, sent[False].values())) > 4_000
    for tp, records in sent[False].items():
        unpacked = [(line, headers[1:]) for _, value, _, headers in sent[True][tp] for line in value.split(b"\n")]
        assert all(headers[0] == (FORMAT, LINES) for *_, headers in sent[True][tp])
        assert unpacked == [(value, headers) for _, value, _, headers in records]
        assert len(sent[True][tp]) < len(records) / 100


@pytest.mark.e2e
def test_outputs_handed_over_mid_take_reach_the_broker_before_the_take_ends(broker):
    """The producer sends from the sequencer's event loop. A take of many ingest records (a backfill's) hands
    its outputs over every ``FLUSH_RECORDS`` events; they must leave then, not when the whole take is done,
    or the company engines wait for them with a core idle. A reader on the same loop sees the first facts
    while the sequencer is still in its take."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from processors.app import FLUSH_RECORDS
    from streams.admin import ensure_topics
    from streams.topics import FIRST_LINE, ORIGIN

    topics = Topics("midtake", 1)
    ensure_topics(broker.bootstrap, topics)
    lines = synthetic_lines(3 * FLUSH_RECORDS)
    take = [SimpleNamespace(message=SimpleNamespace(
        offset=k, value=b"\n".join(lines[i:i + 1000]),
        headers=[(FORMAT, LINES), (FIRST_LINE, str(i + 1).encode()), (ORIGIN, b"synthetic"), (BATCH, b"b1")]))
        for k, i in enumerate(range(0, len(lines), 1000))]

    class OneTake:
        async def take_events(self, n, within):
            yield take

    async def scenario():
        worker = Worker(broker.bootstrap, topics, load_rules(None), normalizer(), pack_events=True)
        worker.producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=8 * 1024 * 1024)
        reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=10)
        await worker.producer.start()
        await reader.start()
        reader.assign([TopicPartition(topics.facts, 0)])
        seen_at = None  # ingest records the sequencer had taken when the first facts were read

        async def watch():
            nonlocal seen_at
            while seen_at is None:
                if await reader.getmany(timeout_ms=10):
                    seen_at = worker.ingest_position
        watching = asyncio.create_task(watch())
        try:
            await worker._sequence(OneTake())
            await asyncio.wait_for(watching, 30)
        finally:
            watching.cancel()
            await reader.stop()
            await worker.producer.stop()
        return seen_at

    seen_at = asyncio.run(scenario())
    assert seen_at is not None and seen_at < len(take)  # read while the take still had records to go

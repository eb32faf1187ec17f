"""Where a resumed alert stream starts (the broadcaster's logic, without a broker)."""

from __future__ import annotations

import asyncio

from sinks.alert_stream import AlertBroadcaster, Subscription
from streams.topics import Topics


def _ready_id(broadcaster: AlertBroadcaster, last_event_id: dict[int, int]) -> str:
    async def first() -> bytes:
        stream = broadcaster.stream(Subscription("client"), last_event_id, False)
        try:
            return await stream.__anext__()
        finally:
            await stream.aclose()

    frame = asyncio.run(first()).decode()
    return next(line[4:] for line in frame.splitlines() if line.startswith("id: "))


def test_a_last_event_id_past_the_end_of_the_log_starts_that_partition_over():
    """Positions beyond what the log holds come from a log that is gone (the embedded broker restarted
    empty and the topic was made again): they must not hide the new log's changes below them."""
    broadcaster = AlertBroadcaster("127.0.0.1:9", Topics(partitions=2))
    broadcaster.head = [5, 3]  # the new logs hold 5 and 3 changes
    assert _ready_id(broadcaster, {0: 50, 1: 2}) == "0:0,1:2"  # partition 0 from its start, 1 where it was
    assert _ready_id(broadcaster, {0: 5, 1: 3}) == "0:5,1:3"  # at the end: nothing is missed or repeated

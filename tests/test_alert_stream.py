"""Where a resumed alert stream starts (the broadcaster's logic, without a broker)."""

from __future__ import annotations

import asyncio

import orjson

from sinks.alert_stream import WAKE_EVERY, AlertBroadcaster, AlertStreamResponse, Subscription
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


class _Message:
    def __init__(self, partition: int, offset: int, alert: dict) -> None:
        self.partition, self.offset, self.value, self.headers = partition, offset, orjson.dumps(alert), ()


def _add(broadcaster: AlertBroadcaster, partition: int, offset: int, alert: dict) -> None:
    from aiokafka import TopicPartition

    broadcaster._add({TopicPartition(broadcaster.topics.alerts, partition): [_Message(partition, offset, alert)]})


def test_a_connection_gets_its_changes_a_keep_alive_and_ends_when_the_client_goes():
    """The response writes the broadcaster's frames to ASGI ``send`` as they come, answers the
    broadcaster's ping with a comment, and on ``http.disconnect`` ends and gives its slot back."""
    async def run():
        broadcaster = AlertBroadcaster("127.0.0.1:9", Topics(partitions=2))
        sub = broadcaster.open("client", rules=("talent_drain",))
        response = AlertStreamResponse(broadcaster, sub, None, False)
        sent: list[dict] = []
        disconnect = asyncio.Event()

        async def receive():
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        async def chunks(n: int) -> list[bytes]:
            for _ in range(200):
                body = [m["body"] for m in sent if m["type"] == "http.response.body"]
                if len(body) >= n:
                    return body
                await asyncio.sleep(0.01)
            raise AssertionError(f"{n} chunks expected, got {sent}")

        serving = asyncio.ensure_future(response(None, receive, send))
        await chunks(1)  # "ready"
        _add(broadcaster, 1, 0, {"rule": "talent_drain", "company_id": "a", "status": "firing"})
        _add(broadcaster, 0, 0, {"rule": "poaching", "company_id": "b", "status": "firing"})  # filtered out
        await asyncio.sleep(WAKE_EVERY + 0.05)  # the second change was within one wake interval
        _add(broadcaster, 1, 1, {"rule": "talent_drain", "company_id": "a", "status": "resolved"})
        body = await chunks(3)
        broadcaster._ping()
        body = await chunks(4)
        open_before = len(broadcaster.subscriptions)
        disconnect.set()
        await asyncio.wait_for(serving, 5)
        await broadcaster.stop()
        return sent, body, open_before, len(broadcaster.subscriptions)

    sent, body, open_before, open_after = asyncio.run(run())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream") and b"content-length" not in headers
    assert b"event: ready" in body[0]
    assert b'"status":"firing"' in body[1] and b"id: 0:0,1:1\r\n" in body[1] and b"poaching" not in body[1]
    assert b'"status":"resolved"' in body[2] and b"id: 0:1,1:2\r\n" in body[2]
    assert body[3].startswith(b": ping - ") and body[3].endswith(b"\r\n\r\n")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert (open_before, open_after) == (1, 0)

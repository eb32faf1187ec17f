"""The alert stream behind ``GET /v1/alerts/stream``: one Kafka consumer per process, broadcast to every connection.

One :class:`AlertBroadcaster` reads every partition of the alerts topic and keeps the most recent
alert changes in memory, each already encoded as a Server-Sent Event whose id is the per-partition
position after it (``"0:12,1:7,2:0,3:3"``: the next offset of each partition). Connections read that
buffer through a cursor and are woken once per fetched batch, so a thousand subscribers cost one
consumer, one JSON parse and one SSE encoding per change. Each connection's response
(:class:`AlertStreamResponse`) writes what it is woken for straight to its ASGI ``send``; the
broadcaster also wakes every connection for a keep-alive comment every ``PING_EVERY`` seconds.

Resuming with ``Last-Event-ID`` is exact: a connection gets every change at or after the given
position of each partition, and nothing before it. When the buffer still holds everything from those
positions on (the usual case: a client that reconnects after a short break), the changes come from
memory; otherwise a short-lived consumer reads the gap from Kafka up to the point where the
connection joined the broadcast. A connection that falls so far behind that its next change has left
the buffer is closed; it reconnects with its ``Last-Event-ID`` and catches up from Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AsyncIterator, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sse_starlette.event import ServerSentEvent
from starlette.responses import StreamingResponse

from processors.alerts import alert_matches
from sinks.metrics import register_replacing
from streams.topics import CONTROL, Topics

log = logging.getLogger("aisignals.http")

SEP = "\r\n"  # sse-starlette's default line separator: frames encoded here look like its own
CATCHUP_SECONDS = 60.0  # a gap read from Kafka must be read within this
WAKE_EVERY = 0.25  # seconds: connections are woken at most this often (changes in between go out together)
PING_EVERY = 15.0  # seconds between keep-alive comments on every connection (proxies close idle ones)


class StreamFull(Exception):
    """No more alert stream connections may be opened (total or per-client cap); the text says which."""


class StreamNotReady(Exception):
    """The broadcaster has not caught up with the alerts topic yet."""


def positions_id(positions: tuple[int, ...] | list[int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in enumerate(positions))


def parse_positions(text: str | None, partitions: int) -> dict[int, int]:
    """``Last-Event-ID`` → {partition: next offset}; malformed parts are ignored."""
    out: dict[int, int] = {}
    for part in (text or "").split(","):
        p, _, o = part.strip().partition(":")
        if p.isdigit() and o.isdigit() and int(p) < partitions:
            out[int(p)] = int(o)
    return out


def frame(ids: str, tail: bytes) -> bytes:
    return b"id: " + ids.encode() + b"\r\n" + tail


def tail_of(data: bytes) -> bytes:
    """The rest of an ``alert`` event after its id line (``data`` is compact JSON: one line)."""
    return b"event: alert\r\ndata: " + data + b"\r\n\r\n"


@dataclass(slots=True)
class Change:
    """One alert change as broadcast: where it was in the topic, the fields filters look at, the SSE frame."""

    partition: int
    offset: int
    keys: dict  # rule, severity, company_id, counterparty_id (what subscription filters look at)
    positions: tuple[int, ...]  # every partition's next offset after this change
    frame: bytes  # the encoded event; its id is ``positions``
    tail: int  # where the part after the id line starts in ``frame``


@dataclass(eq=False)
class Subscription:
    """One open connection's place in the broadcast."""

    client: str
    rules: tuple = ()
    severities: tuple = ()
    companies: tuple = ()
    cursor: int = 0  # sequence number of the next change to deliver
    skip_below: list[int] | None = None  # per partition: changes before these offsets were already delivered
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    pinged: int = 0  # the broadcaster's ping count it has answered with a keep-alive comment

    def wants(self, alert: dict) -> bool:
        return alert_matches(alert, self.rules, self.severities, self.companies)


class AlertBroadcaster:
    """One consumer of the alerts topic for the whole process; connections subscribe to it."""

    def __init__(self, bootstrap: str, topics: Topics, client_kwargs: dict | None = None, buffer: int = 5000,
                 max_connections: int = 2000, max_per_client: int = 100, catchup_slots: int = 4) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.client_kwargs = client_kwargs or {}
        self.capacity = buffer
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.catchups = asyncio.Semaphore(catchup_slots)
        n = topics.partitions
        self.head = [0] * n  # next offset of each partition (everything before it has been broadcast)
        self.origin = [0] * n  # where reading began (the log start when it began)
        self.base = [0] * n  # the buffer holds every change of partition p at offsets >= base[p]
        self.changes: list[Change] = []
        self.first_seq = 0  # sequence number of changes[0]
        self.subscriptions: set[Subscription] = set()
        self.per_client: dict[str, int] = {}
        self.live = asyncio.Event()  # caught up with the topic as it was when reading began
        self.broadcast_count = 0
        self.dropped_slow = 0
        self.resumes = {"memory": 0, "kafka": 0}
        self.rejected = {"total_cap": 0, "client_cap": 0, "not_ready": 0}
        self.stopping = False
        self.closing = False  # the server is shutting down: streams end, no new ones
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._should_exit: Callable[[], bool] = lambda: False
        self._last_wake = 0.0
        self._positioned = False  # reading has begun (a restarted consumer continues from head)
        self._wake_pending: asyncio.TimerHandle | None = None
        self.pings = 0  # keep-alive rounds so far
        self.ping_frame = b""  # the comment of the latest round, encoded once for every connection
        self._pinger: asyncio.TimerHandle | None = None

    # ---- the one consumer ------------------------------------------------------------------
    async def start(self, should_exit: Callable[[], bool] | None = None) -> None:
        if should_exit is not None:
            self._should_exit = should_exit
        self._task = asyncio.create_task(self._run(), name="alert-broadcast")
        self._pinger = asyncio.get_running_loop().call_later(PING_EVERY, self._ping)

    def _ping(self) -> None:
        """One timer for every connection's keep-alive: each writes a comment when woken by it."""
        self.pings += 1
        self.ping_frame = b": ping - " + datetime.now(timezone.utc).isoformat(sep=" ").encode() + b"\r\n\r\n"
        self._wake_all()
        self._pinger = asyncio.get_running_loop().call_later(PING_EVERY, self._ping)

    async def stop(self) -> None:
        self.close_all()
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
            self._task = None

    @property
    def seq(self) -> int:
        """Sequence number the next broadcast change will get."""
        return self.first_seq + len(self.changes)

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the stream must come back when the broker does
                log.warning("alert stream consumer failed (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    client_id="aisignals-sse", fetch_max_wait_ms=50, auto_offset_reset="earliest",
                                    **self.client_kwargs)
        await consumer.start()
        self._consumer = consumer
        try:
            tps = [TopicPartition(self.topics.alerts, p) for p in range(self.topics.partitions)]
            consumer.assign(tps)
            if self._positioned:  # a restart of the consumer: continue where the broadcast is
                for tp in tps:
                    consumer.seek(tp, self.head[tp.partition])
            else:
                await consumer.seek_to_beginning(*tps)
                for tp in tps:
                    self.origin[tp.partition] = self.base[tp.partition] = self.head[tp.partition] = await consumer.position(tp)
                self._positioned = True
            while not self.stopping:
                if not self.closing and self._should_exit():
                    self.close_all()
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                if batch:
                    self._add(batch)
                if not self.live.is_set() and self._caught_up(consumer, tps):
                    self.live.set()
        finally:
            self._consumer = None
            await consumer.stop()

    def _caught_up(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
        """Fetch responses carry the true end of each log (ListOffsets does not, on Tansu)."""
        for tp in tps:
            high = consumer.highwater(tp)
            if high is None or self.head[tp.partition] < high:
                return False
        return True

    def _add(self, batch: dict) -> None:
        head = self.head
        added = 0
        for tp, messages in batch.items():
            p = tp.partition
            for m in messages:
                if m.offset < head[p]:  # the log was re-created (a broker that lost its data): start over
                    self.base[p] = m.offset
                head[p] = m.offset + 1
                if any(k == CONTROL for k, _ in (m.headers or ())):
                    continue
                alert = orjson.loads(m.value)
                positions = tuple(head)
                ids = b"id: " + positions_id(positions).encode() + b"\r\n"
                keys = {k: alert.get(k) for k in ("rule", "severity", "company_id", "counterparty_id")}
                self.changes.append(Change(p, m.offset, keys, positions, ids + tail_of(orjson.dumps(alert)), len(ids)))
                added += 1
        if not added:
            return
        self.broadcast_count += added
        excess = len(self.changes) - self.capacity
        if excess > self.capacity // 4:  # trim in steps (amortised), keeping exactly `capacity`
            for change in self.changes[:excess]:
                self.base[change.partition] = change.offset + 1
            del self.changes[:excess]
            self.first_seq += excess
        self._schedule_wake()

    def _schedule_wake(self) -> None:
        """Wake every connection now, or, if they were woken less than WAKE_EVERY ago, once that has passed:
        under a burst of changes each connection writes one chunk per interval instead of one per fetch."""
        if self._wake_pending is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._last_wake + WAKE_EVERY - loop.time()
        if delay <= 0:
            self._wake_all()
        else:
            self._wake_pending = loop.call_later(delay, self._wake_all)

    def _wake_all(self) -> None:
        self._wake_pending = None
        self._last_wake = asyncio.get_running_loop().time()
        for sub in self.subscriptions:
            sub.wake.set()

    # ---- connections -----------------------------------------------------------------------
    def open(self, client: str, rules: tuple = (), severities: tuple = (), companies: tuple = ()) -> Subscription:
        """Reserve a connection slot (raises :class:`StreamFull` past a cap)."""
        if self.closing:
            raise StreamFull("the server is shutting down")
        if len(self.subscriptions) >= self.max_connections:
            self.rejected["total_cap"] += 1
            raise StreamFull(f"the alert stream has reached its cap of {self.max_connections} connections"
                             " (AISIGNALS_SSE_MAX_CONNECTIONS); retry later")
        if self.per_client.get(client, 0) >= self.max_per_client:
            self.rejected["client_cap"] += 1
            raise StreamFull(f"{client} already has {self.max_per_client} alert stream connections open, the cap per"
                             " client (AISIGNALS_SSE_MAX_PER_CLIENT); close one or retry later")
        sub = Subscription(client, rules, severities, companies)
        self.subscriptions.add(sub)
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return sub

    def release(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.discard(sub)
            left = self.per_client.get(sub.client, 1) - 1
            if left > 0:
                self.per_client[sub.client] = left
            else:
                self.per_client.pop(sub.client, None)
        sub.closed = True
        sub.wake.set()

    def close_all(self) -> None:
        """End every stream cleanly (each response completes; clients may reconnect elsewhere)."""
        self.closing = True
        for sub in list(self.subscriptions):
            sub.closed = True
            sub.wake.set()

    async def wait_live(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.live.wait(), timeout)
        except asyncio.TimeoutError:
            self.rejected["not_ready"] += 1
            raise StreamNotReady(f"the alert stream has not caught up with {self.topics.alerts} within"
                                 f" {timeout:.0f} s (is the Kafka broker reachable?); retry later") from None

    def positions(self) -> tuple[int, ...]:
        return tuple(self.head)

    def _log_end(self, p: int) -> int:
        """Partition p's end as last seen: what was broadcast, or the high watermark of the last fetch."""
        consumer = self._consumer
        high = consumer.highwater(TopicPartition(self.topics.alerts, p)) if consumer is not None else None
        return max(self.head[p], high or 0)

    async def stream(self, sub: Subscription, resume: dict[int, int] | None, from_beginning: bool) -> AsyncIterator[bytes]:
        """The encoded events of one connection: ``ready`` first, then every matching change from its start."""
        n = self.topics.partitions
        if resume:
            # a position past the end of its log is from a log that is gone (a broker that lost its data
            # made the topic again): everything in the new log is new to this client
            resume = {p: 0 if o > self._log_end(p) else o for p, o in resume.items()}
            wanted = [resume.get(p, self.origin[p] if from_beginning else self.head[p]) for p in range(n)]
        elif from_beginning:
            wanted = list(self.origin)
        else:
            wanted = list(self.head)
        # join the broadcast now; changes before the join point come from the buffer or from Kafka
        joined = list(self.head)
        sub.cursor = self.seq
        yield ServerSentEvent(data="{}", event="ready", id=positions_id(wanted), sep=SEP).encode()
        if any(wanted[p] < joined[p] for p in range(n)):
            if all(wanted[p] >= self.base[p] for p in range(n)):
                self.resumes["memory"] += 1
                sub.cursor = self._seq_from(wanted)
            else:
                self.resumes["kafka"] += 1
                async for frame in self._catch_up(sub, wanted, joined):
                    yield frame
        if any(wanted[p] > joined[p] for p in range(n)) or sub.cursor < self.seq:
            sub.skip_below = wanted  # changes before these positions were delivered already
        sub.pinged = self.pings
        while True:
            frames = self._take(sub)
            if frames:
                yield b"".join(frames)
                continue
            if sub.closed:
                return
            if sub.pinged < self.pings:
                sub.pinged = self.pings
                yield self.ping_frame
                continue
            sub.wake.clear()
            if sub.cursor >= self.seq and not sub.closed:
                await sub.wake.wait()

    def _seq_from(self, wanted: list[int]) -> int:
        """The first buffered change at or after ``wanted`` in its partition."""
        for i, change in enumerate(self.changes):
            if change.offset >= wanted[change.partition]:
                return self.first_seq + i
        return self.seq

    def _take(self, sub: Subscription) -> list[bytes]:
        """The frames of every change since the connection's cursor that it wants (closing it if it fell
        out of the buffer)."""
        if sub.closed:
            return []
        if sub.cursor < self.first_seq:
            self.dropped_slow += 1
            sub.closed = True  # too slow: it resumes with its Last-Event-ID
            return []
        start = sub.cursor - self.first_seq
        pending = self.changes[start:]
        sub.cursor = self.seq
        out = []
        skip = sub.skip_below
        for change in pending:
            if skip is not None:
                if change.offset < skip[change.partition]:
                    continue
                if all(o >= s for o, s in zip(change.positions, skip)):
                    sub.skip_below = skip = None  # from here on the shared ids are right for it
            if not sub.wants(change.keys):
                continue
            if skip is None:
                out.append(change.frame)
            else:  # its own positions are ahead of the shared ones in some partition
                ids = positions_id([max(o, s) for o, s in zip(change.positions, skip)])
                out.append(frame(ids, change.frame[change.tail:]))
        return out

    async def _catch_up(self, sub: Subscription, wanted: list[int], until: list[int]) -> AsyncIterator[bytes]:
        """Read the gap between a resume position and the join point from Kafka (in order per partition)."""
        positions = list(wanted)
        tps = [TopicPartition(self.topics.alerts, p) for p in range(self.topics.partitions) if wanted[p] < until[p]]
        async with self.catchups:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        client_id="aisignals-sse-resume", auto_offset_reset="earliest",
                                        **self.client_kwargs)
            await consumer.start()
            try:
                consumer.assign(tps)
                for tp in tps:
                    consumer.seek(tp, wanted[tp.partition])
                left = set(tps)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + CATCHUP_SECONDS
                while left and not sub.closed:
                    if loop.time() > deadline:
                        raise TimeoutError("the alert stream could not read its gap from Kafka in time")
                    batch = await consumer.getmany(*left, timeout_ms=200)
                    frames = []
                    for tp, messages in batch.items():
                        p = tp.partition
                        for m in messages:
                            if m.offset >= until[p]:
                                break
                            positions[p] = m.offset + 1
                            if any(k == CONTROL for k, _ in (m.headers or ())):
                                continue
                            alert = orjson.loads(m.value)
                            if sub.wants(alert):
                                frames.append(frame(positions_id(positions), tail_of(orjson.dumps(alert))))
                    for tp in list(left):
                        if await consumer.position(tp) >= until[tp.partition]:
                            left.discard(tp)
                    if frames:
                        yield b"".join(frames)
            finally:
                await consumer.stop()
        for p in range(len(wanted)):
            wanted[p] = max(wanted[p], positions[p])


class AlertStreamResponse(StreamingResponse):
    """One connection's Server-Sent Events: the broadcaster's chunks, each written straight to the ASGI
    ``send``. A client that goes away (``http.disconnect``) or a server that shuts down ends the stream;
    however it ends, the connection's slot is given back.

    sse-starlette's ``EventSourceResponse`` spends a cancel scope, a lock and a generator step on every
    chunk: with 1,000 connections that was a third of the server's CPU (py-spy, benchmark (g))."""

    def __init__(self, broadcaster: AlertBroadcaster, sub: Subscription, resume: dict[int, int] | None,
                 from_beginning: bool) -> None:
        super().__init__(broadcaster.stream(sub, resume, from_beginning), media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"})
        self.broadcaster, self.sub = broadcaster, sub

    async def __call__(self, scope, receive, send) -> None:
        watcher = asyncio.ensure_future(self._until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await self.body_iterator.aclose()
            self.broadcaster.release(self.sub)

    async def _until_disconnect(self, receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.broadcaster.release(self.sub)  # wakes the stream, which then ends


class AlertStreamCollector(Collector):
    """The alert stream's metrics, read from the broadcaster at scrape time."""

    def __init__(self, broadcaster: AlertBroadcaster) -> None:
        self.b = broadcaster

    def collect(self):
        b = self.b
        yield GaugeMetricFamily("aisignals_sse_connections", "Open /v1/alerts/stream connections",
                                value=len(b.subscriptions))
        yield CounterMetricFamily("aisignals_sse_changes_total", "Alert changes broadcast to the alert stream",
                                  value=b.broadcast_count)
        resumes = CounterMetricFamily("aisignals_sse_resumes_total",
                                      "Alert streams resumed (Last-Event-ID or from_beginning), by where the gap came from",
                                      labels=["source"])
        for source, n in b.resumes.items():
            resumes.add_metric([source], n)
        yield resumes
        rejected = CounterMetricFamily("aisignals_sse_rejected_total", "Alert stream connections refused (503), by reason",
                                       labels=["reason"])
        for reason, n in b.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily("aisignals_sse_dropped_slow_total",
                                  "Alert streams closed because the client fell behind the in-memory buffer",
                                  value=b.dropped_slow)


_collectors: list[AlertStreamCollector] = []


def register_metrics(broadcaster: AlertBroadcaster) -> None:
    """Expose this process's alert stream on the default registry (replacing an earlier one)."""
    register_replacing(_collectors, AlertStreamCollector(broadcaster))

"""The alert stream of a real `aisignals up` (embedded broker): fan-out to many subscribers, exact
Last-Event-ID resumes (from memory and from Kafka), connection caps, read-your-alert, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest

from tests.conftest import ROOT, read_topic

pytestmark = pytest.mark.e2e
PER_CLIENT, TOTAL, BUFFER = 55, 60, 100
ERROR_LINE = re.compile(r"\bERROR\b|Traceback|Exception")
YESTERDAY = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()


class Up:
    """`aisignals up --no-demo` in a child process, its output collected."""

    def __init__(self, tmp_path, **env: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aisignals", "up", "--no-demo", "--port", "0", "--db", str(tmp_path / "s.duckdb")],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        self.url = self.broker = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"dashboard (http://[\d.]+:\d+/) · broker ([\d.]+:\d+)", line)
            if m:
                self.url, self.broker = m.groups()
                break
        assert self.url, "".join(self.lines)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def stop(self, sig=signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.reader.join(10)
        return code

    def errors(self) -> list[str]:
        return [line for line in self.lines if ERROR_LINE.search(line)]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    # the sink flushes every 2 s (not 0.5): a reader that does not wait for the flush would miss alerts
    server = Up(tmp_path_factory.mktemp("stream"), AISIGNALS_SSE_MAX_PER_CLIENT=str(PER_CLIENT),
                AISIGNALS_SSE_MAX_CONNECTIONS=str(TOTAL), AISIGNALS_SSE_BUFFER=str(BUFFER), AISIGNALS_FLUSH_SECONDS="2")
    yield server
    if server.proc.poll() is None:
        server.stop()


def post(up, events) -> None:
    r = httpx.post(f"{up.url}v1/events", content=b"\n".join(orjson.dumps(e) for e in events),
                   headers={"content-type": "application/x-ndjson"}, timeout=30)
    assert r.status_code == 202, r.text


def drain(company: str, hires: int = 2, departures: int = 5, tag: str = "a") -> list[dict]:
    """hires + departures yesterday: 2 + 5 fires a warning talent drain; 5 more departures raise it to critical."""
    slug = re.sub(r"\W+", "-", company.lower())
    return ([{"kind": "hiring", "company": company, "occurred_at": YESTERDAY, "event_id": f"{slug}-{tag}-h{i}"}
             for i in range(hires)]
            + [{"kind": "departure", "company": company, "occurred_at": YESTERDAY, "event_id": f"{slug}-{tag}-d{i}",
                "seniority": "senior"} for i in range(departures)])


def key(alert: dict) -> tuple:
    return tuple(alert.get(k) for k in ("fingerprint", "starts_at", "change", "severity", "status", "ends_at"))


def positions(event_id: str) -> dict[int, int]:
    return {int(p): int(o) for p, o in (part.split(":") for part in event_id.split(","))}


async def topic_after(up, start: dict[int, int], count: int) -> list[tuple]:
    """The alert changes on the alerts topic at or after ``start`` (partition → offset), per partition in
    order, as (partition, key, company_id); waits until there are ``count`` of them."""
    for _ in range(200):
        records = await asyncio.to_thread(read_topic, up.broker, "aisignals.alerts")
        out = [(r.partition, key(a), a["company_id"]) for r in sorted(records, key=lambda r: (r.partition, r.offset))
               if r.offset >= start.get(r.partition, 0) for a in [orjson.loads(r.value)]]
        if len(out) >= count:
            return out
        await asyncio.sleep(0.3)
    return out


def assert_exact(received: list[tuple], expected: list[tuple]) -> None:
    """Every expected change exactly once (none missed, none twice), each partition's in its order."""
    assert Counter(received) == Counter(k for _, k, _ in expected)
    for partition in {p for p, _, _ in expected}:
        order = [k for p, k, _ in expected if p == partition]
        assert [k for k in received if k in order] == order


async def metric(c: httpx.AsyncClient, up, name: str) -> float:
    text = (await c.get(f"{up.url}metrics")).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


async def no_streams_open(c: httpx.AsyncClient, up) -> None:
    """Earlier tests' connections are gone (the server has seen them close)."""
    for _ in range(200):
        if await metric(c, up, "aisignals_sse_connections") == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("alert stream connections still open")


class Subscriber:
    """One SSE connection (httpx), recording what it receives."""

    def __init__(self, client: httpx.AsyncClient, url: str, query: str = "", last_event_id: str | None = None) -> None:
        self.client, self.url, self.query, self.last_event_id = client, url, query, last_event_id
        self.ready_id: str | None = None
        self.alerts: list[tuple[str, dict]] = []  # (id, alert)
        self.ready = asyncio.Event()
        self.status: int | None = None
        self.body = ""
        self.ended_cleanly = False
        self.task: asyncio.Task | None = None

    def start(self) -> "Subscriber":
        self.task = asyncio.create_task(self.run())
        return self

    async def run(self) -> None:
        headers = {"last-event-id": self.last_event_id} if self.last_event_id else {}
        try:
            async with self.client.stream("GET", f"{self.url}v1/alerts/stream{self.query}", headers=headers) as r:
                self.status = r.status_code
                if r.status_code != 200:
                    self.body = (await r.aread()).decode()
                    return
                event = ident = None
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("id:"):
                        ident = line[3:].strip()
                    elif line.startswith("data:"):
                        if event == "ready":
                            self.ready_id = ident
                            self.ready.set()
                        elif event == "alert":
                            self.alerts.append((ident, orjson.loads(line[5:])))
                self.ended_cleanly = True
        finally:
            self.ready.set()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def keys(self) -> list[tuple]:
        return [key(a) for _, a in self.alerts]


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def client(**kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=httpx.Limits(max_connections=None), **kwargs)


def test_fifty_subscribers_get_every_change_exactly_once(up):
    async def run():
        async with client() as c:
            await no_streams_open(c, up)
            everyone = [Subscriber(c, up.url).start() for _ in range(40)]
            filtered = [Subscriber(c, up.url, "?company=Fan%20Co%200").start() for _ in range(10)]
            subs = everyone + filtered
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), 30)
            assert all(s.ready_id for s in subs), [s.body for s in subs if not s.ready_id]
            start = positions(everyone[0].ready_id)
            companies = [f"Fan Co {i}" for i in range(5)]
            post(up, [e for company in companies for e in drain(company)])
            await until(lambda: len(everyone[0].alerts) >= 5, 30, "the firing changes")
            post(up, [e for company in companies for e in drain(company, 0, 5, "b")])
            expected = await topic_after(up, start, 10)
            assert len(expected) == 10  # 5 firing + 5 severity raised
            await until(lambda: all(len(s.alerts) >= 10 for s in everyone) and all(len(s.alerts) >= 2 for s in filtered),
                        30, "every subscriber to receive every change")
            await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
            for s in subs:
                await s.close()
            return expected, everyone, filtered

    expected, everyone, filtered = asyncio.run(run())
    for s in everyone:
        assert_exact(s.keys(), expected)
        ids = [positions(i) for i, _ in s.alerts]
        assert all(all(b[p] >= a[p] for p in a) for a, b in zip(ids, ids[1:]))  # ids only move forward
    fan0 = [e for e in expected if e[2] == "fan-co-0"]
    assert len(fan0) == 2
    for s in filtered:
        assert_exact(s.keys(), fan0)


def test_last_event_id_resumes_exactly_from_memory_and_from_kafka(up):
    async def run():
        async with client() as c:
            await no_streams_open(c, up)
            first = Subscriber(c, up.url).start()
            await asyncio.wait_for(first.ready.wait(), 30)
            post(up, [e for i in range(3) for e in drain(f"Resume Co {i}")])
            await until(lambda: len(first.alerts) >= 3, 30, "three changes")
            post(up, [e for i in range(3) for e in drain(f"Resume Co {i}", 0, 5, "b")])
            await until(lambda: len(first.alerts) >= 6, 30, "six changes")
            await first.close()
            cut = first.alerts[1][0]  # the client saw two changes, then lost its connection
            # while it is away, more changes: a few (the buffer still holds the gap) ...
            post(up, [e for e in drain("Resume Co 3")])
            expected = await topic_after(up, positions(cut), 5)
            again = Subscriber(c, up.url, last_event_id=cut).start()
            await until(lambda: len(again.alerts) >= len(expected), 30, "the resumed stream")
            await asyncio.sleep(1.0)
            await again.close()
            # ... and so many that the gap has left the in-memory buffer: it is read from Kafka
            cut2 = again.alerts[-1][0]
            broadcast = await metric(c, up, "aisignals_sse_changes_total")
            many = [f"Many Co {i}" for i in range(140)]
            post(up, [e for company in many for e in drain(company)])
            expected2 = await topic_after(up, positions(cut2), 140)
            for _ in range(200):  # the broadcast has them too, so the gap has left its buffer
                if await metric(c, up, "aisignals_sse_changes_total") >= broadcast + 140:
                    break
                await asyncio.sleep(0.1)
            late = Subscriber(c, up.url, last_event_id=cut2).start()
            await until(lambda: len(late.alerts) >= len(expected2), 60, "the resumed stream (from Kafka)")
            post(up, drain("After Co"))  # and it goes on live after the gap
            await until(lambda: len(late.alerts) >= len(expected2) + 1, 30, "a live change after the gap")
            await asyncio.sleep(1.0)
            await late.close()
            metrics = (await c.get(f"{up.url}metrics")).text
            return first, expected, again, expected2, late, metrics

    first, expected, again, expected2, late, metrics = asyncio.run(run())
    assert len(expected) == 5  # 4 after the two seen, and Resume Co 3's firing
    assert_exact(again.keys(), expected)
    assert again.ready_id == first.alerts[1][0]
    assert len(expected2) == 140
    assert_exact(late.keys()[:140], expected2)
    assert late.alerts[-1][1]["company_id"] == "after-co" and len(late.alerts) == 141
    resumes = dict(re.findall(r'aisignals_sse_resumes_total\{source="(\w+)"\} (\d+)', metrics))
    assert int(float(resumes["memory"])) >= 1 and int(float(resumes["kafka"])) >= 1


def test_connections_past_the_caps_get_503(up):
    async def run():
        async with client() as c, client(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")) as other:
            await no_streams_open(c, up)
            mine = [Subscriber(c, up.url).start() for _ in range(PER_CLIENT)]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in mine)), 30)
            assert all(s.status == 200 for s in mine)
            over = Subscriber(c, up.url).start()
            await over.task
            theirs = [Subscriber(other, up.url).start() for _ in range(TOTAL - PER_CLIENT)]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in theirs)), 30)
            assert all(s.status == 200 for s in theirs)
            full = Subscriber(other, up.url).start()
            await full.task
            for s in mine[:3]:
                await s.close()
            # the slots come back once the server has seen the connections go
            retry = None
            for _ in range(100):
                retry = Subscriber(c, up.url).start()
                await asyncio.wait_for(retry.ready.wait(), 30)
                if retry.status == 200:
                    break
                await asyncio.sleep(0.1)
            for s in mine[3:] + theirs + [retry]:
                await s.close()
            return over, full, retry

    over, full, retry = asyncio.run(run())
    assert over.status == 503 and "per client" in over.body and str(PER_CLIENT) in over.body
    assert full.status == 503 and f"cap of {TOTAL} connections" in full.body
    assert retry.status == 200


def test_an_alert_seen_on_the_stream_is_listed_by_get_alerts_at_once(up):
    """While other events keep the sink between flushes, each alert state read off the stream is
    listed by GET /v1/alerts?fingerprint= as soon as the client asks."""
    async def run():
        async with client() as c:
            await no_streams_open(c, up)
            sub = Subscriber(c, up.url, "?rule=talent_drain").start()
            await asyncio.wait_for(sub.ready.wait(), 30)
            stop = asyncio.Event()

            async def trickle():  # unrelated events, so that the sink always has a flush pending
                i = 0
                while not stop.is_set():
                    i += 1
                    await c.post(f"{up.url}v1/events", json={"kind": "model_release", "company": "Busy Lab",
                                                            "occurred_at": YESTERDAY, "model_name": f"m{i}"})
                    await asyncio.sleep(0.1)

            background = asyncio.create_task(trickle())
            checked = []
            for i in range(3):
                for tag, hires in (("a", 2), ("b", 0)):  # firing (warning), then severity raised (critical)
                    n = len(sub.alerts) + 1
                    post(up, drain(f"Read Co {i}", hires, 5, tag))
                    await until(lambda: len(sub.alerts) >= n, 30, "the alert on the stream")
                    alert = sub.alerts[n - 1][1]
                    listed = (await c.get(f"{up.url}v1/alerts", params={"fingerprint": alert["fingerprint"]})).json()
                    checked.append((alert, listed))
            stop.set()
            await background
            unknown = (await c.get(f"{up.url}v1/alerts", params={"fingerprint": "no-such-alert"})).json()
            await sub.close()
            return checked, unknown

    checked, unknown = asyncio.run(run())
    for alert, listed in checked:
        assert [(a["fingerprint"], a["starts_at"], a["severity"], a["status"]) for a in listed] == [
            (alert["fingerprint"], alert["starts_at"], alert["severity"], alert["status"])]
    assert [a["severity"] for a, _ in checked] == ["warning", "critical"] * 3
    assert unknown == []


def _open_streams(url: str, n: int) -> tuple[list[threading.Thread], list[str]]:
    """n SSE connections in threads (like browser tabs); each records how its stream ended."""
    ended: list[str] = []
    ready = threading.Barrier(n + 1)

    def listen():
        try:
            with httpx.stream("GET", f"{url}v1/alerts/stream", timeout=httpx.Timeout(10, read=None)) as r:
                lines = r.iter_lines()
                for line in lines:
                    if line.startswith("event: ready"):
                        break
                ready.wait(30)
                for _ in lines:
                    pass
            ended.append("clean")
        except httpx.HTTPError as exc:
            ended.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=listen, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    ready.wait(30)
    return threads, ended


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shutdown_with_open_streams_prints_no_error(up, tmp_path, sig):
    server = up if sig == signal.SIGINT else Up(tmp_path)  # the module's server is stopped by the first
    threads, ended = _open_streams(server.url, 3)
    assert server.stop(sig) == 0
    for t in threads:
        t.join(15)
    assert ended == ["clean"] * 3  # each response was completed, not cut
    assert server.errors() == [], "".join(server.lines[-30:])
    assert any("ai-signals stopped" in line for line in server.lines)

"""Benchmark (g), fan-out: many SSE subscribers and ad-hoc SQL clients on one ``aisignals up`` under a steady load.

Starts a real ``aisignals up --no-demo`` (embedded broker), opens ``--subscribers`` connections to
``/v1/alerts/stream`` and keeps ``--sql-clients`` clients posting ad-hoc SQL to ``/v1/query`` in a
loop, while ``benchmarks.live_load`` (another process) produces ``--rate`` events/s for ``--seconds``
and ``--drains`` talent drains are POSTed to ``/v1/events`` over the same time. Afterwards every
alert change on the alerts topic is read once more, straight from Kafka, as the reference:

- missed: changes on the topic a subscriber did not receive; duplicates: changes it received twice;
- delivery: a subscriber's receipt time minus the alert record's timestamp (when the worker produced
  it), over every (subscriber, change); a change is received with the chunk that completes it, timed
  as it is read off the socket (the events are parsed after the run); end to end: receipt minus the
  send time of the newest event behind the change (the ``aisignals-sent`` header: the load
  generator's send, or the POST);
- the server's RSS (the ``aisignals up`` process) every second: when the subscribers are connected, at
  the end, its peak, and its least-squares slope once warm (``--subscribers 0 --sql-clients 0`` gives
  the same load's baseline, which ``benchmarks.run`` runs beside it).

    .venv/bin/python -m benchmarks.fanout                        # 1,000 subscribers, 50 SQL clients, 1k events/s, 30 s
    .venv/bin/python -m benchmarks.fanout --subscribers 50 --sql-clients 5 --seconds 10   # small

Only 127.0.0.1 is contacted; every part stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.live_load import p99_by_period, percentile, steady_load
from benchmarks.procfs import child_running, cpu_seconds, status_mb
from streams.topics import CONTROL, SENT, Topics

ROOT = Path(__file__).resolve().parent.parent
QUERIES = [
    "SELECT company_id, talent_drain_ratio FROM indicators WHERE window_days = 90 ORDER BY talent_drain_ratio DESC LIMIT 10",
    "SELECT kind, count(*) FROM events GROUP BY kind",
    "SELECT rule, severity, count(*) FROM alerts GROUP BY ALL",
    "SELECT date_trunc('hour', occurred_at) AS h, sum(amount_usd) FROM events WHERE kind = 'funding' GROUP BY h ORDER BY h",
    "SELECT company_id, max(window_end), sum(hires) FROM indicators WHERE window_days = 30 GROUP BY company_id LIMIT 50",
]


def key(alert: dict) -> tuple:
    """One announced alert state change (what ``processors.alerts.change_id`` hashes)."""
    return tuple(alert.get(k) for k in ("fingerprint", "starts_at", "change", "severity", "status", "ends_at"))


def rss_mb(pid: int) -> float | None:
    return status_mb(pid, "VmRSS")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class Server:
    """``aisignals up --no-demo`` in a child process."""

    def __init__(self, workdir: Path, subscribers: int, partitions: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "AISIGNALS_SSE_MAX_PER_CLIENT": str(subscribers + 10),
               "AISIGNALS_SSE_MAX_CONNECTIONS": str(subscribers + 10), "AISIGNALS_RATE_LIMIT_PER_SECOND": "100000",
               "AISIGNALS_RATE_LIMIT_BURST": "100000", "AISIGNALS_PARTITIONS": str(partitions)}
        self.log = open(workdir / "up.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "aisignals", "up", "--no-demo", "--port", "0",
                                      "--db", str(workdir / "fanout.duckdb")], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.url = self.bootstrap = None

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.seek(0)
            m = re.search(r"dashboard (http://[\d.]+:\d+/) · broker ([\d.]+:\d+)", self.log.read())
            if m:
                self.url, self.bootstrap = m.groups()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"aisignals up did not start: {self.log.read()[-2000:]}")

    def stop(self) -> tuple[int | None, list[str]]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.seek(0)
        errors = [line.strip() for line in self.log if re.search(r"\bERROR\b|Traceback", line)]
        return self.proc.returncode, errors


class Subscriber:
    """One SSE connection. While the run lasts it only timestamps what arrives, chunk by chunk as read off
    the socket, and parses the events afterwards: 1,000 connections in one client process would otherwise
    queue behind each other's parsing, and the delivery times would measure the client."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self.ready = asyncio.Event()
        self.error: str | None = None

    async def run(self, session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
        try:
            async with session.get(f"{url}v1/alerts/stream", timeout=aiohttp.ClientTimeout(total=None)) as response:
                if response.status != 200:
                    self.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                    self.ready.set()
                    return
                reader = asyncio.ensure_future(self._read(response, stop))
                await asyncio.wait({reader, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
                reader.cancel()
        except (aiohttp.ClientError, asyncio.CancelledError) as exc:
            self.error = self.error or type(exc).__name__
        finally:
            self.ready.set()

    async def _read(self, response, stop: asyncio.Event) -> None:
        async for chunk in response.content.iter_any():
            self.chunks.append((time.time(), chunk))
            if not self.ready.is_set() and b"event: ready" in b"".join(c for _, c in self.chunks):
                self.ready.set()

    @property
    def last(self) -> float:
        """When anything last arrived (0 if nothing has)."""
        return self.chunks[-1][0] if self.chunks else 0.0

    def received(self) -> list[tuple[float, tuple]]:
        """(arrival, change key) of each alert event, in order; an event arrived with the chunk that completed it."""
        out, rest = [], b""
        for when, chunk in self.chunks:
            *events, rest = re.split(rb"\r\n\r\n|\n\n", rest + chunk)
            for block in events:
                kind = data = None
                for line in block.splitlines():
                    if line.startswith(b"event:"):
                        kind = line[6:].strip()
                    elif line.startswith(b"data:"):
                        data = line[5:]
                if kind == b"alert" and data is not None:
                    out.append((when, key(orjson.loads(data))))
        return out


async def sql_client(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, times: list[float],
                     errors: Counter, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with session.post(f"{url}v1/query", json={"sql": rng.choice(QUERIES), "max_rows": 100}) as r:
                await r.read()
                if r.status == 200:
                    times.append(time.perf_counter() - started)
                else:
                    errors[r.status] += 1
        except aiohttp.ClientError as exc:
            errors[type(exc).__name__] += 1
            await asyncio.sleep(0.1)


async def stored_events(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.post(f"{url}v1/query", json={"sql": "SELECT count(*) FROM events"}) as r:
            return (await r.json())["rows"][0][0] if r.status == 200 else 0
    except (aiohttp.ClientError, KeyError, IndexError):
        return 0


async def post_drains(url: str, n: int, seconds: float, tag: str) -> list[str]:
    """``n`` talent drains spread over ``seconds``: each a company with 1 hire and 5 departures today. Each
    POST on a connection of its own: seconds apart, a kept-alive one may be closing on the server's side
    (its keep-alive timeout) just as the next request is written, and a POST is not retried."""
    today = datetime.now(timezone.utc).date().isoformat()
    companies = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for i in range(n):
            await asyncio.sleep(seconds / (n + 1))
            company = f"Fanout Drain {tag} {i}"
            events = [{"kind": "hiring", "company": company, "occurred_at": today, "event_id": f"fo-{tag}-{i}-h"}] + [
                {"kind": "departure", "company": company, "occurred_at": today, "event_id": f"fo-{tag}-{i}-d{j}",
                 "seniority": "senior"} for j in range(5)]
            async with session.post(f"{url}v1/events", data=b"\n".join(orjson.dumps(e) for e in events),
                                    headers={"content-type": "application/x-ndjson"}) as r:
                if r.status != 202:
                    raise RuntimeError(f"POST /v1/events answered {r.status}: {await r.text()}")
            companies.append(company)
    return companies


async def reference(bootstrap: str, topics: Topics) -> dict[tuple, list[tuple[float, float | None]]]:
    """Every alert change on the alerts topic, read once more from its start after the run: key → [(record
    time, newest event send time)] (a list: a change the pipeline announced twice shows up twice)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: dict[tuple, list] = {}
    try:
        tps = [TopicPartition(topics.alerts, p) for p in range(topics.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=3000)
            if not batch:
                ends = [(await consumer.position(tp), consumer.highwater(tp) or 0) for tp in tps]
                if all(position >= high for position, high in ends):
                    return out
            for messages in batch.values():
                for m in messages:
                    headers = dict(m.headers or ())
                    if CONTROL in headers:
                        continue
                    sent = int(headers[SENT]) / 1000 if SENT in headers else None
                    out.setdefault(key(orjson.loads(m.value)), []).append((m.timestamp / 1000, sent))
    finally:
        await consumer.stop()


def tally(received: list[tuple[float, tuple]], expected: dict[tuple, list[tuple[float, float | None]]]
          ) -> tuple[int, int, list[tuple[float, float]], list[float]]:
    """One subscriber's changes against the topic's: (missed, received twice, (record time, delivery latency)
    pairs, end-to-end latencies). An alert that flaps within a day announces the same change (the same key)
    again; the n-th receipt of a key is its n-th record on the topic (one key stays in one partition, in order)."""
    seen: Counter = Counter()  # receipts of each key so far; at the end, all of them
    delivery, end_to_end = [], []
    for when, k in received:
        occurrences = expected.get(k, [])
        record_time, sent = occurrences[seen[k]] if seen[k] < len(occurrences) else (None, None)
        seen[k] += 1
        if record_time is not None:
            delivery.append((record_time, when - record_time))
        if sent is not None:
            end_to_end.append(when - sent)
    want = Counter({k: len(v) for k, v in expected.items()})
    return sum((want - seen).values()), sum((seen - want).values()), delivery, end_to_end


async def measure(args, workdir: Path) -> dict:
    topics = Topics("aisignals", args.partitions)
    server = Server(workdir, args.subscribers, args.partitions)
    result: dict = {"subscribers": args.subscribers, "sql_clients": args.sql_clients, "rate": args.rate,
                    "seconds": args.seconds, "drains": args.drains, "load_average_before": load_average()}
    try:
        await asyncio.to_thread(server.wait_ready)
        pid = server.proc.pid
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
            subs = [Subscriber() for _ in range(args.subscribers)]
            tasks = []
            for i in range(0, len(subs), 100):  # connect in waves of 100
                group = subs[i : i + 100]
                tasks += [asyncio.create_task(s.run(session, server.url, stop)) for s in group]
                await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in group)), 60)
            failed = [s.error for s in subs if s.error]
            if failed:
                raise RuntimeError(f"{len(failed)} subscribers could not connect, e.g. {failed[0]}")
            await asyncio.sleep(1.0)
            result["server_rss_mb_start"] = rss_mb(pid)
            peak = result["server_rss_mb_start"] or 0.0
            sql_times: list[float] = []
            sql_errors: Counter = Counter()
            sql_stop = asyncio.Event()
            sql = [asyncio.create_task(sql_client(session, server.url, sql_stop, sql_times, sql_errors, i))
                   for i in range(args.sql_clients)]
            cpu_start = (cpu_seconds(pid), cpu_seconds(os.getpid()))
            drains = asyncio.create_task(post_drains(server.url, args.drains, args.seconds, str(os.getpid())))
            started = time.monotonic()
            samples = []  # (seconds into the load, server RSS MB), every second

            def sample_rss(elapsed: float) -> None:
                nonlocal peak
                now = rss_mb(pid) or 0.0
                peak = max(peak, now)
                samples.append((round(elapsed, 1), round(now, 1)))

            result["load"] = await steady_load(server.bootstrap, topics, args.rate, args.seconds,
                                               child_running(pid, "tansu"), "--drain", "1", each_second=sample_rss)
            result["server_rss_mb_samples"] = samples
            if "broker_cores_by_10s" in result["load"]:  # the embedded broker's CPU over each 10 s
                result["broker_cores_by_10s"] = result["load"].pop("broker_cores_by_10s")
            await drains
            result["load_seconds"] = time.monotonic() - started
            result["server_cpu_share"] = (cpu_seconds(pid) - cpu_start[0]) / result["load_seconds"]
            result["clients_cpu_share"] = (cpu_seconds(os.getpid()) - cpu_start[1]) / result["load_seconds"]
            result["load_average_during"] = load_average()
            sql_stop.set()
            await asyncio.gather(*sql, return_exceptions=True)
            # the pipeline may still be behind: wait until every event is stored and no subscriber has
            # received anything for 3 s (at most --settle seconds)
            produced = result["load"]["events"] + 6 * args.drains
            deadline = time.monotonic() + args.settle
            stored = 0
            while time.monotonic() < deadline:
                if stored < produced:
                    stored = await stored_events(session, server.url)
                elif time.time() - max((s.last for s in subs), default=0.0) >= 3:
                    break
                await asyncio.sleep(0.5)
            result["events_stored"] = stored
            result["settle_seconds"] = time.monotonic() - deadline + args.settle
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            expected = await reference(server.bootstrap, topics)
            total = sum(len(v) for v in expected.values())
            result["server_rss_mb_end"] = rss_mb(pid)
            result["server_rss_mb_peak"] = max(peak, result["server_rss_mb_end"] or 0.0)
        code, errors = await asyncio.to_thread(server.stop)
        result["server_exit_code"], result["server_error_lines"] = code, errors[:5]
    finally:
        server.stop()
    missed = duplicates = 0
    delivery, end_to_end = [], []
    received = [s.received() for s in subs]
    for changes in received:
        m, d, lat, e2e = tally(changes, expected)
        missed, duplicates = missed + m, duplicates + d
        delivery += lat
        end_to_end += e2e
    result.update(alert_changes=total, deliveries=sum(map(len, received)), missed=missed,
                  duplicates=duplicates, sql_queries=len(sql_times), sql_errors=dict(sql_errors))
    if delivery:
        latencies = [latency for _, latency in delivery]
        result.update(delivery_p50_ms=percentile(latencies, 0.5) * 1000, delivery_p99_ms=percentile(latencies, 0.99) * 1000,
                      delivery_max_ms=max(latencies) * 1000, delivery_p99_ms_by_10s=p99_by_period(delivery, 10.0))
    if end_to_end:
        result.update(end_to_end_p50_ms=percentile(end_to_end, 0.5) * 1000,
                      end_to_end_p99_ms=percentile(end_to_end, 0.99) * 1000)
    if sql_times:
        result.update(sql_p50_ms=percentile(sql_times, 0.5) * 1000, sql_p99_ms=percentile(sql_times, 0.99) * 1000)
    return result


def rss_after_warm_up(samples: list[tuple[float, float]], warm_up: float = 20.0) -> str:
    """How the server's RSS moved once warm (connections open, first queries and flushes done): its range
    from ``warm_up`` seconds on, and the least-squares slope over those samples (one a second; the
    first and last alone swing with each flush and query)."""
    warm = [(t, mb) for t, mb in samples if t >= warm_up]
    if len(warm) < 2:
        return ""
    return (f"; after warm-up ({warm[0][0]:.0f}–{warm[-1][0]:.0f} s) {min(mb for _, mb in warm):.0f}–"
            f"{max(mb for _, mb in warm):.0f} MB, slope {rss_slope(warm):+.2f} MB/s")


def rss_slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope (MB/s) of (seconds, MB) samples."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_mb = sum(mb for _, mb in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (mb - mean_mb) for t, mb in samples) / spread if spread else 0.0


def broker_growth(r: dict) -> str:
    """The embedded broker's CPU in the load's first and last 10 s (its cost per fetch grows with what it holds)."""
    cores = r.get("broker_cores_by_10s") or []
    return f", the embedded broker {cores[0]:.2f} → {cores[-1]:.2f} (first → last 10 s)" if len(cores) > 1 else ""


def by_period(p99s: list[float] | None) -> str:
    """Delivery p99 in each 10 s of alert record time (from the first change)."""
    return f" delivery p99 by 10 s: {' / '.join(f'{v:.0f}' for v in p99s)} ms;" if p99s else ""


def render(r: dict) -> str:
    """One row for the benchmark table."""
    return (f"| (g) fan-out: {r['subscribers']:,} SSE subscribers + {r['sql_clients']} SQL clients, {r['rate']:,} events/s"
            f" for {r['seconds']:.0f} s | {r['alert_changes']:,} alert changes, missed {r['missed']}, duplicates"
            f" {r['duplicates']}; delivery p50 / p99 {r.get('delivery_p50_ms', float('nan')):.0f} /"
            f" {r.get('delivery_p99_ms', float('nan')):.0f} ms | none missed or twice, p99 ≤ 1 s, RSS flat |"
            f"{by_period(r.get('delivery_p99_ms_by_10s'))} event sent → subscriber p50 / p99 {r.get('end_to_end_p50_ms', float('nan')):.0f} /"
            f" {r.get('end_to_end_p99_ms', float('nan')):.0f} ms; server RSS {r['server_rss_mb_start']:.0f} →"
            f" {r['server_rss_mb_end']:.0f} MB (peak {r['server_rss_mb_peak']:.0f})"
            f"{rss_after_warm_up(r.get('server_rss_mb_samples', []))}; {r['sql_queries']:,} SQL queries,"
            f" p99 {r.get('sql_p99_ms', float('nan')):.0f} ms; CPU (cores) server {r.get('server_cpu_share', float('nan')):.2f},"
            f" subscribers + SQL clients {r.get('clients_cpu_share', float('nan')):.2f}{broker_growth(r)}; load average"
            f" {r.get('load_average_during', '?')} |")


def render_baseline(r: dict) -> str:
    """The row of the same load on one ``aisignals up`` with nobody subscribed or querying."""
    return (f"| (g) baseline: the same load and drains on one `aisignals up`, no subscribers or SQL clients |"
            f" server RSS {r['server_rss_mb_start']:.0f} → {r['server_rss_mb_end']:.0f} MB (peak"
            f" {r['server_rss_mb_peak']:.0f}) | (the pipeline's own growth) | {r['alert_changes']:,} alert changes"
            f"{rss_after_warm_up(r.get('server_rss_mb_samples', []))}; CPU (cores) server"
            f" {r.get('server_cpu_share', float('nan')):.2f}{broker_growth(r)} |")


def run(subscribers: int = 1000, sql_clients: int = 50, rate: int = 1000, seconds: float = 30.0, drains: int = 10,
        partitions: int = 4, settle: float = 120.0) -> dict:
    args = argparse.Namespace(subscribers=subscribers, sql_clients=sql_clients, rate=rate, seconds=seconds,
                              drains=drains, partitions=partitions, settle=settle)
    with tempfile.TemporaryDirectory(prefix="aisignals-fanout-") as tmp:
        return asyncio.run(measure(args, Path(tmp)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--sql-clients", type=int, default=50)
    parser.add_argument("--rate", type=int, default=1000, help="events/s produced to the ingest topic")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drains", type=int, default=10, help="talent drains POSTed over the run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds the last changes get to reach everyone")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args()
    result = run(args.subscribers, args.sql_clients, args.rate, args.seconds, args.drains, args.partitions, args.settle)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    print(render(result))


if __name__ == "__main__":
    main()

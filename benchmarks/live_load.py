"""Benchmark (c), the client side: a steady load on the ingest topic, and the latency of the alerts it causes.

Runs in its own process, like a real producer and a real subscriber, so that neither competes with
the worker for its interpreter. Each event carries its send time (``aisignals-sent`` header); the
worker copies the latest send time of a company's events onto the alert changes they cause, and
this process reads them off the alerts topic: produce → alert on the alerts topic, one clock.

With ``--topic ingest`` it reads the events it sends instead, off the ingest topic: one bare hop through
the broker, the baseline that (c) is compared with (``benchmarks.run``).

    python -m benchmarks.live_load --bootstrap HOST:PORT --prefix aisignals --rate 1000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.procfs import cores_by_period, cpu_seconds
from streams.synthetic import steady
from streams.topics import SENT, Topics

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def p99_by_period(samples: list[tuple[float, float]], period: float) -> list[float]:
    """The p99 latency (ms) of the samples sent in each ``period`` seconds of the load, in order."""
    if not samples:
        return []
    first = min(sent for sent, _ in samples)
    periods: dict[int, list[float]] = {}
    for sent, latency in samples:
        periods.setdefault(int((sent - first) // period), []).append(latency)
    return [percentile(periods[k], 0.99) * 1000 if k in periods else float("nan") for k in range(max(periods) + 1)]


async def run(bootstrap: str, topics: Topics, rate: int, seconds: float, drain: float, topic: str = "alerts",
              fetch_wait_ms: int = 5) -> dict:
    # linger 5 ms, like `aisignals produce` and Kafka 4 clients: Tansu's fetch cost grows with the number
    # of stored batches, and one batch per event degrades a bare produce→consume hop to seconds in 30 s
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=fetch_wait_ms)
    await producer.start()
    await consumer.start()
    tps = ([TopicPartition(topics.ingest, 0)] if topic == "ingest"
           else [TopicPartition(topics.alerts, p) for p in range(topics.partitions)])
    consumer.assign(tps)
    for tp in tps:
        await consumer.seek_to_end(tp)
    samples: list[tuple[float, float]] = []  # (send time, latency) in seconds
    done = asyncio.Event()

    async def subscribe() -> None:
        while not done.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for messages in batch.values():
                for message in messages:
                    sent = dict(message.headers or ()).get(SENT)
                    if sent:
                        samples.append((int(sent) / 1000, now - int(sent) / 1000))

    subscriber = asyncio.create_task(subscribe())
    today = datetime.now(timezone.utc).date()
    events = list(steady(int(rate * seconds), 11, today, 1, companies=30))
    started = time.perf_counter()
    for i, event in enumerate(events):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event["occurred_at"] = datetime.now(timezone.utc).isoformat()
        await producer.send(topics.ingest, orjson.dumps(event), headers=[(SENT, str(int(time.time() * 1000)).encode())])
    await producer.flush()
    achieved = len(events) / (time.perf_counter() - started)
    await asyncio.sleep(drain)
    done.set()
    await subscriber
    await producer.stop()
    await consumer.stop()
    latencies = [latency for _, latency in samples]
    result = {"events": len(events), "rate": rate, "achieved_rate": achieved, "seconds": seconds, "topic": topic,
              "samples": len(latencies)}
    if latencies:
        result.update(p50_ms=percentile(latencies, 0.5) * 1000, p99_ms=percentile(latencies, 0.99) * 1000,
                      max_ms=max(latencies) * 1000, p99_ms_by_10s=p99_by_period(samples, 10.0))
    return result


async def steady_load(bootstrap: str, topics: Topics, rate: int, seconds: float, broker_pid: int | None,
                      *options: str, each_second: Callable[[float], None] | None = None) -> dict:
    """This load in a process of its own against ``bootstrap``: its result, with the broker's CPU in cores
    over each 10 s of it (Tansu's cost per fetch grows with the batches a partition holds: README,
    "Capacity"). ``each_second(seconds into the load)`` is called once a second while it runs."""
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.live_load", "--bootstrap", bootstrap, "--prefix", topics.prefix,
        "--partitions", str(topics.partitions), "--rate", str(rate), "--seconds", str(seconds), *options,
        stdout=subprocess.PIPE, cwd=ROOT)
    started = time.monotonic()
    readings = [cpu_seconds(broker_pid) if broker_pid else None]  # every 10 s
    called = -1.0
    waiting = asyncio.ensure_future(load.communicate())
    while not waiting.done():
        elapsed = time.monotonic() - started
        if elapsed >= 10 * len(readings):
            readings.append(cpu_seconds(broker_pid) if broker_pid else None)
        if each_second is not None and elapsed >= called + 1:
            each_second(elapsed)
            called = elapsed
        await asyncio.wait({waiting}, timeout=max(0.01, min(called + 1, 10 * len(readings)) - elapsed))
    out, _ = waiting.result()
    if load.returncode != 0:
        raise RuntimeError(f"benchmarks.live_load exited with {load.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    cores = cores_by_period(readings, 10)
    if cores is not None:
        result["broker_cores_by_10s"] = cores
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", default="aisignals")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to keep reading alerts after the last event")
    parser.add_argument("--topic", choices=("alerts", "ingest"), default="alerts",
                        help="time the alerts the events cause, or the events themselves off the ingest topic")
    parser.add_argument("--fetch-wait", type=int, default=5, help="the subscriber's fetch_max_wait_ms")
    args = parser.parse_args()
    result = asyncio.run(run(args.bootstrap, Topics(args.prefix, args.partitions), args.rate, args.seconds, args.drain,
                             args.topic, args.fetch_wait))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

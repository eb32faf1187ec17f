"""Benchmark (h), the peer: the 30/90-day indicators written plainly in Quix Streams 3.x.

The obvious Quix job over the same events and broker: one ``StreamingDataFrame`` keyed by company,
its documented stateful ``apply`` (RocksDB state, changelogged) keeping per-day buckets of the last
90 days, and one output message per event with the 30- and 90-day totals of that event's day. It
does less than ``aisignals backfill``: no validation, de-duplication, lateness, alerts or DuckDB.

Quix Streams pins versions of pydantic and confluent-kafka that differ from ai-signals', so it runs in
an environment of its own (``benchmarks/peer-requirements.txt``); ``benchmarks.run`` makes it once:

    python -m venv .venv-peer && .venv-peer/bin/pip install -r benchmarks/peer-requirements.txt
    .venv-peer/bin/python benchmarks/quix_peer.py --bootstrap HOST:PORT --input events.jsonl

Prints one JSON line: events, seconds (the whole job: producing the input, start-up and group join,
processing every event), events_per_s.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import uuid
from datetime import date, datetime

import orjson
from quixstreams import Application
from quixstreams.models.topics import TopicConfig

KEY_SENIORITIES = {"principal", "director", "vp", "c_level", "founder"}
WINDOWS = (30, 90)


def day_of(occurred_at: str) -> int:
    if len(occurred_at) == 10:
        return date.fromisoformat(occurred_at).toordinal()
    return datetime.fromisoformat(occurred_at).date().toordinal()


def indicators(event: dict, state) -> dict:
    """Add the event to its company's day buckets; the 30/90-day totals of the event's day."""
    day = day_of(event["occurred_at"])
    buckets = state.get("buckets", {})
    bucket = buckets.setdefault(str(day), [0, 0, 0, 0.0, 0, 0])
    kind, headcount = event["kind"], event.get("headcount") or 1
    if kind == "hiring":
        bucket[0] += headcount
    elif kind == "departure":
        bucket[1] += headcount
        if event.get("seniority") in KEY_SENIORITIES:
            bucket[2] += headcount
    elif kind == "funding":
        bucket[3] += event.get("amount_usd") or 0.0
        bucket[4] += 1
    elif kind == "model_release":
        bucket[5] += 1
    newest = max(int(d) for d in buckets)
    buckets = {d: v for d, v in buckets.items() if int(d) > newest - max(WINDOWS)}
    state.set("buckets", buckets)
    out = {"company": event["company"], "day": day}
    for w in WINDOWS:
        totals = [0, 0, 0, 0.0, 0, 0]
        for d, v in buckets.items():
            if day - w < int(d) <= day:
                totals = [a + b for a, b in zip(totals, v)]
        hires, departures = totals[0], totals[1]
        out[f"w{w}"] = {"hires": hires, "departures": departures, "key_departures": totals[2],
                        "net_talent_flow": hires - departures, "talent_drain_ratio": departures / max(hires, 1),
                        "funding_usd": totals[3], "funding_rounds": totals[4], "model_releases": totals[5]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True, help="JSON Lines file of events")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lines = [line for line in open(args.input, "rb").read().splitlines() if line.strip()]
    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quix-peer-") as state_dir:
        app = Application(
            broker_address=args.bootstrap, consumer_group=f"peer-{run}", auto_offset_reset="earliest",
            state_dir=state_dir, loglevel="WARNING",
            # the embedded broker's group joins take about half the session timeout (ENVIRONMENT)
            consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        )
        # Tansu describes no topic configs; Quix derives its changelog's retention from them
        config = TopicConfig(num_partitions=args.partitions, replication_factor=1,
                             extra_config={"retention.ms": "-1", "retention.bytes": "-1"})
        source = app.topic(f"peer-{run}-events", value_deserializer="json",
                           config=config)
        sink = app.topic(f"peer-{run}-indicators", value_serializer="json",
                         config=config)
        with app.get_producer() as producer:
            for line in lines:
                producer.produce(source.name, value=line, key=orjson.loads(line)["company"].encode())
        sdf = app.dataframe(source)
        sdf = sdf.apply(indicators, stateful=True)
        sdf.to_topic(sink)
        app.run(count=len(lines), timeout=120)
    elapsed = time.perf_counter() - started
    print(json.dumps({"events": len(lines), "seconds": elapsed, "events_per_s": len(lines) / elapsed}))


if __name__ == "__main__":
    main()

"""CPU time per event of each stage, in one process and without Kafka: what one core can do per stage.

    .venv/bin/python -m benchmarks.stages --events 200000 --batch 5000 [--state]

The sequencer validates, de-duplicates, applies the watermark and writes the wire JSON and facts of
each event (as ``Worker._admit`` does for a packed ingest record); the company engine turns those
facts into indicator rows and alert changes, one flush per batch (as the ``companies`` agent does per
take, with all partitions in one engine: per-partition cost is the same work split by company); the
sink stages the ``events`` rows of the batch's records in DuckDB (``stage_events``: the parse and the
names' normalisation; the insert follows). Process CPU time, so a machine
shared with other work slows these figures less than wall-clock ones; with the garbage-collector
settings the pipeline's processes run with (``aisignals.runtime.tune_gc``).

``--state`` also replays the facts into a second engine under ``tracemalloc`` (slow, so apart from the
CPU figures) and reports the bytes the engine holds per event once they are all in.
"""

from __future__ import annotations

import argparse
import json
import gc
import time
import tracemalloc
from collections import defaultdict

import duckdb

from aisignals.runtime import tune_gc
from processors.app import Outputs, RawLines, Worker
from processors.engine import Engine
from processors.facts import FACT_WIDTH, Fact
from processors.rules import load_rules
from sinks.duckdb_sink import EventRecords, drop_staged, stage_events
from streams.companies import normalizer
from streams.reader import NumberedOrigins
from streams.topics import Topics


def engine_state_bytes(rules, windows, fact_batches: list[list]) -> float:
    """Bytes the engine holds per event after every fact is in and flushed (traced allocations)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine(rules, windows)
    for facts in fact_batches:
        for item in facts:
            engine.add(Fact(*item[:FACT_WIDTH]))
        engine.advance(max(item[4] for item in facts))
        engine.flush()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / sum(map(len, fact_batches))


def measure(lines: list[bytes], batch: int = 5000, state: bool = False) -> dict:
    tune_gc()
    rules, companies = load_rules(None), normalizer()
    worker = Worker("127.0.0.1:1", Topics("stages", 1), rules, companies)  # never started: no broker needed
    fact_batches, wires = [], []
    started = time.process_time()
    for i in range(0, len(lines), batch):  # as a backfill's lines come: a run of a file's lines per record
        out, facts = Outputs(), defaultdict(list)
        worker._admit(out, facts, RawLines(lines[i : i + batch], NumberedOrigins("stages", i + 1)), "stages", None)
        fact_batches.append(facts[0])
        wires.extend(value for records in out.records.values() for _, value, _, _ in records)
    sequencer = time.process_time() - started
    engine = Engine(rules, tuple(worker.windows))
    rows = alerts = 0
    started = time.process_time()
    for facts in fact_batches:
        for item in facts:
            engine.add(Fact(*item[:FACT_WIDTH]))
        engine.advance(max(item[4] for item in facts))
        r, a = engine.flush()
        rows, alerts = rows + len(r), alerts + len(a)
    engine_s = time.process_time() - started
    parts = []
    for i in range(0, len(wires), 20_000):  # the sink's flush size
        parts.append(part := EventRecords())
        for value in wires[i : i + 20_000]:
            part.add(value, False, None)
    con = duckdb.connect()
    con.execute("SET threads = 1")  # as in a backfill's sink
    started = time.process_time()
    for part in parts:  # DuckDB's parse of the records and the names' normalisation (the insert follows)
        stage_events(part, companies.company_id, con)
        drop_staged(con)
    sink = time.process_time() - started
    con.close()
    n = len(lines)
    result = {"events": n, "batch": batch, "sequencer_us": sequencer / n * 1e6, "engine_us": engine_s / n * 1e6,
              "sink_events_rows_us": sink / n * 1e6, "indicator_rows": rows, "alert_changes": alerts}
    if state:
        del engine
        result["engine_state_bytes_per_event"] = engine_state_bytes(rules, tuple(worker.windows), fact_batches)
    return result


def main() -> None:
    from benchmarks.run import synthetic_lines

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--state", action="store_true", help="also the engine's bytes per event (tracemalloc)")
    args = parser.parse_args()
    print(json.dumps(measure(synthetic_lines(args.events), args.batch, args.state)))


if __name__ == "__main__":
    main()

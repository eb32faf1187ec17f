"""ai-signals benchmark suite: one command, a table on stdout, JSON on disk, medians of several runs.

    .venv/bin/python -m benchmarks.run                     # the full suite (N = 300k and 1M, 3 runs each)
    .venv/bin/python -m benchmarks.run --sizes 2000 --repeat 1 --live-seconds 5 --smoke   # CI smoke

Every ratio is computed against a baseline measured in the same run on the same embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import orjson

from aisignals.pipeline import Pipeline
from aisignals.runtime import quiet_logs
from benchmarks.live_load import steady_load
from benchmarks.procfs import children, cpu_seconds, status_mb
from processors.faust_tuning import LIVE_FETCH_MAX_WAIT_MS
from sinks.duckdb_sink import DuckDBSink, EventRecords
from sinks.schema import all_ddl
from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker
from streams.companies import normalizer
from streams.events import parse_event, to_wire
from streams.settings import Settings
from streams.synthetic import steady
from streams.topics import Topics

ROOT = Path(__file__).resolve().parent.parent


def synthetic_lines(n: int, seed: int = 7) -> list[bytes]:
    return [orjson.dumps(e) for e in steady(n, seed, date(2022, 1, 1), 3 * 365)]


# ---- (a) the baseline: bare aiokafka produce → consume -----------------------------------------
async def bare_aiokafka(lines: list[bytes], workdir: Path) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    broker = EmbeddedBroker(workdir / "baseline-tansu.log")
    bootstrap = broker.start()
    try:
        ensure_topics(bootstrap, Topics("bench", 4))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=50,
                                    max_partition_fetch_bytes=8 * 1024 * 1024)
        await producer.start()
        await consumer.start()
        tps = [TopicPartition("bench.events", p) for p in range(4)]
        consumer.assign(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        started = time.perf_counter()

        async def produce():
            for i, line in enumerate(lines):
                await producer.send("bench.events", line, key=str(i % 200).encode())
            await producer.flush()

        task = asyncio.create_task(produce())
        seen = 0
        while seen < len(lines):
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            seen += sum(len(m) for m in batch.values())
        await task
        elapsed = time.perf_counter() - started
        await producer.stop()
        await consumer.stop()
        return len(lines) / elapsed
    finally:
        broker.stop()


# ---- (b) end-to-end backfill: the whole `aisignals backfill` command ------------------------------
def compile_sources() -> None:
    """Byte-compile the project's modules, as ``pip install`` does for an installed package. (b) runs the
    command from this tree; where ``PYTHONDONTWRITEBYTECODE`` is set (these machines set it) nothing
    caches the compiled modules, and each of a backfill's processes compiled the ones it imports at
    every start: ~0.1 s of a 1,000-event backfill's 1.7-1.9 s (four interleaved pairs)."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for top in sorted({name.split(".")[0] for name in packages}):  # compile_dir descends into the rest
        compileall.compile_dir(str(ROOT / top), quiet=2)


def backfill_command(path: Path, n: int, workdir: Path, tag: str) -> tuple[float, dict[str, float], dict[str, float], Path]:
    """Events/s of ``aisignals backfill FILE --db DB`` from launch to exit (interpreter start-up, reading
    the file, the embedded broker, the group join and the final commit included), and the peak RSS (MB)
    and CPU seconds of each of its processes, sampled from /proc while it runs."""
    db = workdir / f"backfill-{tag}.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "aisignals", "backfill", str(path), "--db", str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    peaks: dict[str, float] = {}
    cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds when last seen)
    while proc.poll() is None:
        for pid, role in [(proc.pid, "worker")] + [(c, None) for c in children(proc.pid)]:
            role = role or _name(pid)
            mb, used = status_mb(pid, "VmHWM"), cpu_seconds(pid)
            if mb is not None and role != "other":
                peaks[role] = max(peaks.get(role, 0.0), mb)
            if used is not None and role != "other":
                cpu[pid] = (role, used)
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"aisignals backfill exited with {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
    return n / elapsed, peaks, {role: used for role, used in cpu.values()}, db


# ---- (h) the peer: the indicators alone, written plainly in Quix Streams --------------------------------
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"


def peer_python() -> Path | None:
    """The interpreter of the peer's own environment (Quix Streams pins other versions of shared
    dependencies), made on first use; None if it cannot be made."""
    if not PEER_PYTHON.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(PEER_PYTHON.parent.parent)], check=True)
            subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", "-q", "-r",
                            str(ROOT / "benchmarks" / "peer-requirements.txt")], check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
    return PEER_PYTHON


def quix_peer(path: Path, workdir: Path) -> float | None:
    python = peer_python()
    if python is None:
        return None
    broker = EmbeddedBroker(workdir / "peer-tansu.log")
    bootstrap = broker.start()
    try:
        out = subprocess.run([str(python), str(ROOT / "benchmarks" / "quix_peer.py"), "--bootstrap", bootstrap,
                              "--input", str(path)], capture_output=True, check=True, cwd=workdir, timeout=3600)
        return json.loads(out.stdout.decode().strip().splitlines()[-1])["events_per_s"]
    finally:
        broker.stop()


def _name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(cmd).decode(errors="replace")
    if "tansu" in text:
        return "broker"
    try:  # the process may end between the two reads (the input's readers are short-lived)
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
    return {"aisignals-sink": "sink", "aisignals-engin": "engines"}.get(comm, "other")


# ---- (c) steady live load ----------------------------------------------------------------------
def quantile(hist, q: float) -> float:
    """histogram_quantile over cumulative buckets (linear interpolation inside the bucket)."""
    buckets = hist.cumulative()
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, prev_bound, prev_count = q * total, 0.0, 0
    for bound, count in buckets:
        upper = float("inf") if bound == "+Inf" else float(bound)
        if count >= rank:
            if upper == float("inf"):
                return prev_bound
            return prev_bound + (upper - prev_bound) * (rank - prev_count) / max(count - prev_count, 1)
        prev_bound, prev_count = upper, count
    return prev_bound


async def live_latency(rate: int, seconds: float, workdir: Path) -> dict:
    """The pipeline as ``aisignals up`` runs it (worker + sink, live mode); the load and the alert
    subscriber in another process (``benchmarks.live_load``), timing produce → alert on the alerts topic."""
    db = workdir / "live.duckdb"
    db.unlink(missing_ok=True)
    pipeline = Pipeline(Settings(db=db, log_dir=workdir), live=True)
    await asyncio.to_thread(pipeline.start_broker)
    try:
        await pipeline.start()
        await asyncio.sleep(8)  # let the consumer group settle before timing
        result = await steady_load(pipeline.bootstrap, pipeline.topics, rate, seconds, pipeline.broker.pid)
        st = pipeline.worker.stats
        result["indicator_p50_ms"] = quantile(st.processing_latency, 0.5) * 1000
        result["indicator_p99_ms"] = quantile(st.processing_latency, 0.99) * 1000
        await pipeline.stop()
        return result
    finally:
        pipeline.stop_broker()


async def bare_hop_latency(rate: int, seconds: float, workdir: Path) -> dict:
    """(c)'s baseline: the same load on a fresh embedded broker, its events read back off the ingest topic
    by a bare aiokafka consumer with the live worker's fetch wait. One hop, nothing computed; the
    pipeline's alerts take two (ingest → the sequencer, which hands the facts to the company engines in the
    same process, then alerts → subscriber)."""
    broker = EmbeddedBroker(workdir / "hop-tansu.log")
    bootstrap = broker.start()
    try:
        topics = Topics()
        ensure_topics(bootstrap, topics)
        return await steady_load(bootstrap, topics, rate, seconds, broker.pid,
                                 "--topic", "ingest", "--fetch-wait", str(LIVE_FETCH_MAX_WAIT_MS))
    finally:
        broker.stop()


# ---- (d) the sink against a raw DuckDB bulk insert -----------------------------------------------
def sink_vs_raw(lines: list[bytes], workdir: Path) -> tuple[float, float]:
    """The sink's own path from the records' bytes (as consumed off the events topic) to committed rows,
    against appending the finished rows, already an Arrow table, to the same table."""
    events = EventRecords()
    for line in lines:
        events.add(to_wire(parse_event(line)), False, None)
    sink_db = workdir / "sink.duckdb"
    raw_db = workdir / "raw.duckdb"
    for p in (sink_db, raw_db):
        p.unlink(missing_ok=True)
    sink = DuckDBSink(sink_db, Topics(), normalizer(), "bench")
    sink.batch.events, sink.batch.records = events, len(events)
    started = time.perf_counter()
    sink.flush()  # opens the file, builds and inserts the rows, commits, closes: as in a backfill
    sink_rate = len(events) / (time.perf_counter() - started)
    # raw: the same rows already as an Arrow table, appended with one statement to the same table
    with sink.db.writer() as con:
        rows = con.sql("SELECT * FROM events").to_arrow_table()
    raw = duckdb.connect(str(raw_db))
    for ddl in all_ddl():
        raw.execute(ddl)
    raw.close()
    # timed like the sink's flush: open the file, insert, commit, close (DuckDB checkpoints on close)
    started = time.perf_counter()
    raw = duckdb.connect(str(raw_db))
    raw.register("incoming", rows)
    raw.execute("INSERT INTO events SELECT * FROM incoming")
    raw.close()
    raw_rate = rows.num_rows / (time.perf_counter() - started)
    return sink_rate, raw_rate


# ---- (e) ad-hoc queries ----------------------------------------------------------------------
QUERIES = {
    "top companies by drain": "SELECT company_id, talent_drain_ratio FROM indicators i WHERE window_days = 90 AND "
                              "window_end = (SELECT max(window_end) FROM indicators) ORDER BY talent_drain_ratio DESC LIMIT 10",
    "a company's history": "SELECT window_end, hires, departures, talent_drain_ratio FROM indicators "
                           "WHERE company_id = 'openai' AND window_days = 90 ORDER BY window_end",
    "funding by month": "SELECT date_trunc('month', occurred_at) AS m, sum(amount_usd) FROM events "
                        "WHERE kind = 'funding' GROUP BY m ORDER BY m",
    "releases by modality": "SELECT modality, count(*) FROM events WHERE kind = 'model_release' "
                            "GROUP BY modality ORDER BY 2 DESC",
    "alert evidence": "SELECT event_id, kind, occurred_at FROM events WHERE event_id IN (SELECT unnest(CAST("
                      "evidence->'event_ids' AS VARCHAR[])) FROM alerts WHERE fingerprint = (SELECT min(fingerprint) FROM alerts))",
}


def query_latencies(db: Path, runs: int = 20) -> dict[str, float]:
    con = duckdb.connect(str(db), read_only=True)
    out = {}
    for name, sql in QUERIES.items():
        con.execute(sql).fetchall()  # warm
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            con.execute(sql).fetchall()
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times) * 1000
    con.close()
    return out


def machine() -> str:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300000,1000000", help="backfill sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is reported)")
    parser.add_argument("--live-rate", type=int, default=1000)
    parser.add_argument("--live-seconds", type=float, default=60.0)
    parser.add_argument("--fanout-subscribers", type=int, default=1000, help="(g): SSE subscribers (0 skips (g))")
    parser.add_argument("--fanout-sql-clients", type=int, default=50, help="(g): clients looping ad-hoc SQL")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--no-peer", action="store_true", help="skip (h), the Quix Streams peer")
    parser.add_argument("--smoke", action="store_true", help="small sizes for CI: checks it runs, asserts no speed")
    args = parser.parse_args()
    quiet_logs()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {"machine": machine(), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "load_before": os.getloadavg(), "repeat": args.repeat, "backfill": {}}

    def save() -> None:  # after each stage: a later stage that fails does not lose what was measured
        Path(args.json).write_text(json.dumps(results, indent=2))
    compile_sources()
    with tempfile.TemporaryDirectory(prefix="aisignals-bench-") as tmp:
        workdir = Path(tmp)
        largest_db = None
        for n in sizes:
            lines = synthetic_lines(n)
            path = workdir / f"events-{n}.jsonl"
            path.write_bytes(b"\n".join(lines) + b"\n")
            base, runs, peers, peaks, cpus = [], [], [], [], []
            for r in range(args.repeat):  # interleaved, so that a change in the machine's load hits all three
                base.append(asyncio.run(bare_aiokafka(lines, workdir)))
                rate, rss, cpu, db = backfill_command(path, n, workdir, f"{n}-{r}")
                runs.append(rate)
                peaks.append(rss)
                cpus.append(cpu)
                largest_db = db
                if not args.no_peer:
                    peers.append(quix_peer(path, workdir))
            b = statistics.median(base)
            results["backfill"][n] = {"baseline_events_per_s": b, "backfill_events_per_s": statistics.median(runs),
                                      "ratio": statistics.median(runs) / b, "runs": runs, "baseline_runs": base,
                                      "peak_rss_mb": {k: max(p.get(k, 0.0) for p in peaks) for k in peaks[0]},
                                      "cpu_s": {k: statistics.median(c.get(k, 0.0) for c in cpus) for k in cpus[0]}}
            if peers and None not in peers:
                results["backfill"][n].update(peer_events_per_s=statistics.median(peers), peer_runs=peers,
                                              peer_ratio=statistics.median(peers) / b)
            print(f"N={n}: baseline {b:,.0f}/s, backfill {statistics.median(runs):,.0f}/s, peer "
                  f"{results['backfill'][n].get('peer_events_per_s', float('nan')):,.0f}/s", flush=True)
            save()
            path.unlink()
        lines = synthetic_lines(min(sizes[0], 200_000))
        # untimed first: DuckDB's first large allocation in a process costs both paths ~0.5 s more (its staging
        # took 0.86-0.95 s in the first run of a process, 0.30 s after), and the raw insert, run second, had it warm
        sink_vs_raw(lines, workdir)
        sink_runs = [sink_vs_raw(lines, workdir) for _ in range(args.repeat)]
        results["sink"] = {"sink_rows_per_s": statistics.median(r[0] for r in sink_runs),
                           "raw_rows_per_s": statistics.median(r[1] for r in sink_runs),
                           "rows": len(lines)}
        results["sink"]["ratio"] = results["sink"]["sink_rows_per_s"] / results["sink"]["raw_rows_per_s"]
        from benchmarks.stages import measure

        results["stages"] = measure(lines, batch=5000)  # CPU per event of each stage, for README "Capacity"
        results["queries_ms_p50"] = query_latencies(largest_db)
        results["queries_rows"] = sizes[-1]
        results["peak_rss_mb"] = results["backfill"][sizes[-1]]["peak_rss_mb"]
        results["rss_events"] = sizes[-1]
        live_runs, hop_runs = [], []
        for _ in range(args.repeat):  # interleaved with its baseline, like (b): one minute of the machine is noisy
            live_runs.append(asyncio.run(live_latency(args.live_rate, args.live_seconds, workdir)))
            hop_runs.append(asyncio.run(bare_hop_latency(args.live_rate, args.live_seconds, workdir)))
        results["live"], results["live_hop"] = median_run(live_runs), median_run(hop_runs)
        save()
    if args.fanout_subscribers:
        from benchmarks import fanout

        results["fanout"] = fanout.run(args.fanout_subscribers, args.fanout_sql_clients, args.live_rate,
                                       args.live_seconds, drains=10)
        # the same load and drains without subscribers or SQL clients: how the server's RSS moves on its own
        # (the pipeline's state grows with every event it keeps)
        results["fanout_baseline"] = fanout.run(0, 0, args.live_rate, args.live_seconds, drains=10)
    results["load_after"] = os.getloadavg()
    save()
    table = render(results)
    print(table)
    if args.markdown:
        command = "python -m benchmarks.run " + " ".join(sys.argv[1:])
        json_path = Path(args.json).resolve()
        json_name = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
        Path(args.markdown).write_text(f"# Benchmarks\n\nProduced by `{command}` (JSON in `{json_name}`).\n\n"
                                       + table + "\n")


def median_run(runs: list[dict]) -> dict:
    """The first of steady runs, with the median p50 and p99 over all of them, and every run's kept
    (``runs``: each run's p50, p99 and p99 by 10 s)."""
    merged = dict(runs[0])
    for key in ("p50_ms", "p99_ms"):
        merged[key] = statistics.median(run[key] for run in runs)
    merged["runs"] = [{k: run.get(k) for k in ("p50_ms", "p99_ms", "p99_ms_by_10s", "broker_cores_by_10s")} for run in runs]
    return merged


def _pairs(b: dict) -> str:
    """Each backfill run against the (a) run just before it: the ratio of the medians hides how far apart
    they were when the machine's speed moved within the run."""
    runs, base = b.get("runs", []), b.get("baseline_runs", [])
    if len(runs) < 2 or len(runs) != len(base):
        return ""
    return " (run by run: " + " / ".join(f"{x / y:.2f}" for x, y in zip(runs, base)) + ")"


def _runs(run: dict) -> str:
    """Each run's p50 / p99, when there were several."""
    runs = run.get("runs") or []
    if len(runs) < 2:
        return ""
    return "; runs p50 / p99: " + ", ".join(f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}" for r in runs) + " ms (what follows: the first run)"


def _growth(run: dict) -> str:
    """How a steady run's p99 and the broker's CPU moved from its first 10 s to its last full 10 s."""
    p99, cores = run.get("p99_ms_by_10s") or [], run.get("broker_cores_by_10s") or []
    parts = []
    if len(p99) > 1:
        parts.append(f"p99 by 10 s of the load: {' / '.join(f'{x:.0f}' for x in p99)} ms")
    if len(cores) > 1:
        parts.append(f"broker CPU {' / '.join(f'{x:.2f}' for x in cores)} cores")
    return "; " + "; ".join(parts) if parts else ""


def render(r: dict) -> str:
    load = lambda key: " / ".join(f"{x:.1f}" for x in r[key]) if key in r else "?"  # noqa: E731
    lines = [f"Machine: {r['machine']}  ",
             f"Run: {r['when']}, each figure the median of {r['repeat']} run(s); load average (1/5/15 min) "
             f"{load('load_before')} before, {load('load_after')} after: the machine is shared, so compare the ratios "
             "(each against a baseline measured in the same run), not the absolute figures.", "",
             "| figure | value | target | ratio / note |", "|---|---|---|---|"]
    for n, b in r["backfill"].items():
        lines.append(f"| (a) bare aiokafka produce→consume, N={int(n):,} | {b['baseline_events_per_s']:,.0f} events/s | the ceiling | |")
        cpu = ", ".join(f"{role} {secs:.1f}" for role, secs in sorted(b.get("cpu_s", {}).items()))
        lines.append(f"| (b) `aisignals backfill`, whole command (start-up included), N={int(n):,} | "
                     f"{b['backfill_events_per_s']:,.0f} events/s | ≥ 0.5 × (a) | {b['ratio']:.2f} × (a){_pairs(b)}; "
                     f"{int(n) / b['backfill_events_per_s']:.1f} s, CPU s by process: {cpu} |")
        if "peer_events_per_s" in b:
            lines.append(f"| (h) peer: 30/90-day indicators only, plain Quix Streams job (whole job), N={int(n):,} | "
                         f"{b['peer_events_per_s']:,.0f} events/s | (b) ahead | {b['peer_ratio']:.2f} × (a); "
                         f"(b) = {b['backfill_events_per_s'] / b['peer_events_per_s']:.2f} × (h) |")
    live = r["live"]
    lines.append(f"| (c) live {live['rate']}/s for {live['seconds']:.0f} s: produce → alert on the alerts topic, p50 / p99 | "
                 f"{live['p50_ms']:.1f} / {live['p99_ms']:.1f} ms | p99 ≤ 100 ms | "
                 f"{live['samples']} alerts read off the topic by a separate subscriber; produce → indicator row "
                 f"(in the worker) p50/p99 {live['indicator_p50_ms']:.0f} / {live['indicator_p99_ms']:.0f} ms"
                 f"{_runs(live)}{_growth(live)} |")
    if "live_hop" in r:
        hop = r["live_hop"]
        lines.append(f"| (c) baseline: the same load on a fresh broker, one bare aiokafka hop (ingest → a consumer, fetch "
                     f"wait {LIVE_FETCH_MAX_WAIT_MS} ms), p50 / p99 | {hop['p50_ms']:.1f} / {hop['p99_ms']:.1f} ms | "
                     f"(the bound on (c)) | {hop['samples']:,} events{_runs(hop)}{_growth(hop)} |")
    s = r["sink"]
    lines.append(f"| (d) DuckDB sink vs raw Arrow insert, {s.get('rows', 0):,} events rows, each to a committed file | "
                 f"{s['sink_rows_per_s']:,.0f} vs {s['raw_rows_per_s']:,.0f} rows/s | ≥ 200k and ≥ 0.5 × raw | "
                 f"{s['ratio']:.2f} × raw |")
    for name, ms in r["queries_ms_p50"].items():
        lines.append(f"| (e) query p50: {name} ({int(r['queries_rows']):,} events) | {ms:.1f} ms | ≤ 20 ms | |")
    if "stages" in r:
        st = r["stages"]
        lines.append(f"| stage CPU per event, in-process without Kafka ({st['events']:,} events, batches of {st['batch']:,}): "
                     f"sequencer / company engine / sink events rows | {st['sequencer_us']:.1f} / {st['engine_us']:.1f} / "
                     f"{st['sink_events_rows_us']:.1f} µs | (Capacity) | one core: {1e6 / st['sequencer_us']:,.0f} events/s "
                     f"through the sequencer, {1e6 / st['engine_us']:,.0f} through a company engine |")
    rss = r["peak_rss_mb"]
    engines = f"; the company engines' process {rss['engines']:.0f} MB (≤ 300 MB)" if "engines" in rss else ""
    lines.append(f"| (f) peak RSS of the worker process (sequencer + producer), {int(r['rss_events']):,} events | "
                 f"{rss.get('worker', float('nan')):.0f} MB | ≤ 300 MB | the sink process {rss.get('sink', float('nan')):.0f} MB "
                 f"(≤ 300 MB){engines}; the embedded broker (holds every topic in memory) {rss.get('broker', float('nan')):.0f} MB |")
    if "fanout" in r:
        from benchmarks import fanout

        lines.append(fanout.render(r["fanout"]))
        if "fanout_baseline" in r:
            lines.append(fanout.render_baseline(r["fanout_baseline"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Crash recovery: SIGKILL a backfill (worker, sink and broker all die) at random moments, run it again,
and compare DuckDB with a clean run. Also counts duplicate webhook notifications.

    .venv/bin/python -m tests.crash_harness --runs 20 --events 100000     # the full run
    (the test suite runs a short variant)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from sinks.database import Database
from streams.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """Counts alert notifications by state, the way a receiver that honours ``X-AISignals-Delivery-Id``
    sees them (a re-sent id is dropped); a duplicate is the same state accepted twice."""

    def __init__(self) -> None:
        self.seen: Counter = Counter()
        self.ids: set[str] = set()
        self.resent = 0  # deliveries dropped by id: what a receiver that ignores the id would see twice
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                try:
                    payload = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
                except orjson.JSONDecodeError:  # the sender was killed mid-request: nothing was delivered
                    return
                ident = self.headers["X-AISignals-Delivery-Id"]
                if ident in receiver.ids:
                    receiver.resent += 1
                    payload["alerts"] = []
                receiver.ids.add(ident)
                for a in payload["alerts"]:
                    receiver.seen[(a["fingerprint"], a["startsAt"], a["status"], a["labels"]["severity"], a["endsAt"])] += 1
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.seen.values() if n > 1)


def backfill_cmd(path: Path, db: Path, hooks: Path) -> list[str]:
    return [sys.executable, "-m", "aisignals", "backfill", str(path), "--db", str(db), "--webhooks", str(hooks)]


def snapshot(db: Path) -> dict:
    with Database(db).reader(sandboxed=False) as con:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "events": q("SELECT event_id, late FROM events ORDER BY event_id"),
            "indicators": q("SELECT * FROM indicators ORDER BY company_id, window_days, window_end"),
            "alerts": q("SELECT fingerprint, rule, company_id, counterparty_id, severity, status, starts_at, ends_at"
                        " FROM alerts ORDER BY fingerprint, starts_at"),
            "dead_letters": q("SELECT dead_letter_id FROM dead_letters ORDER BY 1"),
        }


def final_states(tables: dict) -> set[tuple]:
    """The alerts table's rows as the receiver keys them (Alertmanager times; no end = year 1)."""
    def at(day):
        return f"{day.isoformat()}T00:00:00Z" if day is not None else "0001-01-01T00:00:00Z"

    return {(fp, at(starts), status, severity, at(ends))
            for fp, _, _, _, severity, status, starts, ends in tables["alerts"]}


def run(events: int, runs: int, seed: int, kill_after: tuple[float, float], workdir: Path) -> dict:
    """``kill_after`` is a range of fractions of the clean run's wall time: a kill lands inside the
    backfill however fast this machine (or the backfill) is."""
    rng = random.Random(seed)
    path = workdir / "input.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in generate("conformance-mix", events, seed, date(2024, 1, 1), 365)) + b"\n")
    clean_receiver = Receiver()
    clean_hooks = workdir / "clean-hooks.toml"
    clean_hooks.write_text(f'[[webhook]]\nname = "r"\nurl = "{clean_receiver.url}"\n')
    clean_db = workdir / "clean.duckdb"
    started = time.monotonic()
    subprocess.run(backfill_cmd(path, clean_db, clean_hooks), check=True, capture_output=True, cwd=ROOT)
    clean_seconds = time.monotonic() - started
    clean = snapshot(clean_db)
    report = {"runs": runs, "events": events, "kills": 0, "exact_runs": 0, "events_lost": 0, "events_stored_twice": 0,
              "duplicate_notifications": 0, "resent_by_id": 0, "notifications": 0, "clean_notifications": sum(clean_receiver.seen.values()),
              "missing_final_states": 0, "skipped_transient_states": 0, "mismatches": []}
    final = final_states(clean)
    if not final <= set(clean_receiver.seen):  # the clean run itself must have announced them
        raise RuntimeError(f"the clean run's receiver lacks {len(final - set(clean_receiver.seen))} final states")
    for i in range(runs):
        db = workdir / f"run{i}.duckdb"
        receiver = Receiver()  # one subscriber per database: it must get each state change exactly once
        hooks = workdir / f"hooks{i}.toml"
        hooks.write_text(f'[[webhook]]\nname = "r"\nurl = "{receiver.url}"\n')
        kills = rng.choice([1, 2])
        for _ in range(kills):
            proc = subprocess.Popen(backfill_cmd(path, db, hooks), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(rng.uniform(*kill_after) * clean_seconds)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                report["kills"] += 1
            proc.wait()
        subprocess.run(backfill_cmd(path, db, hooks), check=True, capture_output=True, cwd=ROOT)
        got = snapshot(db)
        ids = [e[0] for e in got["events"]]
        report["events_lost"] += len({e[0] for e in clean["events"]} - set(ids))
        report["events_stored_twice"] += len(ids) - len(set(ids))
        differing = [k for k in clean if clean[k] != got[k]]
        if differing:
            report["mismatches"].append({"run": i, "tables": differing})
        else:
            report["exact_runs"] += 1
        report["duplicate_notifications"] += receiver.duplicates
        report["resent_by_id"] += receiver.resent
        report["notifications"] += sum(receiver.seen.values())
        # every alert's final state must reach the receiver; a state the clean run announced and then
        # corrected may be skipped by a run resumed past the correction (it was never final)
        report["missing_final_states"] += len(final - set(receiver.seen))
        report["skipped_transient_states"] += len(set(clean_receiver.seen) - set(receiver.seen) - final)
        receiver.server.shutdown()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-min", type=float, default=0.1, help="earliest kill, as a fraction of a clean run's wall time")
    parser.add_argument("--kill-max", type=float, default=0.9, help="latest kill, as a fraction of a clean run's wall time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aisignals-crash-") as tmp:
        report = run(args.events, args.runs, args.seed, (args.kill_min, args.kill_max), Path(tmp))
    print(json.dumps(report, indent=2))
    sys.exit(0 if not report["mismatches"] and not report["duplicate_notifications"]
             and not report["missing_final_states"] else 1)


if __name__ == "__main__":
    main()

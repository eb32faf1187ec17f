#!/usr/bin/env bash
# Set everything up, replay the bundled sample through the embedded pipeline, then query it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -f demo.duckdb demo.duckdb.wal
.venv/bin/aisignals backfill data/sample.jsonl --db demo.duckdb
.venv/bin/aisignals query --db demo.duckdb \
  "SELECT company_id, window_end, departures, hires, round(talent_drain_ratio, 2) AS drain
     FROM indicators WHERE window_days = 90
     ORDER BY talent_drain_ratio DESC, departures DESC LIMIT 10"
.venv/bin/aisignals query --db demo.duckdb \
  "SELECT rule, company_id, counterparty_id, severity, status, starts_at, ends_at
     FROM alerts ORDER BY starts_at DESC LIMIT 10"

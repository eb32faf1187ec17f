#!/usr/bin/env bash
# Set up .venv (Python only: no root, no system packages), then run the whole pipeline on this machine:
# embedded broker, worker, sink, HTTP server and dashboard, a replay of the bundled real data and a
# trickle of synthetic events about fictional organisations (Ctrl-C stops).
# Extra arguments go to `aisignals up`, e.g. `bash scripts/demo.sh --for 60` or `--rate 0` (no trickle).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
exec .venv/bin/aisignals up --db demo.duckdb "$@"

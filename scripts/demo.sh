#!/usr/bin/env bash
# Set everything up, then run the whole pipeline on this machine: embedded broker, worker, sink,
# HTTP server and dashboard, a replay of the bundled real data and a live trickle (Ctrl-C stops).
# Extra arguments go to `aisignals up`, e.g. `bash scripts/demo.sh --for 60`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/aisignals up --db demo.duckdb "$@"

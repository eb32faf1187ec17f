#!/usr/bin/env bash
# Set everything up and run the whole test suite (end-to-end tests included): the system packages the
# end-to-end tests need (apt), the .venv with the test extras, then pytest in AISIGNALS_TEST_WORKERS
# processes (default 2: the end-to-end tests spend about half their time waiting on brokers and
# subprocesses, so two workers on two cores take ~12 minutes where one takes ~22).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n "${AISIGNALS_TEST_WORKERS:-2}" --dist worksteal "$@"

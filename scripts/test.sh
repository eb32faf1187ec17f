#!/usr/bin/env bash
# Set everything up and run the whole test suite (end-to-end tests included): the system packages the
# end-to-end tests need (apt), the .venv with the test extras, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# System packages the end-to-end tests run for real: Prometheus, Alertmanager, Chromium (Debian/Ubuntu, apt).
# Only the test suite needs them (scripts/test.sh runs this); `aisignals` itself and the demo do not.
set -euo pipefail
need=()
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing ${need[*]} (apt)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "warning: ${need[*]} missing and apt-get not usable (needs root); the tests that need them will fail" >&2
fi

#!/usr/bin/env bash
# Runs the whole test suite: installs into .venv, starts PostgreSQL and Redis if they are not up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/ensure_services.sh
# the browser tests (tests/ui/) drive Debian's Chromium through Playwright (no browser download)
if [ ! -x /usr/bin/chromium ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    || echo "warning: could not install chromium; the browser tests will skip" >&2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MMGUARD_CACHE_DIR=${MMGUARD_CACHE_DIR:-$PWD/.cache/mmguard}
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Runs the whole test suite: installs into .venv, starts PostgreSQL and Redis if they are not up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/ensure_services.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MMGUARD_CACHE_DIR=${MMGUARD_CACHE_DIR:-$PWD/.cache/mmguard}
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

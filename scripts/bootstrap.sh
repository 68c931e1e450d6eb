#!/usr/bin/env bash
# Creates .venv and installs mmguard with the service and test extras (idempotent, offline-friendly:
# torch is pinned to the CPU wheel this workplace keeps on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mmguard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[service,dev]"
  touch "$stamp"
fi

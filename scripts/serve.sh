#!/usr/bin/env bash
# Starts mmguard on the embedded default (SQLite, local storage, a worker child process).
# Installs into .venv on first run. Extra arguments go to `mmguard serve` (--host, --port, --data-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/mmguard serve "$@"

#!/usr/bin/env bash
# protect-and-publish.sh SOURCE_DIR TARGET_DIR — protect a dataset folder with a running mmguard service and
# publish the protected copy to TARGET_DIR. Safe to re-run: the same day's run reuses the same job.
# Needs MMGUARD_URL and MMGUARD_API_KEY; PRESET (default balanced) and CONFIG (JSON) are optional.
set -euo pipefail
src=$1 target=$2
: "${MMGUARD_URL:?}" "${MMGUARD_API_KEY:?}"
run_key="publish-$(basename "$src")-$(date +%F)"      # one submission per folder per day, however often we retry
extra=()
if [ -n "${CONFIG:-}" ]; then extra=(--config "$CONFIG"); fi

set +e
mmguard remote submit "$src" --preset "${PRESET:-balanced}" "${extra[@]}" --wait --timeout 21600 \
    --idempotency-key "$run_key" --out "$target.protected.zip" --json > "$target.job.json"
code=$?
set -e
case $code in
  0) ;;
  3) echo "protection job failed: $(jq -r .error "$target.job.json")" >&2; exit 1 ;;
  5) echo "mmguard unreachable; the next run retries with the same key (no duplicate job)" >&2; exit 75 ;;
  *) exit "$code" ;;
esac
job=$(jq -r .id "$target.job.json")
mmguard remote report "$job" > "$target.report.json"

rm -rf "$target.tmp" && mkdir -p "$target.tmp"
unzip -q "$target.protected.zip" -d "$target.tmp"
rm -rf "$target" && mv "$target.tmp" "$target"        # publish: only protected images ever land here
echo "published $target (job $job)"

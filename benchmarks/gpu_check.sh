#!/usr/bin/env bash
# The GPU check, run from the repo root on a machine with a CUDA device (docs/evaluation.md, "On a GPU"):
#   1. tests/test_cuda.py -- the engine, the verification and the evaluation's victims on the GPU;
#   2. benchmarks/device_bench.py on cuda and, side by side, on one CPU thread of the same machine,
#      then the ratios.
# OUT (default benchmarks/out) receives the logs and JSON files. MMGUARD_ZOO_DIR: a zoo cache holding the
# small zoo (default .cache/mmguard-bench; missing models are pretrained first, about a minute each).
set -uo pipefail
OUT=${OUT:-benchmarks/out}
PY=${PYTHON:-python3}
ZOO=${MMGUARD_ZOO_DIR:-$PWD/.cache/mmguard-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nvidia-smi -L || true
$PY -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__,
'| cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

MMGUARD_CACHE_DIR=$ZOO $PY benchmarks/device_bench.py --device cpu --out "$OUT/device_cpu.json" \
  >"$OUT/device_cpu.log" 2>&1 &
cpu_bench=$!

MMGUARD_CACHE_DIR=${MMGUARD_CACHE_DIR:-$PWD/.cache/mmguard} timeout "${TEST_TIMEOUT:-300}" \
  $PY -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
tests_rc=${PIPESTATUS[0]}

MMGUARD_CACHE_DIR=$ZOO timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/device_bench.py --device cuda \
  --out "$OUT/device_cuda.json" 2>&1 | tee "$OUT/device_cuda.log"

wait "$cpu_bench"
cat "$OUT/device_cpu.log"
$PY benchmarks/device_bench.py --compare "$OUT/device_cpu.json" "$OUT/device_cuda.json" | tee "$OUT/device_ratio.log"
exit "$tests_rc"

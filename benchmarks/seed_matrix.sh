#!/usr/bin/env bash
# The evaluation matrix over several protection seeds: one benchmarks/eval_matrix.py process per
# (zoo world, task, protection seed), all at once with one torch thread each, then pooled into one
# table by benchmarks/matrix_seeds.py (docs/evaluation.md, "Over protection seeds"). Needs one core per
# process: 2 worlds x 2 tasks x 4 seeds = 16 processes.
#
#   SEEDS="0 1 2" GPU_SEEDS="3" OUT=benchmarks/out/seed_matrix bash benchmarks/seed_matrix.sh
#
# VICTIM_SEEDS: victim fine-tuning seeds (default "same": the protection seed's number, so each run
# draws both anew). EXTRA: more eval_matrix.py arguments (later ones win). GPU_SEEDS run with
# --device cuda (a GPU machine). JOB_TIMEOUT (s) stops a process, keeping the rows it finished.
# MMGUARD_CACHE_DIR must hold (or will get, ~1 min each) the small and small-fillers zoo models.
set -uo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/out/seed_matrix}
WORLDS=${WORLDS:-small small-fillers}
TASKS=${TASKS:-easy subtle}
SEEDS=${SEEDS:-0 1 2}
GPU_SEEDS=${GPU_SEEDS:-}
mkdir -p "$OUT"
runs=()
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# the fifth session's full-matrix command (docs/evaluation.md), one task and one protection seed per process
common=(--train 500 --test 200 --preset strong --ensemble llava,qwen2_vl --heldout idefics3,paligemma
        --graybox llava@1 --cm-victims black-box
        --countermeasures jpeg90,jpeg75,jpeg50,downscale,blur,noise,iss,augment,strip_rare,strip_vocab,strip_repeats
        --fractions 0.5,0.8 --recipes lr3e-4,lora,freeze_vision,epochs6 --threads 1)
for world in $WORLDS; do
  for task in $TASKS; do
    for seed in $SEEDS $GPU_SEEDS; do
      device=cpu
      [[ " $GPU_SEEDS " == *" $seed "* ]] && device=cuda
      name="$world-$task-$seed"
      runs+=("$OUT/$name.json")
      victim_seeds=${VICTIM_SEEDS:-same}
      [[ $victim_seeds == same ]] && victim_seeds=$seed  # each run an independent draw of both seeds
      timeout "${JOB_TIMEOUT:-100000}" "$PY" benchmarks/eval_matrix.py --zoo-size "$world" --tasks "$task" \
        "${common[@]}" --seeds "$victim_seeds" ${EXTRA:-} --set "seed=$seed" --device "$device" --out "$OUT/$name" >"$OUT/$name.log" 2>&1 &
    done
  done
done
wait
# the runs started above (a glob of small-* would also take small-fillers-*)
"$PY" benchmarks/matrix_seeds.py "${runs[@]}" --out "$OUT/pooled"

#!/usr/bin/env bash
# RESULTS.md, "The pair format at 136M tokens ...", table "Ablations at equal CPU time" (issue 26),
# rebuilt from scratch: four new models, each trained for MINUTES (default 10) alone on the
# machine, then evaluated by 32 steps of task-vector TTT on fresh:train:8 and fresh:heldout:8
# and without TTT on fresh:heldout:8. Run it on a quiet machine: the arms compare at equal wall
# time, so anything else running shortens an arm.
#   bash experiments/recipes/pair_format_ablations.sh [OUT_DIR] [MINUTES]
# Each arm's log, checkpoint and evaluation JSON land under OUT_DIR (default runs/abl).
{
set -eu
cd "$(dirname "$0")/../.."
OUT=${1:-runs/abl}
MINUTES=${2:-10}
mkdir -p "$OUT"
declare -A ARMS=(
  [base]=""
  [notask]="--config.task_embedding=False"
  [1d]="--config.grid_positions=False"
  [rope3d]="--config.grid_positions=False --config.rope_grid=True"
)
for arm in base notask 1d rope3d; do
  # shellcheck disable=SC2086  # the flags are meant to split
  python -m experiments.taskemb_train --config=experiments/configs/taskemb.py:cpu --config.init_from= \
    --config.out_dir="$OUT/$arm" --config.max_minutes="$MINUTES" ${ARMS[$arm]} > "$OUT/$arm.log" 2>&1
done
for arm in base notask 1d rope3d; do
  for spec in "fresh:heldout:8 embed" "fresh:heldout:8 none" "fresh:train:8 embed"; do
    set -- $spec
    name="eval_${arm}_$(echo "$1" | tr ':' '_')_$2"
    python -m experiments.taskemb_eval --checkpoint="$OUT/$arm/checkpoint" --tasks="$1" --ttt="$2" \
      --steps=32 --out="$OUT/$name.json" > "$OUT/$name.log" 2>&1
    grep "pass@2" "$OUT/$name.log" | sed "s|^|$name: |"
  done
done
exit
}

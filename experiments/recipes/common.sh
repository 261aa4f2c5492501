# Shared by the RESULTS.md section recipes (sourced, not run): the task sets they build and the
# two kinds of run they make. Every run writes under runs/; a rerun resumes it (finished
# adapters and predictions are reused), and nothing is copied from one run into another.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONPATH=$PWD
P=experiments/configs/pipeline.py

task_sets() {  # the generated task sets of the issue 13/16/17 sections (from fixed seeds)
  [ -d runs/tune_tasks ] || python -m experiments.generated_tasks --out=runs/tune_tasks \
      --per_family=2 --seed=2000000 \
      --families=crop_largest_object,gravity_cells,tile_with_flips,overlay_and,recolour_by_size,hollow_rectangles
  [ -d runs/heldout_tasks ] || python -m experiments.generated_tasks --out=runs/heldout_tasks \
      --per_family=17  # the six held-out families of the embedded model, seeds from 1,000,000
  if [ ! -d runs/heldout_tasks24 ]; then  # the first 4 tasks of each held-out family
    mkdir -p runs/heldout_tasks24 && cp runs/heldout_tasks/*_00[0-3].json runs/heldout_tasks24/
  fi
}

pipeline_run() {  # name [flags ...]: one pipeline run into runs/eval16/<name>, timed
  local name=$1; shift
  mkdir -p runs/eval16
  local t0=$(date +%s)
  python -m experiments.pipeline "$@" --config.out_dir="runs/eval16/$name" > "runs/eval16/$name.log" 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
}

ttt_arm() {  # tasks out name [--config.ttt.FIELD=value ...]: the pipeline's TTT stage alone, then
  # the true outputs' log-probability under the base model and under each adapter
  local tasks=$1 out=$2 name=$3; shift 3
  mkdir -p "$out"
  local t0=$(date +%s)
  python -m experiments.recipes.pipeline_ttt --config.tasks="$tasks" --config.out_dir="$out/$name" "$@" \
      > "$out/$name.log" 2>&1
  echo "$name $* ttt_wall=$(( $(date +%s) - t0 ))s" >> "$out/results.md"
  python -m experiments.answer_logprob --tasks="$tasks" --adapters_dir="$out/$name/adapters" \
      --label="$name" 2>/dev/null | tail -1 >> "$out/results.md"
}

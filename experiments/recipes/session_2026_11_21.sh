#!/usr/bin/env bash
# The CPU measurement queues of the 2026-11-21 session (issues 13 and 16), as they ran (RESULTS.md);
# each block was a separate background script. Paths assume the repository root.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
arm() {
  local name=$1; shift
  local t0=$(date +%s)
  python experiments/recipes/ttt_sweep.py $name "$@" > runs/ttt_sweep/$name.log 2>&1
  echo "$name $* ttt_wall=$(( $(date +%s) - t0 ))s" >> runs/ttt_sweep/results.md
  python -m experiments.answer_logprob --tasks=runs/tune_tasks --adapters_dir=runs/ttt_sweep/$name/adapters --label=$name 2>/dev/null | tail -1 >> runs/ttt_sweep/results.md
}
arm lr1e-4_e2
arm lr1e-3_e2 ttt.learning_rate=1e-3
arm lr1e-3_e4_n48 ttt.learning_rate=1e-3 ttt.epochs=4 ttt.n_max=48
# Issue 16 measurements (CPU): selection and search on dev80-small with the default model.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
run() {  # name, args...
  local name=$1; shift
  local t0=$(date +%s)
  python -m experiments.pipeline "$@" --config.out_dir=runs/eval16/$name > runs/eval16/$name.log 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
  grep "pass@2" runs/eval16/$name.log >> runs/eval16/times.txt
}
P=experiments/configs/pipeline.py
A=runs/eval/ds_ttt/adapters
run ds_nottt_greedy --config=$P:no_ttt --config.select.method=poe
run ds_ttt_greedy --config=$P:no_ttt --config.adapters_dir=$A --config.select.method=poe
run ds_nottt_dfs --config=$P:no_ttt --config.select.method=poe --config.search.method=dfs
run ds_ttt_dfs --config=$P:no_ttt --config.adapters_dir=$A --config.select.method=poe --config.search.method=dfs
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
run() {
  local name=$1; shift
  local t0=$(date +%s)
  python -m experiments.pipeline "$@" --config.out_dir=runs/eval16/$name > runs/eval16/$name.log 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
}
P=experiments/configs/pipeline.py
A=runs/eval/ds_ttt/adapters
run ds_ttt_dfs001 --config=$P:no_ttt --config.adapters_dir=$A --config.select.method=poe --config.search.method=dfs --config.search.min_prob=0.001 --config.search.max_candidates=16
# Issue 13 ablation (1-D vs grid positions: true-answer log-prob on 102 held-out tasks) and the
# fine-tuned-only held-out run with PoE scores (issues 13 and 16).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
while pgrep -f runs/train_1d.py > /dev/null; do sleep 20; done
t0=$(date +%s)
python -m experiments.answer_logprob --tasks=runs/heldout_tasks --label=grid_positions_default > runs/eval16/lp_grid.out 2>&1
echo "lp_grid wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
t0=$(date +%s)
python -m experiments.answer_logprob --tasks=runs/heldout_tasks --model_dir=runs/finetune_cpu_1d/model --label=positions_1d > runs/eval16/lp_1d.out 2>&1
echo "lp_1d wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
t0=$(date +%s)
python -m experiments.pipeline --config=experiments/configs/pipeline.py:no_ttt --config.tasks=runs/heldout_tasks --config.select.method=poe --config.out_dir=runs/eval16/ho_nottt_greedy > runs/eval16/ho_nottt_greedy.log 2>&1
echo "ho_nottt_greedy rc=$? wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
# Issue 13 TTT ablations on 24 held-out-family tasks (lr 1e-3: tuned on training families),
# measured by the true outputs' log-prob per token under base vs TTT adapters.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD TASKS=runs/heldout_tasks24 OUT=runs/ablate
mkdir -p runs/ablate
arm() {
  local name=$1; shift
  local t0=$(date +%s)
  python experiments/recipes/ttt_sweep.py $name ttt.learning_rate=1e-3 "$@" > runs/ablate/$name.log 2>&1
  echo "$name $* ttt_wall=$(( $(date +%s) - t0 ))s" >> runs/ablate/results.md
  python -m experiments.answer_logprob --tasks=runs/heldout_tasks24 --adapters_dir=runs/ablate/$name/adapters --label=$name 2>/dev/null | tail -1 >> runs/ablate/results.md
}
arm aug
arm noaug ttt.augment=False
arm shared ttt.shared_adapter=True

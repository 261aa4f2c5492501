#!/usr/bin/env bash
# The CPU measurements of the 2026-11-21 and -22 sessions (issues 13, 16, 17; RESULTS.md), one
# step per subcommand, as they ran (each was a background job on the 2-core machine):
#   session_2026_11_21.sh sweep      # TTT settings on 12 training-family tasks (runs/tune_tasks)
#   session_2026_11_21.sh dev80small # selection x search on dev80-small (runs/eval16)
#   session_2026_11_21.sh positions  # grid-aware vs 1-D positions: truth log-prob, 102 held-out tasks
#   session_2026_11_21.sh heldout    # fine-tuned-only held-out run with PoE scores (resumes)
#   session_2026_11_21.sh heldout_ttt # the same 102 tasks with per-task TTT (pipeline defaults)
#   session_2026_11_21.sh selftrain_ds # self-training rounds on dev80-small (exactness-only and default verification)
#   session_2026_11_21.sh ablate [aug|noaug|shared ...]  # TTT ablations on 24 held-out tasks
#   session_2026_11_21.sh selftrain_ho # self-training (verify=control, DFS + PoE) on the 24-task held-out sample
#   session_2026_11_21.sh selftrain_dev80 # the same on all of dev-80 (after dev80_dfs ttt)
#   session_2026_11_21.sh dev80      # all of dev-80: fine-tuned only, then with TTT (both resume)
#   session_2026_11_21.sh heldout_dfs [ttt|nottt|ttt001] # depth-first search on the 24-task held-out sample: TTT, fine-tuned, TTT at p > 0.1%
#   session_2026_11_21.sh selftrain_control [default|lr1e-3] # dev80-small self-training, verify=control (after selftrain_ds)
#   session_2026_11_21.sh dev80_dfs [ttt|nottt] # depth-first search on dev-80 (after dev80: its TTT adapters)
# The body is one brace group ending in exit: bash parses it whole before running it, so editing
# this file while a copy runs cannot change what that copy does.
# runs/tune_tasks: experiments.generated_tasks --out=runs/tune_tasks --per_family=2 --seed=2000000
#   --families=crop_largest_object,gravity_cells,tile_with_flips,overlay_and,recolour_by_size,hollow_rectangles
# runs/finetune_cpu_1d/model: python -m experiments.finetune --config=experiments/configs/finetune.py:cpu \
#   --config.model_overrides.grid_positions=False --config.model_overrides.name=arc-cpu-1d \
#   --config.out_dir=runs/finetune_cpu_1d
{
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
P=experiments/configs/pipeline.py
DS_ADAPTERS=runs/eval/ds_ttt/adapters  # the dev80-small TTT run of issue 13 (pipeline defaults)

ttt_arm() {  # tasks out name [--config.ttt.FIELD=value ...]: TTT, then the truth's log-prob base vs TTT
  local tasks=$1 out=$2 name=$3; shift 3
  mkdir -p "$out"
  local t0=$(date +%s)
  python -m experiments.recipes.pipeline_ttt --config.tasks="$tasks" --config.out_dir="$out/$name" "$@" \
      > "$out/$name.log" 2>&1
  echo "$name $* ttt_wall=$(( $(date +%s) - t0 ))s" >> "$out/results.md"
  python -m experiments.answer_logprob --tasks="$tasks" --adapters_dir="$out/$name/adapters" \
      --label="$name" 2>/dev/null | tail -1 >> "$out/results.md"
}

pipeline_run() {  # name [flags ...]: one pipeline run into runs/eval16/<name>, timed
  local name=$1; shift
  mkdir -p runs/eval16
  local t0=$(date +%s)
  python -m experiments.pipeline "$@" --config.out_dir="runs/eval16/$name" > "runs/eval16/$name.log" 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - t0 ))s" >> runs/eval16/times.txt
}

selftrain_from() {  # tasks name adapters_run predictions_run: self-training rounds (verify=control,
  # DFS + PoE) from copies of one run's adapters and another's predictions, so only the rounds run
  local tasks=$1 name=$2 ads=$3 preds=$4 st=runs/eval16/$2
  mkdir -p "$st/adapters" "$st/predictions"
  cp -n "$ads"/adapters/* "$st/adapters/"  # no-data tasks have a record too
  cp -n "$preds"/predictions/*.json "$st/predictions/"
  pipeline_run "$name" --config.tasks="$tasks" --config.search.method=dfs --config.select.method=poe \
      --config.self_train.enabled=True --config.self_train.verify=control
}

case "${1:-}" in
  sweep)
    ttt_arm runs/tune_tasks runs/ttt_sweep lr1e-4_e2
    ttt_arm runs/tune_tasks runs/ttt_sweep lr1e-3_e2 --config.ttt.learning_rate=1e-3
    ttt_arm runs/tune_tasks runs/ttt_sweep lr1e-3_e4_n48 --config.ttt.learning_rate=1e-3 --config.ttt.epochs=4 --config.ttt.n_max=48 ;;
  dev80small)
    pipeline_run ds_nottt_greedy --config=$P:no_ttt --config.select.method=poe
    pipeline_run ds_ttt_greedy --config=$P:no_ttt --config.adapters_dir=$DS_ADAPTERS --config.select.method=poe
    pipeline_run ds_nottt_dfs --config=$P:no_ttt --config.select.method=poe --config.search.method=dfs
    pipeline_run ds_ttt_dfs --config=$P:no_ttt --config.adapters_dir=$DS_ADAPTERS --config.select.method=poe \
        --config.search.method=dfs
    pipeline_run ds_ttt_dfs001 --config=$P:no_ttt --config.adapters_dir=$DS_ADAPTERS --config.select.method=poe \
        --config.search.method=dfs --config.search.min_prob=0.001 --config.search.max_candidates=16 ;;
  positions)
    python -m experiments.answer_logprob --tasks=runs/heldout_tasks --label=grid_positions_default
    python -m experiments.answer_logprob --tasks=runs/heldout_tasks \
        --model_dir=runs/finetune_cpu_1d/model --label=positions_1d ;;
  heldout)
    pipeline_run ho_nottt_greedy --config=$P:no_ttt --config.tasks=runs/heldout_tasks --config.select.method=poe ;;
  heldout_ttt)  # the third session seeded adapters/ with the 41 of runs/eval/ho_ttt (same TTT
    # config, metadata checked); the TTT stage skips tasks whose adapter exists
    pipeline_run ho_ttt_greedy --config.tasks=runs/heldout_tasks --config.select.method=poe ;;
  selftrain_ds)  # self-training on dev80-small after the main command's TTT and prediction: each
    # arm starts from a copy of its adapters and predictions, so only the rounds run
    pipeline_run main_run
    for arm in "ds_st_exact --config.self_train.max_token_acc_drop=1.0" "ds_st" \
               "ds_st_lr1e-3_e2 --config.self_train.learning_rate=1e-3 --config.self_train.epochs=2"; do
      set -- $arm
      mkdir -p "runs/eval16/$1" && cp -r runs/eval16/main_run/adapters runs/eval16/main_run/predictions "runs/eval16/$1/"
      pipeline_run "$@" --config.self_train.enabled=True
    done ;;
  ablate)  # ablate [ARM ...]: the arms named (default all); a rerun resumes each arm's adapters
    shift; arms=${*:-aug noaug shared}
    for arm in $arms; do
      case $arm in
        aug) ttt_arm runs/heldout_tasks24 runs/ablate aug --config.ttt.learning_rate=1e-3 ;;
        noaug) ttt_arm runs/heldout_tasks24 runs/ablate noaug --config.ttt.learning_rate=1e-3 \
                   --config.ttt.augment=False ;;
        shared) ttt_arm runs/heldout_tasks24 runs/ablate shared --config.ttt.learning_rate=1e-3 \
                    --config.ttt.shared_adapter=True ;;
        *) echo "unknown ablation arm: $arm (aug, noaug, shared)" >&2; exit 2 ;;
      esac
    done ;;
  selftrain_control)  # selftrain_control [default|lr1e-3 ...]: self-training arms with the
    # control M-step verification (the default arm; the M-step at lr 1e-3 for 2 epochs)
    shift; for arm in ${*:-default lr1e-3}; do
      case $arm in
        default) set -- ds_st_control ;;
        lr1e-3) set -- ds_st_control_lr1e-3_e2 --config.self_train.learning_rate=1e-3 \
                    --config.self_train.epochs=2 ;;
        *) echo "unknown selftrain_control arm: $arm (default, lr1e-3)" >&2; exit 2 ;;
      esac
      mkdir -p "runs/eval16/$1"
      cp -r runs/eval16/main_run/adapters runs/eval16/main_run/predictions "runs/eval16/$1/"
      pipeline_run "$@" --config.self_train.enabled=True --config.self_train.verify=control
    done ;;
  heldout_dfs)  # heldout_dfs [ttt|nottt|ttt001 ...]: the held-out TTT run's adapters, or none;
    # greedy figures: the same tasks of ho_*_greedy
    shift; for arm in ${*:-ttt nottt}; do
      case $arm in
        ttt) pipeline_run ho24_ttt_dfs --config=$P:no_ttt --config.tasks=runs/heldout_tasks24 \
                 --config.adapters_dir=runs/eval16/ho_ttt_greedy/adapters \
                 --config.select.method=poe --config.search.method=dfs ;;
        nottt) pipeline_run ho24_nottt_dfs --config=$P:no_ttt --config.tasks=runs/heldout_tasks24 \
                   --config.select.method=poe --config.search.method=dfs ;;
        ttt001) pipeline_run ho24_ttt_dfs001 --config=$P:no_ttt --config.tasks=runs/heldout_tasks24 \
                    --config.adapters_dir=runs/eval16/ho_ttt_greedy/adapters --config.select.method=poe \
                    --config.search.method=dfs --config.search.min_prob=0.001 \
                    --config.search.max_candidates=16 ;;
        *) echo "unknown heldout_dfs arm: $arm (ttt, nottt, ttt001)" >&2; exit 2 ;;
      esac
    done ;;
  selftrain_ho)  # the 24 held-out tasks: round 0 is ho24_ttt_dfs (the held-out TTT run's adapters,
    # depth-first search, PoE selection), so the E-step searches and scores as the issue says
    selftrain_from runs/heldout_tasks24 ho24_st_control runs/eval16/ho_ttt_greedy runs/eval16/ho24_ttt_dfs ;;
  selftrain_dev80)  # all of dev-80, round 0 = dev80_ttt_dfs (after dev80 and dev80_dfs ttt)
    selftrain_from dev80 dev80_st_control runs/eval16/dev80_ttt_greedy runs/eval16/dev80_ttt_dfs ;;
  dev80)  # fine-tuned only, then per-task TTT (pipeline defaults); PoE scores for every selection
    pipeline_run dev80_nottt_greedy --config=$P:no_ttt --config.tasks=dev80 --config.select.method=poe
    pipeline_run dev80_ttt_greedy --config.tasks=dev80 --config.select.method=poe ;;
  dev80_dfs)  # dev80_dfs [ttt|nottt ...]: greedy figures are dev80_*_greedy's
    shift; for arm in ${*:-ttt nottt}; do
      case $arm in
        ttt) pipeline_run dev80_ttt_dfs --config=$P:no_ttt --config.tasks=dev80 \
                 --config.adapters_dir=runs/eval16/dev80_ttt_greedy/adapters \
                 --config.select.method=poe --config.search.method=dfs ;;
        nottt) pipeline_run dev80_nottt_dfs --config=$P:no_ttt --config.tasks=dev80 \
                   --config.select.method=poe --config.search.method=dfs ;;
        *) echo "unknown dev80_dfs arm: $arm (ttt, nottt)" >&2; exit 2 ;;
      esac
    done ;;
  *) echo "usage: $0 sweep|dev80small|positions|heldout|heldout_ttt|selftrain_ds|selftrain_control|heldout_dfs|selftrain_ho|selftrain_dev80|ablate|dev80|dev80_dfs" >&2; exit 2 ;;
esac
exit
}

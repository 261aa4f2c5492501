#!/usr/bin/env bash
# RESULTS.md "Candidate search and product-of-experts selection (issue 16)", from scratch: greedy
# vs depth-first search, selection by vote / PoE / vote+PoE on the same stored candidates, with
# the embedded in-context model (arc-cpu), fine-tuned only or with each task's TTT adapter.
#   candidate_search_poe.sh dev80small            # 5 runs on dev80-small, then their tables
#   candidate_search_poe.sh heldout_dfs [ttt|nottt|ttt001 ...]  # the 24-task held-out sample
#   candidate_search_poe.sh dev80_dfs [ttt|nottt ...]           # all of dev-80
#   candidate_search_poe.sh ablate [aug|noaug|shared ...]       # TTT ablations, 24 held-out tasks
# The greedy rows of the held-out and dev-80 tables are cpu_model_ttt_gain.sh's heldout and
# dev80 runs. The TTT adapters come from the pipeline's TTT stage (experiments/recipes/
# pipeline_ttt.py) with the pipeline defaults, trained here when missing.
{
source "$(dirname "$0")/common.sh"
task_sets

adapters() {  # name tasks [flags ...]: the TTT stage alone into runs/eval16/<name> (resumes)
  local name=$1 tasks=$2; shift 2
  python -m experiments.recipes.pipeline_ttt --config.tasks="$tasks" \
      --config.out_dir="runs/eval16/$name" "$@" > "runs/eval16/$name.ttt.log" 2>&1
}

table() {  # tasks run ...: the three selections on each run's stored candidates
  local tasks=$1; shift
  for run in "$@"; do python -m experiments.selection_table --run="runs/eval16/$run" --tasks="$tasks"; done
}

mkdir -p runs/eval16
case "${1:-}" in
  dev80small)  # "TTT": the issue-13 dev80-small adapters (TTT at 2048 tokens)
    adapters ds_ttt dev80-small --config.ttt.max_tokens=2048
    A=runs/eval16/ds_ttt/adapters
    pipeline_run ds_nottt_greedy --config=$P:no_ttt --config.tasks=dev80-small --config.select.method=poe
    pipeline_run ds_ttt_greedy --config=$P:no_ttt --config.tasks=dev80-small --config.adapters_dir=$A \
        --config.select.method=poe
    pipeline_run ds_nottt_dfs --config=$P:no_ttt --config.tasks=dev80-small --config.select.method=poe \
        --config.search.method=dfs
    pipeline_run ds_ttt_dfs --config=$P:no_ttt --config.tasks=dev80-small --config.adapters_dir=$A \
        --config.select.method=poe --config.search.method=dfs
    pipeline_run ds_ttt_dfs001 --config=$P:no_ttt --config.tasks=dev80-small --config.adapters_dir=$A \
        --config.select.method=poe --config.search.method=dfs --config.search.min_prob=0.001 \
        --config.search.max_candidates=16
    table dev80-small ds_nottt_greedy ds_ttt_greedy ds_nottt_dfs ds_ttt_dfs ds_ttt_dfs001 ;;
  heldout_dfs)
    shift; for arm in ${*:-ttt nottt}; do
      case $arm in
        ttt|ttt001) adapters ho24_ttt runs/heldout_tasks24 ;;&
        ttt) pipeline_run ho24_ttt_dfs --config=$P:no_ttt --config.tasks=runs/heldout_tasks24 \
                 --config.adapters_dir=runs/eval16/ho24_ttt/adapters \
                 --config.select.method=poe --config.search.method=dfs ;;
        nottt) pipeline_run ho24_nottt_dfs --config=$P:no_ttt --config.tasks=runs/heldout_tasks24 \
                   --config.select.method=poe --config.search.method=dfs ;;
        ttt001) pipeline_run ho24_ttt_dfs001 --config=$P:no_ttt --config.tasks=runs/heldout_tasks24 \
                    --config.adapters_dir=runs/eval16/ho24_ttt/adapters --config.select.method=poe \
                    --config.search.method=dfs --config.search.min_prob=0.001 \
                    --config.search.max_candidates=16 ;;
        *) echo "unknown heldout_dfs arm: $arm (ttt, nottt, ttt001)" >&2; exit 2 ;;
      esac
    done ;;
  dev80_dfs)
    shift; for arm in ${*:-ttt nottt}; do
      case $arm in
        ttt) adapters dev80_ttt dev80
             pipeline_run dev80_ttt_dfs --config=$P:no_ttt --config.tasks=dev80 \
                 --config.adapters_dir=runs/eval16/dev80_ttt/adapters \
                 --config.select.method=poe --config.search.method=dfs ;;
        nottt) pipeline_run dev80_nottt_dfs --config=$P:no_ttt --config.tasks=dev80 \
                   --config.select.method=poe --config.search.method=dfs ;;
        *) echo "unknown dev80_dfs arm: $arm (ttt, nottt)" >&2; exit 2 ;;
      esac
    done ;;
  ablate)
    shift; for arm in ${*:-aug noaug shared}; do
      case $arm in
        aug) ttt_arm runs/heldout_tasks24 runs/ablate aug --config.ttt.learning_rate=1e-3 ;;
        noaug) ttt_arm runs/heldout_tasks24 runs/ablate noaug --config.ttt.learning_rate=1e-3 \
                   --config.ttt.augment=False ;;
        shared) ttt_arm runs/heldout_tasks24 runs/ablate shared --config.ttt.learning_rate=1e-3 \
                    --config.ttt.shared_adapter=True ;;
        *) echo "unknown ablation arm: $arm (aug, noaug, shared)" >&2; exit 2 ;;
      esac
    done ;;
  *) echo "usage: $0 dev80small|heldout_dfs [arm ...]|dev80_dfs [arm ...]|ablate [arm ...]" >&2; exit 2 ;;
esac
exit
}

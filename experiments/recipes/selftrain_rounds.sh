#!/usr/bin/env bash
# RESULTS.md "Test-time self-training (issue 17)", from scratch: each arm is one whole pipeline
# run (TTT, prediction = round 0, then the rounds) with the embedded in-context model (arc-cpu).
# TTT and decoding are deterministic per task, so round 0 of every arm of a set is the same.
#   selftrain_rounds.sh dev80small [exact|default|lr1e-3 ...]  # greedy E-step, verify=before
#   selftrain_rounds.sh control [default|lr1e-3 ...]           # dev80-small, verify=control
#   selftrain_rounds.sh heldout    # 24 held-out tasks: DFS E-step, PoE, verify=control
#   selftrain_rounds.sh dev80      # the same on all of dev-80
# Tables: python -m experiments.selection_table --run=runs/eval16/NAME --tasks=SET --rounds
{
source "$(dirname "$0")/common.sh"
task_sets
ST=(--config.self_train.enabled=True)
SEARCH=(--config.search.method=dfs --config.select.method=poe --config.self_train.verify=control)
case "${1:-}" in
  dev80small)
    shift; for arm in ${*:-exact default lr1e-3}; do
      case $arm in
        exact) pipeline_run ds_st_exact "${ST[@]}" --config.self_train.max_token_acc_drop=1.0 ;;
        default) pipeline_run ds_st "${ST[@]}" ;;
        lr1e-3) pipeline_run ds_st_lr1e-3_e2 "${ST[@]}" --config.self_train.learning_rate=1e-3 \
                    --config.self_train.epochs=2 ;;
        *) echo "unknown dev80small arm: $arm (exact, default, lr1e-3)" >&2; exit 2 ;;
      esac
    done ;;
  control)
    shift; for arm in ${*:-default lr1e-3}; do
      case $arm in
        default) pipeline_run ds_st_control "${ST[@]}" --config.self_train.verify=control ;;
        lr1e-3) pipeline_run ds_st_control_lr1e-3_e2 "${ST[@]}" --config.self_train.verify=control \
                    --config.self_train.learning_rate=1e-3 --config.self_train.epochs=2 ;;
        *) echo "unknown control arm: $arm (default, lr1e-3)" >&2; exit 2 ;;
      esac
    done ;;
  heldout)
    pipeline_run ho24_st_control --config.tasks=runs/heldout_tasks24 "${ST[@]}" "${SEARCH[@]}" ;;
  dev80)
    pipeline_run dev80_st_control --config.tasks=dev80 "${ST[@]}" "${SEARCH[@]}" ;;
  *) echo "usage: $0 dev80small [arm ...]|control [arm ...]|heldout|dev80" >&2; exit 2 ;;
esac
exit
}

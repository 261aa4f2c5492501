#!/usr/bin/env bash
# RESULTS.md "The CPU model and TTT's gain at CPU scale (issue 13)", from scratch: the embedded
# in-context model (arc-cpu) with and without per-task TTT. One subcommand per subsection:
#   cpu_model_ttt_gain.sh dev80small  # dev80-small, fine-tuned only and with TTT (2048 tokens)
#   cpu_model_ttt_gain.sh heldout     # all 102 held-out-family tasks, fine-tuned only and with TTT
#   cpu_model_ttt_gain.sh dev80       # all of dev-80, both arms, then the per-level table
#   cpu_model_ttt_gain.sh positions   # trains the 1-D-positions model, then the truth's log-prob
#   cpu_model_ttt_gain.sh sweep       # the TTT settings on 12 training-family tasks
#   cpu_model_ttt_gain.sh model       # retrains the embedded model itself (finetune.py:cpu)
# Each is hours on 2 CPU cores; the section gives every run's wall time.
{
source "$(dirname "$0")/common.sh"
task_sets
case "${1:-}" in
  dev80small)
    pipeline_run ds_nottt --config=$P:no_ttt --config.tasks=dev80-small
    pipeline_run ds_ttt --config.tasks=dev80-small --config.ttt.max_tokens=2048 ;;
  heldout)
    pipeline_run ho_nottt_greedy --config=$P:no_ttt --config.tasks=runs/heldout_tasks \
        --config.select.method=poe
    pipeline_run ho_ttt_greedy --config.tasks=runs/heldout_tasks --config.select.method=poe
    python -m experiments.selection_table --run=runs/eval16/ho_nottt_greedy,runs/eval16/ho_ttt_greedy \
        --label=fine-tuned,TTT --tasks=runs/heldout_tasks --by_family ;;
  dev80)
    pipeline_run dev80_nottt_greedy --config=$P:no_ttt --config.tasks=dev80 --config.select.method=poe
    pipeline_run dev80_ttt_greedy --config.tasks=dev80 --config.select.method=poe
    python -m experiments.selection_table --run=runs/eval16/dev80_nottt_greedy,runs/eval16/dev80_ttt_greedy \
        --label=fine-tuned,TTT --tasks=dev80 --by_level ;;
  positions)
    [ -d runs/finetune_cpu_1d/model ] || python -m experiments.finetune \
        --config=experiments/configs/finetune.py:cpu --config.model_overrides.grid_positions=False \
        --config.model_overrides.name=arc-cpu-1d --config.out_dir=runs/finetune_cpu_1d
    python -m experiments.answer_logprob --tasks=runs/heldout_tasks --label=grid_positions_default
    python -m experiments.answer_logprob --tasks=runs/heldout_tasks \
        --model_dir=runs/finetune_cpu_1d/model --label=positions_1d ;;
  sweep)
    ttt_arm runs/tune_tasks runs/ttt_sweep lr1e-4_e2
    ttt_arm runs/tune_tasks runs/ttt_sweep lr1e-3_e2 --config.ttt.learning_rate=1e-3
    ttt_arm runs/tune_tasks runs/ttt_sweep lr1e-3_e4_n48 --config.ttt.learning_rate=1e-3 \
        --config.ttt.epochs=4 --config.ttt.n_max=48 ;;
  model)
    python -m experiments.finetune --config=experiments/configs/finetune.py:cpu \
        --config.out_dir=runs/finetune_cpu ;;
  *) echo "usage: $0 dev80small|heldout|dev80|positions|sweep|model" >&2; exit 2 ;;
esac
exit
}

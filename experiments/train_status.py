r"""A fine-tuning run's progress from its ``metrics.jsonl``, and the steps that fill its budget.

  python -m experiments.train_status --out_dir=runs/gpu/train --max_minutes=15
  python -m experiments.train_status --out_dir=runs/gpu/train --max_minutes=15 --plan

``--plan`` prints only the total steps that end the run near ``--max_minutes`` at the pace
measured so far (``ttt_jax.train.finetune.plan_steps``), or nothing (exit 1) before enough
steps are logged; ``launch/gpu_train_eval.sh`` sets ``--config.steps`` from it after its probe.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from ttt_jax.train import finetune

_OUT_DIR = flags.DEFINE_string("out_dir", None, "finetune out_dir", required=True)
_MAX_MINUTES = flags.DEFINE_float("max_minutes", 15.0, "the run's wall-time budget")
_OVERHEAD = flags.DEFINE_float("overhead_s", 30.0, "seconds kept back for a restart")
_PLAN = flags.DEFINE_bool("plan", False, "print only the planned total steps")


def summary(out_dir: str, max_minutes: float, overhead_s: float) -> str:
  """One line: last step, loss, elapsed time, pace, and the steps the budget fits."""
  path = os.path.join(out_dir, "metrics.jsonl")
  by_step = finetune.records_by_step(path)
  if not by_step:
    return f"{out_dir}: no steps logged yet"
  last = by_step[max(by_step)]
  rates = [r["tokens_per_s"] for r in by_step.values() if "tokens_per_s" in r]
  evals = [(s, r["eval_loss"]) for s, r in sorted(by_step.items()) if "eval_loss" in r]
  planned = finetune.plan_steps(path, max_minutes, overhead_s=overhead_s)
  parts = [f"step {last['step']}", f"loss {last['loss']:.4f}",
           f"{last.get('elapsed_s', 0):.0f}s of {60 * max_minutes:.0f}s"]
  if rates:
    parts.append(f"{rates[-1]:.0f} tok/s")
  if "mfu" in last:
    parts.append(f"MFU {last['mfu']:.1%}")
  if evals:
    parts.append(f"eval loss {evals[-1][1]:.4f} (step {evals[-1][0]})")
  if planned is not None:
    parts.append(f"the budget fits {planned} steps")
  return f"{out_dir}: " + ", ".join(parts)


def main(argv):
  del argv
  if _PLAN.value:
    planned = finetune.plan_steps(os.path.join(_OUT_DIR.value, "metrics.jsonl"),
                                  _MAX_MINUTES.value, overhead_s=_OVERHEAD.value)
    if planned is None:
      sys.exit(1)
    print(planned)
    return
  print(summary(_OUT_DIR.value, _MAX_MINUTES.value, _OVERHEAD.value))


if __name__ == "__main__":
  app.run(main)

r"""How much more probable TTT makes the right answers: teacher-forced, no decoding.

  python -m experiments.answer_logprob --tasks=runs/heldout_tasks \
      --adapters_dir=runs/eval/ho_ttt/adapters [--model_dir=...] [--views=8]

pass@2 is 0 or 1 per task; at CPU scale it is mostly 0 with and without TTT, which hides
whether TTT moved the model at all. This scores each test input's true output by product of
experts (``ttt_jax.infer.scoring``: the summed log-probability over ``--views`` of the
pipeline's views, spread over them), once under the base model and once under the task's
TTT adapter, and prints the mean log-probability per answer token of each, and how many
tasks TTT made more probable; tasks without a trained adapter are left out. Without
``--adapters_dir``: the base model alone, every task. Never used to choose an answer: the truth
is only read to measure.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

_TASKS = flags.DEFINE_string("tasks", "dev80-small", "Any ttt_jax.arc.io.load_tasks spec.")
_MODEL = flags.DEFINE_string("model_dir", "", "Base model ('' = the embedded default).")
_ADAPTERS = flags.DEFINE_string("adapters_dir", "", "A pipeline run's adapters/ directory.")
_VIEWS = flags.DEFINE_integer("views", 8, "Views per test input (spread over the pipeline's).")
_MAX_ROWS = flags.DEFINE_integer("max_rows", 32, "Sequences per forward pass.")
_LABEL = flags.DEFINE_string("label", "", "Row label.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from experiments.configs import pipeline as pipeline_config
  from ttt_jax import pipeline
  from ttt_jax.arc import io
  from ttt_jax.eval import truth_scores
  from ttt_jax.model import store
  from ttt_jax.train import checkpoint
  tasks = [t for t in io.load_tasks(_TASKS.value)[0] if t.has_test_outputs]
  adapters = None
  if _ADAPTERS.value:  # else: the base model alone (e.g. to compare two base models)
    adapters = pipeline.SavedAdapters(_ADAPTERS.value, tasks)
    tasks = [t for t in tasks if adapters[t.task_id] is not None]
  if not tasks:
    raise ValueError(f"no task of {_TASKS.value!r} with test outputs"
                     + (f" has a trained adapter in {_ADAPTERS.value!r}" if adapters else ""))
  params, mcfg = checkpoint.load_base_model(_MODEL.value or store.DEFAULT_MODEL_DIR, "", {})
  infer = pipeline_config.get_config().infer
  context = min(infer.max_tokens, mcfg.max_seq_len)
  base, tuned, n_tokens, skipped, unscored = [], [], [], 0, []
  for i, t in enumerate(tasks):
    b, a, size, n_skip = truth_scores.score_task(params, mcfg, t, infer, context, _VIEWS.value,
                                    adapters[t.task_id] if adapters is not None else None,
                                    adapters.lcfg if adapters is not None else None, _MAX_ROWS.value)
    skipped += n_skip
    if not size:
      unscored.append(t.task_id)
      print(f"[{i + 1}/{len(tasks)}] {t.task_id}: skipped (no view of any test input fits {context} tokens)")
      continue
    base.append(b)
    tuned.append(a)
    n_tokens.append(size)
    print(f"[{i + 1}/{len(tasks)}] {t.task_id}: base {base[-1] / n_tokens[-1]:.3f} "
          f"TTT {tuned[-1] / n_tokens[-1]:.3f} nats/token", flush=True)
  if skipped:
    print(f"skipped {skipped} test inputs with no view within {context} tokens "
          f"({len(unscored)} tasks left out entirely)")
  tasks = [t for t in tasks if t.task_id not in unscored]
  if not tasks:
    raise ValueError(f"no test input of {_TASKS.value!r} has a view within {context} tokens")
  base, tuned, n_tokens = map(np.asarray, (base, tuned, n_tokens))
  label = _LABEL.value or os.path.basename(os.path.normpath(os.path.dirname(_ADAPTERS.value)
                                                            or _MODEL.value or "default"))
  if adapters is None:
    print("| model | tasks | log p/token of the true outputs |")
    print("|---|---|---|")
    print(f"| {label} | {len(tasks)} | {np.mean(base / n_tokens):.3f} |")
    return
  print("| run | tasks | base log p/token | TTT log p/token | tasks TTT made likelier |")
  print("|---|---|---|---|---|")
  print(f"| {label} | {len(tasks)} | {np.mean(base / n_tokens):.3f} | "
        f"{np.mean(tuned / n_tokens):.3f} | {int(np.sum(tuned > base))}/{len(tasks)} |")


if __name__ == "__main__":
  app.run(main)

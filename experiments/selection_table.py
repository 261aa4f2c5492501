r"""pass@2 of a finished pipeline run under every selection method, from its candidates.json.

  python -m experiments.selection_table --run=runs/pipeline --tasks=dev80-small

A run made with ``--config.select.method=poe`` (or ``vote+poe``) stores the PoE score of every
pooled candidate, so the attempts of each method are ``ttt_jax.infer.selection``'s choice
among the same candidates: the same function the pipeline uses, no second decode. Also
printed: how many tasks have every test output among their candidates at all (pass@all, the
ceiling any selection can reach), the mean number of distinct candidates per test input, and
the run's prediction seconds per task (``timings.json``).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from absl import app, flags

from ttt_jax import pipeline
from ttt_jax.arc import io
from ttt_jax.arc.task import Task
from ttt_jax.infer import selection

_RUN = flags.DEFINE_string("run", "runs/pipeline", "A pipeline out_dir.")
_TASKS = flags.DEFINE_string("tasks", "dev80-small", "The run's task spec (for the outputs).")
_LABEL = flags.DEFINE_string("label", "", "Row label (default: the run directory's name).")


def _same(a, b) -> bool:
  a, b = np.asarray(a), np.asarray(b)
  return a.shape == b.shape and np.array_equal(a, b)


def selection_rows(results: dict[str, list[dict]], tasks: Sequence[Task]) -> dict[str, int]:
  """Tasks solved (every test input right within two attempts) per method, plus pass@all."""
  solved = {m: 0 for m in selection.METHODS}
  solved["pass@all"] = 0
  for t in tasks:
    if not t.has_test_outputs or t.task_id not in results:
      continue
    recs = results[t.task_id]
    for m in selection.METHODS:
      ok = all(any(_same(a, t.test[j].output)
                   for a in pipeline.select_test_input(r, t, j, m)["attempts"])
               for j, r in enumerate(recs))
      solved[m] += ok
    solved["pass@all"] += all(any(_same(g, t.test[j].output) for g in selection.vote_order(r))
                              for j, r in enumerate(recs))
  return solved


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with open(os.path.join(_RUN.value, "candidates.json")) as f:
    results = json.load(f)
  tasks = [t for t in io.load_tasks(_TASKS.value)[0] if t.task_id in results]
  scored = sum(t.has_test_outputs for t in tasks)
  rows = selection_rows(results, tasks)
  per_input = [r for rs in results.values() for r in rs]
  n_scored = sum(any(c.get("poe") is not None for c in r["candidates"]) for r in per_input)
  timings = {}
  if os.path.exists(os.path.join(_RUN.value, "timings.json")):
    with open(os.path.join(_RUN.value, "timings.json")) as f:
      timings = json.load(f)
  cost = " ".join(f"{k[len('predict_'):]} {v / max(len(tasks), 1):.1f}s"
                  for k, v in timings.items() if k.startswith("predict_"))
  label = _LABEL.value or os.path.basename(os.path.normpath(_RUN.value))
  print("| run | tasks | " + " | ".join(rows) + " | candidates/input | inputs scored | "
        "predict s/task |")
  print("|---" * (len(rows) + 5) + "|")
  print(f"| {label} | {scored} | " + " | ".join(str(v) for v in rows.values())
        + f" | {np.mean([len(selection.vote_order(r)) for r in per_input]):.1f} | "
        f"{n_scored}/{len(per_input)} | {cost} |")


if __name__ == "__main__":
  app.run(main)

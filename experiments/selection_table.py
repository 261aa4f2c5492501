r"""pass@2 of pipeline runs under every selection method, from their stored candidates.

  python -m experiments.selection_table --run=runs/pipeline --tasks=dev80-small
  python -m experiments.selection_table --run=runs/a,runs/b --tasks=SET --by_family


A run made with ``--config.select.method=poe`` (or ``vote+poe``) stores the PoE score of every
pooled candidate, so the attempts of each method are ``ttt_jax.infer.selection``'s choice
among the same candidates: the same function the pipeline uses, no second decode. Also
printed: how many tasks have every test output among their candidates at all (pass@all, the
ceiling any selection can reach), the mean number of distinct candidates per test input, and
the run's prediction seconds per task (``timings.json``).

A run still going (no candidates.json yet) is read from its finished predictions. Several runs
are compared on the tasks every one of them has finished (decoding goes by prompt length, so
partial runs finish the same shortest tasks first); ``--by_family`` adds one row per task family
(a generated task's id without its ``_NNN`` number).
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

_RUN = flags.DEFINE_list("run", ["runs/pipeline"], "Pipeline out_dirs (comma-separated).")
_TASKS = flags.DEFINE_string("tasks", "dev80-small", "The runs' task spec (for the outputs).")
_LABEL = flags.DEFINE_list("label", [], "Row labels (default: the run directories' names).")
_BY_FAMILY = flags.DEFINE_bool("by_family", False, "Also one row per task family.")


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


def family(task_id: str) -> str:
  """A generated task's family: its id without the trailing ``_NNN`` (other ids unchanged)."""
  head, _, num = task_id.rpartition("_")
  return head if head and num.isdigit() else task_id


def run_records(run_dir: str, tasks: Sequence[Task]) -> tuple[dict[str, list[dict]], bool]:
  """(task id -> records, finished): candidates.json of a finished run, else the tasks whose
  predictions are done so far."""
  path = os.path.join(run_dir, "candidates.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f), True
  return pipeline.predict_stage.finished_records(run_dir, tasks), False


def _cost(run_dir: str, num_tasks: int) -> str:
  path = os.path.join(run_dir, "timings.json")
  if not os.path.exists(path):
    return "-"
  with open(path) as f:
    timings = json.load(f)
  return " ".join(f"{k[len('predict_'):]} {v / max(num_tasks, 1):.1f}s"
                  for k, v in timings.items() if k.startswith("predict_"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  labels = _LABEL.value or [os.path.basename(os.path.normpath(r)) for r in _RUN.value]
  if len(labels) != len(_RUN.value):
    raise app.UsageError(f"--label has {len(labels)} names for {len(_RUN.value)} runs")
  all_tasks = io.load_tasks(_TASKS.value)[0]
  runs = [run_records(r, all_tasks) for r in _RUN.value]
  common = set.intersection(*(set(res) for res, _ in runs))
  tasks = [t for t in all_tasks if t.task_id in common and t.has_test_outputs]
  groups = [("all", tasks)]
  if _BY_FAMILY.value:
    names = sorted({family(t.task_id) for t in tasks})
    groups += [(n, [t for t in tasks if family(t.task_id) == n]) for n in names]
  cols = list(selection.METHODS) + ["pass@all"]
  print(f"{len(tasks)} tasks with truth finished in every run; "
        + ", ".join(f"{lab}: {len(res)} finished{'' if done else ' (running)'}"
                    for lab, (res, done) in zip(labels, runs)))
  print("| run | tasks | " + " | ".join(cols) + " | candidates/input | inputs scored | "
        "views parsed | predict s/task |")
  print("|---" * (len(cols) + 6) + "|")
  for name, ts in groups:
    for label, run_dir, (results, done) in zip(labels, _RUN.value, runs):
      rows = selection_rows(results, ts)
      per_input = [r for t in ts for r in results[t.task_id]]
      n_scored = sum(any(c.get("poe") is not None for c in r["candidates"]) for r in per_input)
      parsed = sum(r["num_views"] - r["num_invalid"] for r in per_input)
      views = sum(r["num_views"] for r in per_input)
      cands = np.mean([len(selection.vote_order(r)) for r in per_input]) if per_input else 0.0
      cost = _cost(run_dir, len(results)) if done and name == "all" else "-"
      print(f"| {label}{'' if name == 'all' else ' / ' + name} | {len(ts)} | "
            + " | ".join(str(rows[c]) for c in cols)
            + f" | {cands:.1f} | {n_scored}/{len(per_input)} | {parsed}/{views} | {cost} |")


if __name__ == "__main__":
  app.run(main)

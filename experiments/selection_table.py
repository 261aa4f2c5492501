r"""pass@2 of pipeline runs under every selection method, from their stored candidates.

  python -m experiments.selection_table --run=runs/pipeline --tasks=dev80-small
  python -m experiments.selection_table --run=runs/a,runs/b --tasks=SET --by_family
  python -m experiments.selection_table --run=runs/a,runs/b --tasks=dev80 --by_level

A run made with ``--config.select.method=poe`` (or ``vote+poe``) stores the PoE score of every
pooled candidate, so the attempts of each method are ``ttt_jax.infer.selection``'s choice
among the same candidates: the same function the pipeline uses, no second decode. Also
printed: how many tasks have every test output among their candidates at all (pass@all, the
ceiling any selection can reach), the mean number of distinct candidates per test input, and
a finished run's prediction seconds per task (``timings.json``).

A run still going (no candidates.json yet) is read from its finished predictions; several runs
are compared on the tasks every one has finished (``ttt_jax.pipeline.compare``). ``--by_family``
adds one row per task family (a generated task's id without its ``_NNN`` number), ``--by_level``
one per difficulty level of the ARC-AGI-1 evaluation tasks (``ttt_jax.arc.splits``).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from ttt_jax.arc import io
from ttt_jax.pipeline import compare

_RUN = flags.DEFINE_list("run", ["runs/pipeline"], "Pipeline out_dirs (comma-separated).")
_TASKS = flags.DEFINE_string("tasks", "dev80-small", "The runs' task spec (for the outputs).")
_LABEL = flags.DEFINE_list("label", [], "Row labels (default: the run directories' names).")
_BY_FAMILY = flags.DEFINE_bool("by_family", False, "Also one row per task family.")
_BY_LEVEL = flags.DEFINE_bool("by_level", False,
                              "Also one row per ARC-AGI-1 evaluation level (easy ... expert).")


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
  tasks = io.load_tasks(_TASKS.value)[0]
  runs = [compare.run_records(r, tasks) for r in _RUN.value]
  rows = compare.table_rows([(lab, res) for lab, (res, _) in zip(labels, runs)], tasks,
                            _BY_FAMILY.value, _BY_LEVEL.value)
  print(f"{rows[0]['tasks'] if rows else 0} tasks with truth finished in every run; "
        + ", ".join(f"{lab}: {len(res)} finished{'' if done else ' (running)'}"
                    for lab, (res, done) in zip(labels, runs)))
  cols = compare.COLUMNS
  print("| run | tasks | " + " | ".join(cols) + " | candidates/input | inputs scored | "
        "views parsed | predict s/task |")
  print("|---" * (len(cols) + 6) + "|")
  cost = {lab: _cost(r, len(res)) if done else "-"
          for lab, r, (res, done) in zip(labels, _RUN.value, runs)}
  for row in rows:
    name = row["run"] + ("" if row["group"] == "all" else " / " + row["group"])
    print(f"| {name} | {row['tasks']} | " + " | ".join(str(row[c]) for c in cols)
          + f" | {row['candidates']:.1f} | {row['inputs_scored']}/{row['inputs']} | "
          f"{row['views_parsed']}/{row['views']} | "
          f"{cost[row['run']] if row['group'] == 'all' else '-'} |")


if __name__ == "__main__":
  app.run(main)

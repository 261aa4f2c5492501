r"""pass@2 of pipeline runs under every selection method, from their stored candidates.

  python -m experiments.selection_table --run=runs/pipeline --tasks=dev80-small
  python -m experiments.selection_table --run=runs/a,runs/b --tasks=SET --by_family
  python -m experiments.selection_table --run=runs/a,runs/b --tasks=dev80 --by_level
  python -m experiments.selection_table --run=runs/st --tasks=dev80-small --rounds

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

``--rounds`` tabulates runs with self-training instead: one row per round (round 0 = the
prediction before self-training; round r = round r-1 with the tasks round r predicted again,
``compare.round_records``), then each round's summary (``compare.round_summaries``:
``selftrain/rounds.json`` and how many trained adapters would pass the plain "before"
verification, for runs made with ``verify=control``).
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
_ROUNDS = flags.DEFINE_bool("rounds", False,
                            "One row per self-training round of each run, then the rounds' "
                            "summaries.")


def _cost(run_dir: str, num_tasks: int) -> str:
  path = os.path.join(run_dir, "timings.json")
  if not os.path.exists(path):
    return "-"
  with open(path) as f:
    timings = json.load(f)
  return " ".join(f"{k[len('predict_'):]} {v / max(num_tasks, 1):.1f}s"
                  for k, v in timings.items() if k.startswith("predict_"))


def _print_rounds(labels: list[str], run_dirs: list[str], tasks) -> None:
  cols = compare.COLUMNS
  print("| run | round | tasks | " + " | ".join(cols) + " | candidates/input |")
  print("|---" * (len(cols) + 4) + "|")
  for label, run_dir in zip(labels, run_dirs):
    rounds = compare.round_records(run_dir, tasks)
    rows = compare.table_rows([(str(r), res) for r, res in enumerate(rounds)], tasks,
                              _BY_FAMILY.value, _BY_LEVEL.value)
    for row in rows:
      name = label + ("" if row["group"] == "all" else " / " + row["group"])
      print(f"| {name} | {row['run']} | {row['tasks']} | "
            + " | ".join(str(row[c]) for c in cols) + f" | {row['candidates']:.1f} |")
  print()
  print("| run | round | active | labelled | accepted | rejected | would pass 'before' | "
        "labels right | continuing | seconds |")
  print("|---" * 10 + "|")
  for label, run_dir in zip(labels, run_dirs):
    for s in compare.round_summaries(run_dir):
      right = "-" if s["labels_right"] is None else f"{s['labels_right']}/{s['labels']}"
      print(f"| {label} | {s['round']} | {s['active']} | {s['labelled']} | {s['accepted']} | "
            f"{s['rejected']} | {s['pass_before']} | {right} | {s['continuing']} | "
            f"{s['seconds']:.0f} |")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    labels = compare.run_labels(_RUN.value, _LABEL.value)
  except ValueError as e:
    raise app.UsageError(f"--label: {e}") from e
  tasks = io.load_tasks(_TASKS.value)[0]
  if _ROUNDS.value:
    _print_rounds(labels, _RUN.value, tasks)
    return
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

r"""Self-training rounds of pipeline runs: pass@2 after each round, and what each round did.

  python -m experiments.selftrain_table --run=runs/st --tasks=dev80-small
  python -m experiments.selftrain_table --run=runs/a,runs/b --tasks=SET --by_family

Round 0 is the run's prediction before self-training; round r is round r-1 with the tasks
re-predicted in round r (``ttt_jax.pipeline.compare.round_records``), scored under every
selection method as ``experiments.selection_table`` does. The second table is each round's
summary (``compare.round_summaries``: ``selftrain/rounds.json`` plus how many trained
adapters would pass the plain "before" verification, for runs made with ``verify=control``).
"""

from __future__ import annotations

import os

from absl import app, flags

from ttt_jax.arc import io
from ttt_jax.pipeline import compare

_RUN = flags.DEFINE_list("run", ["runs/pipeline"], "Pipeline out_dirs with self-training rounds.")
_TASKS = flags.DEFINE_string("tasks", "dev80-small", "The runs' task spec (for the outputs).")
_LABEL = flags.DEFINE_list("label", [], "Run labels (default: the run directories' names).")
_BY_FAMILY = flags.DEFINE_bool("by_family", False, "Also one row per task family.")
_BY_LEVEL = flags.DEFINE_bool("by_level", False, "Also one row per ARC-AGI-1 evaluation level.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  labels = _LABEL.value or [os.path.basename(os.path.normpath(r)) for r in _RUN.value]
  if len(labels) != len(_RUN.value):
    raise app.UsageError(f"--label has {len(labels)} names for {len(_RUN.value)} runs")
  tasks = io.load_tasks(_TASKS.value)[0]
  cols = compare.COLUMNS
  print("| run | round | tasks | " + " | ".join(cols) + " | candidates/input |")
  print("|---" * (len(cols) + 4) + "|")
  for label, run_dir in zip(labels, _RUN.value):
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
  for label, run_dir in zip(labels, _RUN.value):
    for s in compare.round_summaries(run_dir):
      right = "-" if s["labels_right"] is None else f"{s['labels_right']}/{s['labels']}"
      print(f"| {label} | {s['round']} | {s['active']} | {s['labelled']} | {s['accepted']} | "
            f"{s['rejected']} | {s['pass_before']} | {right} | {s['continuing']} | "
            f"{s['seconds']:.0f} |")


if __name__ == "__main__":
  app.run(main)

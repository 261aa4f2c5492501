r"""Scores ARC predictions with pass@2, per difficulty level.

With no flags it scores an honest, model-free baseline on the dev-80 subset of
ARC-AGI-1 evaluation (see ``baseline_attempts``); with ``--submission`` it scores an
existing Kaggle ``submission.json`` against the tasks' known test outputs.

  python -m experiments.evaluate
  python -m experiments.evaluate --tasks=arc1-eval --out_dir=/tmp/eval
  python -m experiments.evaluate --tasks=dev80 --submission=/tmp/run/submission.json
  python -m experiments.evaluate --tasks=challenges.json --solutions=solutions.json

``--out_dir`` receives ``submission.json`` (baseline only), ``scores.json`` (per-task
results and the level table) and ``table.txt``.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from absl import app, flags

from ttt_jax.arc import io, splits
from ttt_jax.arc.task import Task
from ttt_jax.eval import scoring, submission as submission_lib
from ttt_jax.eval.baseline import baseline_attempts

_TASKS = flags.DEFINE_string(
    "tasks", "dev80", "Named set (dev80, arc1-eval-heldout, arc1-eval, arc1-train, "
    "arc2-eval, ...), a task directory, a task JSON file or a Kaggle challenges file.")
_SOLUTIONS = flags.DEFINE_string(
    "solutions", None, "Kaggle solutions file for a challenges file given as --tasks.")
_SUBMISSION = flags.DEFINE_string(
    "submission", None, "Score this submission.json instead of running the baseline.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write submission/scores/table.")

def evaluate(tasks_spec: str = "dev80", *, solutions_path: Optional[str] = None,
             submission_path: Optional[str] = None, out_dir: Optional[str] = None,
             tasks: Optional[Sequence[Task]] = None) -> dict:
  """Loads tasks, predicts with the baseline (or reads a submission) and scores.

  Returns a dict with ``table`` (``scoring.level_table`` rows), ``tasks`` (per-task
  results), ``unscored`` (submitted tasks without known outputs) and ``load_errors``.
  ``tasks`` overrides loading from ``tasks_spec`` (for callers that hold tasks).
  Tasks without test outputs are predicted (baseline) but not scored.
  """
  load_errors, given = [], tasks
  if tasks is None:
    tasks, errors = io.load_tasks(tasks_spec, solutions_path)
    load_errors = [str(e) for e in errors]
  expected = {t.task_id: len(t.test) for t in tasks}
  if submission_path is not None:
    # Tasks may be missing (scored wrong) or extra (listed as unscored); a task with
    # the wrong number of test inputs raises, naming file and task.
    sub = submission_lib.read_submission(submission_path, expected, partial=True)
    method = f"submission:{submission_path}"
  else:
    sub = submission_lib.normalise({t.task_id: baseline_attempts(t) for t in tasks}, expected)
    method = "baseline:input+best_d4"

  solvable = [t for t in tasks if t.has_test_outputs]
  solutions = scoring.solutions_from_tasks(solvable)
  scores = scoring.score_submission(sub, solutions, splits.eval_levels())
  result = {
      "tasks_spec": tasks_spec if given is None else "<given tasks>",
      "method": method,
      "num_tasks": len(tasks),
      "num_scored": len(solvable),
      "table": scoring.level_table(scores),
      "tasks": [{"task_id": s.task_id, "level": s.level, "correct": s.correct,
                 "inputs_correct": list(s.inputs_correct), "submitted": s.submitted}
                for s in scores],
      "unscored": scoring.unscored(sub, solutions),
      "load_errors": load_errors,
  }
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    if submission_path is None:
      submission_lib.write_submission(os.path.join(out_dir, "submission.json"), sub, expected)
    with open(os.path.join(out_dir, "scores.json"), "w") as f:
      json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
      f.write(scoring.format_table(result["table"]) + "\n")
  return result


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  result = evaluate(_TASKS.value, solutions_path=_SOLUTIONS.value,
                    submission_path=_SUBMISSION.value, out_dir=_OUT_DIR.value)
  print(f"{result['method']} on {_TASKS.value}: {result['num_scored']} of "
        f"{result['num_tasks']} tasks scored"
        + (f", {len(result['load_errors'])} failed to load" if result["load_errors"] else ""))
  print(scoring.format_table(result["table"]))


if __name__ == "__main__":
  app.run(main)

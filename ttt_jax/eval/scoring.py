"""ARC scoring: pass@2 per task, totals, and a table per difficulty level.

A task counts as solved only when every one of its test inputs is matched exactly
(shape and cells) by one of that input's two attempts -- the paper's rule. The
Kaggle ARC Prize metric instead gives each test input its share of the task; it is
reported alongside as ``kaggle_score`` so the two are never confused.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ttt_jax.arc.task import Task, grids_equal
from ttt_jax.arc.splits import LEVELS

UNKNOWN_LEVEL = "unknown"
ALL = "all"


@dataclasses.dataclass(frozen=True)
class TaskScore:
  task_id: str
  correct: bool  # pass@2: every test input right in one of its attempts
  inputs_correct: tuple[bool, ...]  # per test input
  level: str = UNKNOWN_LEVEL
  submitted: bool = True  # False when the submission had no entry for the task


def input_correct(attempts: Sequence[np.ndarray], target: np.ndarray, k: int = 2) -> bool:
  """True when one of the first ``k`` attempts equals ``target`` exactly."""
  return any(grids_equal(np.asarray(a), np.asarray(target)) for a in list(attempts)[:k])


def score_task(task_id: str, attempts_per_input: Sequence[Sequence[np.ndarray]],
               targets: Sequence[np.ndarray], level: str = UNKNOWN_LEVEL,
               k: int = 2) -> TaskScore:
  """pass@k of one task: ``attempts_per_input[i]`` are the attempts for test input i."""
  if len(attempts_per_input) != len(targets):
    raise ValueError(f"task {task_id}: {len(attempts_per_input)} test input(s) predicted, "
                     f"the task has {len(targets)}")
  per_input = tuple(input_correct(a, t, k) for a, t in zip(attempts_per_input, targets))
  return TaskScore(task_id, all(per_input), per_input, level)


def solutions_from_tasks(tasks: Iterable[Task]) -> dict[str, list[np.ndarray]]:
  """``{task_id: [test output, ...]}``; raises if a task lacks a test output."""
  out = {}
  for t in tasks:
    if not t.has_test_outputs:
      raise ValueError(f"task {t.task_id}: test outputs unknown, cannot score it")
    out[t.task_id] = [p.output for p in t.test]
  return out


def score_submission(submission: Mapping[str, Sequence[Sequence[np.ndarray]]],
                     solutions: Mapping[str, Sequence[np.ndarray]],
                     levels: Optional[Mapping[str, str]] = None,
                     k: int = 2) -> list[TaskScore]:
  """Scores every task in ``solutions`` (in its order) against ``submission``.

  A task missing from the submission scores as wrong with ``submitted=False``.
  Submission tasks without a solution are not scored (``unscored`` lists them).
  A task whose number of predicted test inputs differs from its solution raises.
  """
  levels = levels or {}
  scores = []
  for task_id, targets in solutions.items():
    level = levels.get(task_id, UNKNOWN_LEVEL)
    if task_id not in submission:
      scores.append(TaskScore(task_id, False, (False,) * len(targets), level, submitted=False))
    else:
      scores.append(score_task(task_id, submission[task_id], targets, level, k))
  return scores


def unscored(submission: Mapping[str, object], solutions: Mapping[str, object]) -> list[str]:
  """Task ids in the submission that have no solution to score against."""
  return sorted(set(submission) - set(solutions))


def _row(name: str, scores: Sequence[TaskScore]) -> dict:
  n = len(scores)
  solved = sum(s.correct for s in scores)
  kaggle = sum(sum(s.inputs_correct) / len(s.inputs_correct) for s in scores
               if s.inputs_correct)
  return {"level": name, "tasks": n, "solved": solved,
          "pass_at_2": solved / n if n else 0.0, "kaggle_score": kaggle}


def level_table(scores: Sequence[TaskScore]) -> list[dict]:
  """One row per difficulty level present (easy..expert, then unknown), then ``all``.

  Row: ``{"level", "tasks", "solved", "pass_at_2", "kaggle_score"}`` where
  ``kaggle_score`` sums each task's fraction of correct test inputs.
  """
  order = list(LEVELS) + sorted({s.level for s in scores} - set(LEVELS))
  rows = [_row(lv, [s for s in scores if s.level == lv]) for lv in order]
  rows = [r for r in rows if r["tasks"]]
  rows.append(_row(ALL, scores))
  return rows


def format_table(rows: Sequence[dict]) -> str:
  """A fixed-width text table of ``level_table`` rows."""
  lines = [f"{'level':<8} {'solved':>6} {'tasks':>5} {'pass@2':>7} {'kaggle':>7}"]
  for r in rows:
    lines.append(f"{r['level']:<8} {r['solved']:>6} {r['tasks']:>5} "
                 f"{100 * r['pass_at_2']:>6.1f}% {r['kaggle_score']:>7.2f}")
  return "\n".join(lines)

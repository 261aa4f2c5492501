"""pass@2 scoring, totals and the per-level table."""

from __future__ import annotations

import numpy as np
import pytest

from ttt_jax.arc import splits
from ttt_jax.arc.task import make_task
from ttt_jax.eval import scoring


def g(*rows):
  return np.asarray(rows, dtype=np.int8)


RIGHT0, RIGHT1, WRONG = g([1, 2]), g([3], [4]), g([9, 9])


def test_input_correct_is_exact_and_limited_to_k():
  assert scoring.input_correct([WRONG, RIGHT0], RIGHT0)
  assert not scoring.input_correct([WRONG, WRONG, RIGHT0], RIGHT0)  # third attempt ignored
  assert scoring.input_correct([WRONG, WRONG, RIGHT0], RIGHT0, k=3)
  assert not scoring.input_correct([g([1], [2])], RIGHT0)  # same cells, other shape
  assert not scoring.input_correct([], RIGHT0)


def test_task_needs_every_test_input_right():
  targets = [RIGHT0, RIGHT1]
  both = scoring.score_task("t", [(WRONG, RIGHT0), (RIGHT1, WRONG)], targets)
  assert both.correct and both.inputs_correct == (True, True)
  one = scoring.score_task("t", [(RIGHT0, RIGHT0), (WRONG, WRONG)], targets)
  assert not one.correct and one.inputs_correct == (True, False)
  with pytest.raises(ValueError, match="task t: 1 test input"):
    scoring.score_task("t", [(RIGHT0, RIGHT0)], targets)


def test_score_submission_missing_extra_and_levels():
  solutions = {"a": [RIGHT0], "b": [RIGHT0, RIGHT1], "c": [RIGHT1]}
  sub = {"a": [(RIGHT0, WRONG)], "b": [(RIGHT0, WRONG), (WRONG, WRONG)], "x": [(WRONG, WRONG)]}
  scores = scoring.score_submission(sub, solutions, {"a": "easy", "b": "hard"})
  assert [(s.task_id, s.correct, s.level, s.submitted) for s in scores] == [
      ("a", True, "easy", True), ("b", False, "hard", True), ("c", False, "unknown", False)]
  assert scoring.unscored(sub, solutions) == ["x"]


def test_level_table_counts_and_kaggle_fraction():
  S = scoring.TaskScore
  scores = [S("a", True, (True,), "easy"), S("b", False, (True, False), "easy"),
            S("c", False, (False,), "expert"), S("d", True, (True, True), "unknown")]
  table = scoring.level_table(scores)
  assert [(r["level"], r["tasks"], r["solved"]) for r in table] == [
      ("easy", 2, 1), ("expert", 1, 0), ("unknown", 1, 1), ("all", 4, 2)]
  assert table[-1]["pass_at_2"] == 0.5
  assert table[0]["kaggle_score"] == 1.5  # a: 1 + b: 1/2
  text = scoring.format_table(table)
  assert text.splitlines()[1].split() == ["easy", "1", "2", "50.0%", "1.50"]
  assert scoring.level_table([]) == [{"level": "all", "tasks": 0, "solved": 0,
                                      "pass_at_2": 0.0, "kaggle_score": 0}]


def test_dev80_table_has_twenty_tasks_per_level():
  solutions = {t: [RIGHT0] for t in splits.dev80_ids()}
  scores = scoring.score_submission({}, solutions, splits.eval_levels())
  table = scoring.level_table(scores)
  assert [(r["level"], r["tasks"], r["solved"]) for r in table] == [
      (lv, 20, 0) for lv in splits.LEVELS] + [("all", 80, 0)]


def test_solutions_from_tasks_requires_outputs():
  known = make_task("k", [([[1]], [[2]])], [([[1]], [[2]]), ([[3]], [[4]])])
  sols = scoring.solutions_from_tasks([known])
  assert [x.tolist() for x in sols["k"]] == [[[2]], [[4]]]
  unknown = make_task("u", [([[1]], [[2]])], [([[1]], None)])
  with pytest.raises(ValueError, match="task u: test outputs unknown"):
    scoring.solutions_from_tasks([unknown])

"""The evaluate binary end to end on three small task files, via its importable function."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import evaluate
from ttt_jax.eval import baseline
from ttt_jax.arc.task import make_task, task_to_json
from ttt_jax.eval import submission

GRID = [[1, 2], [3, 4]]
TASKS = [
    # Answer = the input: the baseline's attempt 1 solves it.
    make_task("00000001", [(GRID, GRID)], [([[5, 6]], [[5, 6]])]),
    # Answer = input rotated 90 (counter-clockwise, as np.rot90); two test inputs.
    make_task("00000002", [(GRID, np.rot90(GRID)), ([[1, 0]], [[0], [1]])],
              [([[7, 8]], [[8], [7]]), ([[1, 2], [0, 0]], np.rot90([[1, 2], [0, 0]]))]),
    # Answer = recolouring: the baseline fails; second test input would pass alone.
    make_task("00000003", [([[1]], [[2]])], [([[1, 1]], [[2, 2]]), ([[0]], [[0]])]),
]


@pytest.fixture
def task_dir(tmp_path):
  d = tmp_path / "tasks"
  d.mkdir()
  for t in TASKS:
    (d / f"{t.task_id}.json").write_text(json.dumps(task_to_json(t)))
  return d


def test_best_d4_transform():
  assert baseline.best_d4_transform(TASKS[0]).name == "identity"
  assert baseline.best_d4_transform(TASKS[1]).name == "rot90"
  assert baseline.best_d4_transform(TASKS[2]).name == "identity"  # nothing maps: default


def test_baseline_end_to_end(task_dir, tmp_path):
  out = tmp_path / "out"
  result = evaluate.evaluate(str(task_dir), out_dir=str(out))
  by_id = {r["task_id"]: r for r in result["tasks"]}
  assert {t: r["correct"] for t, r in by_id.items()} == {
      "00000001": True, "00000002": True, "00000003": False}
  assert by_id["00000003"]["inputs_correct"] == [False, True]
  assert result["table"][-1] == {"level": "all", "tasks": 3, "solved": 2,
                                 "pass_at_2": 2 / 3, "kaggle_score": 2.5}
  sub = submission.read_submission(str(out / "submission.json"),
                                   {t.task_id: len(t.test) for t in TASKS})
  np.testing.assert_array_equal(sub["00000002"][0][1], [[8], [7]])
  assert json.loads((out / "scores.json").read_text())["table"] == result["table"]
  assert (out / "table.txt").read_text().splitlines()[-1].split()[:3] == ["all", "2", "3"]

  # Scoring the written submission gives the same table; a partial one scores missing as wrong.
  again = evaluate.evaluate(str(task_dir), submission_path=str(out / "submission.json"))
  assert again["table"] == result["table"]
  partial = tmp_path / "partial.json"
  submission.write_submission(str(partial), {"00000001": [[[[5, 6]]]], "ffffffff": [[[[0]]]]})
  res = evaluate.evaluate(str(task_dir), submission_path=str(partial))
  assert [r["submitted"] for r in res["tasks"]] == [True, False, False]
  assert res["table"][-1]["solved"] == 1 and res["unscored"] == ["ffffffff"]


def test_submission_with_wrong_test_count_names_file_and_task(task_dir, tmp_path):
  bad = tmp_path / "bad.json"
  submission.write_submission(str(bad), {"00000002": [[[[1]]]]})
  with pytest.raises(submission.SubmissionError, match=r"file .*bad.json, task 00000002"):
    evaluate.evaluate(str(task_dir), submission_path=str(bad))

"""submission.json: round trip, validation on write, clear errors on malformed files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttt_jax.eval import submission
from ttt_jax.eval.submission import SubmissionError


def g(*rows):
  return np.asarray(rows, dtype=np.int8)


PREDS = {
    "aaaa0001": [(g([1, 2], [3, 4]), g([0]))],
    "aaaa0002": [(g([5]), g([6, 7])), (g([8], [9]), g([0, 0], [0, 0]))],  # two test inputs
}


def assert_same(a, b):
  assert list(a) == list(b)
  for task_id in a:
    assert len(a[task_id]) == len(b[task_id])
    for (a1, a2), (b1, b2) in zip(a[task_id], b[task_id]):
      np.testing.assert_array_equal(a1, b1)
      np.testing.assert_array_equal(a2, b2)
      assert a1.dtype == b1.dtype == np.int8


def test_round_trip(tmp_path):
  path = str(tmp_path / "sub" / "submission.json")
  written = submission.write_submission(path, PREDS, {"aaaa0001": 1, "aaaa0002": 2})
  assert_same(written, PREDS)
  assert_same(submission.read_submission(path), PREDS)
  with open(path) as f:
    raw = json.load(f)
  assert raw["aaaa0002"][1] == {"attempt_1": [[8], [9]], "attempt_2": [[0, 0], [0, 0]]}
  assert not [p for p in (tmp_path / "sub").iterdir() if p.name != "submission.json"]


def test_single_attempt_is_repeated_and_lists_accepted(tmp_path):
  path = str(tmp_path / "submission.json")
  submission.write_submission(path, {"t": [[[[1, 2]]]], "u": [g([3])]})
  with open(path) as f:
    raw = json.load(f)
  assert raw == {"t": [{"attempt_1": [[1, 2]], "attempt_2": [[1, 2]]}],
                 "u": [{"attempt_1": [[3]], "attempt_2": [[3]]}]}


@pytest.mark.parametrize("preds,expected,match", [
    ({"t1": [(g([1]), g([10]))]}, None, r"task t1\].*test input 0 attempt 2: colour"),
    ({"t1": [(g([1]), g([1]), g([1]))]}, None, r"task t1\].*1 or 2 attempt grids, got 3"),
    ({"t1": []}, None, r"task t1\].*no test inputs"),
    ({"t1": [(g([1]),)]}, {"t1": 2}, r"task t1\].*1 test input\(s\) predicted, the task has 2"),
    ({"t1": [(g([1]),)]}, {"t1": 1, "t2": 1}, r"missing 1 task\(s\): t2"),
    ({"t1": [(g([1]),)], "t3": [(g([1]),)]}, {"t1": 1}, r"1 unexpected task\(s\): t3"),
    ({"t1": [([[1], [2, 3]],)]}, None, r"task t1\].*non-rectangular"),
    ({"t1": [(np.zeros((31, 1), np.int8),)]}, None, r"task t1\].*31x1 outside"),
])
def test_write_rejects_bad_predictions_naming_file_and_task(tmp_path, preds, expected, match):
  path = str(tmp_path / "submission.json")
  with pytest.raises(SubmissionError, match=match) as e:
    submission.write_submission(path, preds, expected)
  assert f"file {path}" in str(e.value)
  assert not (tmp_path / "submission.json").exists()


@pytest.mark.parametrize("content,match", [
    ("{not json", r"not valid JSON"),
    ("[]", r"expected a JSON object keyed by task id, got list"),
    ('{"t1": {"attempt_1": [[1]]}}', r"task t1\].*expected a list"),
    ('{"t1": [[[1]]]}', r"task t1\].*test input 0: expected an object"),
    ('{"t1": [{"attempt_1": [[1]]}]}', r"task t1\].*test input 0: missing attempt_2"),
    ('{"t1": [{"attempt_1": [[1]], "attempt_2": [[1]]}, {"attempt_2": [[1]]}]}',
     r"task t1\].*test input 1: missing attempt_1"),
    ('{"t1": [{"attempt_1": [[1]], "attempt_2": [[1.5]]}]}',
     r"task t1\].*attempt 2: cell \(0,0\) is 1.5"),
    ('{"t1": [{"attempt_1": [], "attempt_2": [[1]]}]}', r"task t1\].*attempt 1: .*empty"),
])
def test_read_rejects_malformed_files_naming_file_and_task(tmp_path, content, match):
  path = tmp_path / "submission.json"
  path.write_text(content)
  with pytest.raises(SubmissionError, match=match) as e:
    submission.read_submission(str(path))
  assert f"file {path}" in str(e.value)


def test_read_checks_expected_counts_and_partial(tmp_path):
  path = str(tmp_path / "submission.json")
  submission.write_submission(path, PREDS)
  with pytest.raises(SubmissionError, match=r"task aaaa0002\].*2 test input\(s\) predicted, "
                                            r"the task has 3"):
    submission.read_submission(path, {"aaaa0001": 1, "aaaa0002": 3})
  with pytest.raises(SubmissionError, match="missing 1 task"):
    submission.read_submission(path, {"aaaa0001": 1, "aaaa0002": 2, "zzzz": 1})
  partial = submission.read_submission(path, {"aaaa0001": 1, "zzzz": 1}, partial=True)
  assert_same(partial, PREDS)
  with pytest.raises(SubmissionError, match=r"cannot read"):
    submission.read_submission(str(tmp_path / "absent.json"))

"""Kaggle ARC ``submission.json``: write and read, validating both ways.

Format: ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}`` with one entry
per test input, in the task's test order; a grid is a list of rows of ints 0..9.
In memory a submission is ``{task_id: [(attempt_1, attempt_2), ...]}`` of int8
numpy grids. Errors are ``SubmissionError`` naming the file and task.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ttt_jax import atomic_json
from ttt_jax.arc.task import TaskError, check_grid

Attempts = tuple[np.ndarray, np.ndarray]
Submission = dict[str, list[Attempts]]
ATTEMPT_KEYS = ("attempt_1", "attempt_2")


class SubmissionError(TaskError):
  """A malformed submission; the message names the file and task."""


def _check_counts(task_id: str, n: int, expected: Optional[Mapping[str, int]],
                  source: Optional[str]) -> None:
  if expected is not None and task_id in expected and n != expected[task_id]:
    raise SubmissionError(f"{n} test input(s) predicted, the task has {expected[task_id]}",
                          task_id=task_id, source=source)


def _check_coverage(task_ids: Sequence[str], expected: Optional[Mapping[str, int]],
                    source: Optional[str], partial: bool) -> None:
  if expected is None or partial:
    return
  missing = sorted(set(expected) - set(task_ids))
  extra = sorted(set(task_ids) - set(expected))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"missing {len(missing)} task(s): {', '.join(missing[:10])}")
    if extra:
      parts.append(f"{len(extra)} unexpected task(s): {', '.join(extra[:10])}")
    raise SubmissionError("; ".join(parts), source=source)


def normalise(predictions: Mapping[str, Sequence[Sequence[Any]]],
              expected_tests: Optional[Mapping[str, int]] = None,
              source: Optional[str] = None, partial: bool = False) -> Submission:
  """Validates in-memory predictions and returns them as a ``Submission``.

  ``predictions[task_id][i]`` holds the attempts for test input ``i``: one or two
  grids (lists or arrays). A single attempt is repeated as attempt 2 (pass@2 is
  unchanged by it). ``expected_tests`` (``{task_id: number of test inputs}``), when
  given, must match the task ids and per-task counts exactly; with ``partial`` only
  the counts of the tasks present are checked (missing and unknown tasks allowed).
  """
  out: Submission = {}
  for task_id, per_input in predictions.items():
    if not isinstance(task_id, str):
      raise SubmissionError(f"task id must be a str, got {task_id!r}", source=source)
    if isinstance(per_input, (str, bytes, np.ndarray)) or not isinstance(per_input, Sequence):
      raise SubmissionError(f"expected a list of attempts per test input, got "
                            f"{type(per_input).__name__}", task_id=task_id, source=source)
    if not per_input:
      raise SubmissionError("no test inputs predicted", task_id=task_id, source=source)
    _check_counts(task_id, len(per_input), expected_tests, source)
    rows = []
    for i, grids in enumerate(per_input):
      if isinstance(grids, np.ndarray) and grids.ndim == 2:
        grids = [grids]  # a bare grid is one attempt
      if not isinstance(grids, (list, tuple)) or not 1 <= len(grids) <= 2:
        raise SubmissionError(f"test input {i}: expected 1 or 2 attempt grids, got "
                              f"{len(grids) if isinstance(grids, (list, tuple)) else type(grids).__name__}",
                              task_id=task_id, source=source)
      try:
        checked = [check_grid(g, f"test input {i} attempt {a + 1}")
                   for a, g in enumerate(grids)]
      except ValueError as e:
        raise SubmissionError(str(e), task_id=task_id, source=source) from None
      rows.append((checked[0], checked[-1]))
    out[task_id] = rows
  _check_coverage(list(out), expected_tests, source, partial)
  return out


def to_json(submission: Submission) -> dict:
  return {task_id: [{ATTEMPT_KEYS[0]: a1.tolist(), ATTEMPT_KEYS[1]: a2.tolist()}
                    for a1, a2 in rows]
          for task_id, rows in submission.items()}


def write_submission(path: str, predictions: Mapping[str, Sequence[Sequence[Any]]],
                     expected_tests: Optional[Mapping[str, int]] = None) -> Submission:
  """Validates ``predictions`` (see ``normalise``) and writes them atomically to ``path``."""
  sub = normalise(predictions, expected_tests, source=path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  atomic_json.write_json(path, to_json(sub), separators=(",", ":"))
  return sub


def from_json(obj: Any, expected_tests: Optional[Mapping[str, int]] = None,
              source: Optional[str] = None, partial: bool = False) -> Submission:
  """Parses a loaded ``submission.json`` object, strictly: both attempt keys, valid grids."""
  if not isinstance(obj, dict):
    raise SubmissionError(f"expected a JSON object keyed by task id, got {type(obj).__name__}",
                          source=source)
  preds = {}
  for task_id, entries in obj.items():
    if not isinstance(entries, list):
      raise SubmissionError(f"expected a list (one entry per test input), got "
                            f"{type(entries).__name__}", task_id=task_id, source=source)
    rows = []
    for i, entry in enumerate(entries):
      if not isinstance(entry, dict):
        raise SubmissionError(f"test input {i}: expected an object with "
                              f"{' and '.join(ATTEMPT_KEYS)}, got {type(entry).__name__}",
                              task_id=task_id, source=source)
      missing = [k for k in ATTEMPT_KEYS if k not in entry]
      if missing:
        raise SubmissionError(f"test input {i}: missing {', '.join(missing)}",
                              task_id=task_id, source=source)
      rows.append([entry[k] for k in ATTEMPT_KEYS])
    preds[task_id] = rows
  return normalise(preds, expected_tests, source, partial)


def read_submission(path: str, expected_tests: Optional[Mapping[str, int]] = None,
                    partial: bool = False) -> Submission:
  """Reads and validates ``path``; see ``from_json`` and ``normalise``."""
  try:
    with open(path) as f:
      obj = json.load(f)
  except json.JSONDecodeError as e:
    raise SubmissionError(f"not valid JSON: {e}", source=path) from None
  except OSError as e:
    raise SubmissionError(f"cannot read: {e.strerror}", source=path) from None
  return from_json(obj, expected_tests, source=path, partial=partial)

"""ARC grids and tasks: the plain-data contract every other module builds on.

A grid is a 2-D ``np.ndarray`` of small ints (colours 0..9), 1..30 cells per side.
A task holds demonstration pairs, test inputs (with outputs when known) and an id.
Validation happens once, at the boundary (loading), and raises ``TaskError``
naming the source file and task id so a person can find the bad input.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

MAX_SIDE = 30
NUM_COLOURS = 10

Grid = np.ndarray


class TaskError(ValueError):
  """A task (or grid) that breaks the ARC format; the message names file and task."""

  def __init__(self, message: str, *, task_id: Optional[str] = None,
               source: Optional[str] = None):
    self.task_id = task_id
    self.source = source
    where = []
    if source:
      where.append(f"file {source}")
    if task_id:
      where.append(f"task {task_id}")
    prefix = f"[{', '.join(where)}] " if where else ""
    super().__init__(prefix + message)


@dataclasses.dataclass(frozen=True)
class Pair:
  input: Grid
  output: Optional[Grid] = None


@dataclasses.dataclass(frozen=True)
class Task:
  """Demonstrations (``train``) and queries (``test``); test outputs may be None."""
  task_id: str
  train: tuple[Pair, ...]
  test: tuple[Pair, ...]

  @property
  def has_test_outputs(self) -> bool:
    return all(p.output is not None for p in self.test)

  def replace(self, **changes: Any) -> "Task":
    return dataclasses.replace(self, **changes)


def check_grid(value: Any, what: str = "grid") -> Grid:
  """Returns ``value`` as an int8 grid, or raises ValueError saying what is wrong."""
  if isinstance(value, np.ndarray):
    if value.ndim != 2:
      raise ValueError(f"{what}: expected a 2-D array, got {value.ndim}-D")
    if not np.issubdtype(value.dtype, np.integer):
      raise ValueError(f"{what}: expected integer cells, got dtype {value.dtype}")
    rows = value
  else:
    if not isinstance(value, (list, tuple)) or not value:
      raise ValueError(f"{what}: expected a non-empty list of rows, got {type(value).__name__}"
                       + ("" if value else " (empty)"))
    width = None
    for r, row in enumerate(value):
      if not isinstance(row, (list, tuple)):
        raise ValueError(f"{what}: row {r} is {type(row).__name__}, expected a list")
      if width is None:
        width = len(row)
      elif len(row) != width:
        raise ValueError(f"{what}: non-rectangular, row 0 has {width} cells, row {r} has {len(row)}")
      for c, cell in enumerate(row):
        if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)):
          raise ValueError(f"{what}: cell ({r},{c}) is {cell!r}, expected an int")
    rows = np.asarray(value, dtype=np.int64)
  h, w = rows.shape
  if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
    raise ValueError(f"{what}: shape {h}x{w} outside 1..{MAX_SIDE} per side")
  lo, hi = int(rows.min()), int(rows.max())
  if lo < 0 or hi >= NUM_COLOURS:
    raise ValueError(f"{what}: colour outside 0..{NUM_COLOURS - 1} (min {lo}, max {hi})")
  return rows.astype(np.int8)


def _parse_pairs(items: Any, split: str, need_output: bool) -> tuple[Pair, ...]:
  if not isinstance(items, list):
    raise ValueError(f"'{split}' must be a list of pairs, got {type(items).__name__}")
  if not items:
    raise ValueError(f"'{split}' is empty")
  pairs = []
  for i, item in enumerate(items):
    if not isinstance(item, dict):
      raise ValueError(f"{split}[{i}] must be an object, got {type(item).__name__}")
    if "input" not in item:
      raise ValueError(f"{split}[{i}] has no 'input'")
    inp = check_grid(item["input"], f"{split}[{i}].input")
    out = item.get("output")
    if out is None:
      if need_output:
        raise ValueError(f"{split}[{i}] has no 'output'")
    else:
      out = check_grid(out, f"{split}[{i}].output")
    pairs.append(Pair(inp, out))
  return tuple(pairs)


def task_from_json(obj: Any, task_id: str, source: Optional[str] = None) -> Task:
  """Builds a validated Task from the ARC JSON object ``{"train": [...], "test": [...]}``."""
  try:
    if not isinstance(obj, dict):
      raise ValueError(f"expected a JSON object with 'train' and 'test', got {type(obj).__name__}")
    for key in ("train", "test"):
      if key not in obj:
        raise ValueError(f"missing '{key}'")
    train = _parse_pairs(obj["train"], "train", need_output=True)
    test = _parse_pairs(obj["test"], "test", need_output=False)
  except ValueError as e:
    raise TaskError(str(e), task_id=task_id, source=source) from None
  return Task(task_id=task_id, train=train, test=test)


def task_to_json(task: Task) -> dict:
  def pair(p: Pair) -> dict:
    d = {"input": p.input.tolist()}
    if p.output is not None:
      d["output"] = p.output.tolist()
    return d
  return {"train": [pair(p) for p in task.train], "test": [pair(p) for p in task.test]}


def make_task(task_id: str, train: Sequence[tuple[Any, Any]],
              test: Sequence[tuple[Any, Any]]) -> Task:
  """Convenience constructor from (input, output) tuples; validates every grid."""
  obj = {"train": [{"input": np.asarray(i).tolist(), "output": np.asarray(o).tolist()}
                   for i, o in train],
         "test": [{"input": np.asarray(i).tolist()} | (
             {} if o is None else {"output": np.asarray(o).tolist()}) for i, o in test]}
  return task_from_json(obj, task_id)


def grids_equal(a: Optional[Any], b: Optional[Any]) -> bool:
  """Same shape and cells; None equals nothing. Arrays or nested lists (grids read from JSON)."""
  if a is None or b is None:
    return False
  a, b = np.asarray(a), np.asarray(b)
  return a.shape == b.shape and bool(np.array_equal(a, b))

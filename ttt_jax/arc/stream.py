"""Deterministic, shardable, resumable stream of fine-tuning tasks.

The stream mixes procedurally generated tasks (``ttt_jax.arc.generators``) with
task sets such as ARC-AGI-1 training under the paper's augmentations, each source
drawn with its weight. Example ``i`` of the global sequence depends only on
``(seed, i)``: it is drawn from ``np.random.default_rng([seed, i])``. Shard ``k`` of
``n`` yields global examples ``k, k + n, k + 2n, ...``, so hosts and data-loader
workers never overlap and need no communication, and a shard's whole state is one
integer, ``position`` (how many tasks it has yielded). Checkpoint ``state()`` beside
the weights and rebuild with ``TaskStream.from_state`` (or ``start=position``) to
resume on the identical sequence.

Task sets are sampled with replacement (every draw is a fresh augmentation, so
repeats are rare as identical examples).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from ttt_jax.arc import augment as augment_lib
from ttt_jax.arc import generators, io
from ttt_jax.arc.task import Task

log = logging.getLogger(__name__)

GENERATORS = "generators"
DEFAULT_SOURCES = ((GENERATORS, 1.0), ("arc1-train", 1.0))
MAX_DRAWS = 50  # per example: augmentations that overflow 30x30, failing families

AugmentFn = Callable[[Task, np.random.Generator], Optional[Task]]


def shard_of(host_index: int, num_hosts: int, worker_index: int = 0,
             num_workers: int = 1) -> tuple[int, int]:
  """(shard_index, num_shards) for one data-loading worker on one host."""
  if not (0 <= host_index < num_hosts and 0 <= worker_index < num_workers):
    raise ValueError(f"host {host_index}/{num_hosts}, worker {worker_index}/{num_workers}: "
                     "index out of range")
  return host_index * num_workers + worker_index, num_hosts * num_workers


def _load_set(name: str) -> list[Task]:
  tasks, errors = io.load_tasks(name)
  if not tasks:
    raise ValueError(f"task stream source {name!r} holds no valid tasks ({len(errors)} errors)")
  return [t for t in tasks if t.has_test_outputs]


class TaskStream(Iterator[Task]):
  """Iterator over one shard of the mixed task stream; see the module docstring.

  Args:
    sources: (name, weight) pairs. ``"generators"`` draws a family uniformly from
      ``families`` (default: all) and a difficulty uniformly from ``difficulty``;
      any other name is a task set (``ttt_jax.arc.io.load_tasks`` spec such as
      ``"arc1-train"``) whose tasks are passed through ``augment``.
    seed: the global seed; every shard of one run uses the same one.
    shard_index, num_shards: this shard (see ``shard_of``).
    start: position to resume from (tasks this shard already yielded).
    task_sets: preloaded tasks per source name (default: loaded on first use).
    augment: ``(task, rng) -> Optional[Task]``; default the paper's random
      augmentation ``ttt_jax.arc.augment.augment_task_randomly``; None results
      (grids over 30x30) are redrawn.
  """

  def __init__(self, sources: Sequence[tuple[str, float]] = DEFAULT_SOURCES, seed: int = 0,
               shard_index: int = 0, num_shards: int = 1, start: int = 0, *,
               difficulty: tuple[float, float] = (0.0, 1.0),
               families: Optional[Sequence[str]] = None,
               task_sets: Optional[Mapping[str, Sequence[Task]]] = None,
               augment: Optional[AugmentFn] = None):
    self.sources = tuple((str(n), float(w)) for n, w in sources)
    weights = np.array([w for _, w in self.sources], float)
    if not self.sources or (weights < 0).any() or weights.sum() <= 0:
      raise ValueError(f"task stream: sources need non-negative weights with a positive sum, "
                       f"got {list(self.sources)}")
    if not 0 <= shard_index < num_shards:
      raise ValueError(f"task stream: shard_index {shard_index} not in [0, {num_shards})")
    if start < 0:
      raise ValueError(f"task stream: start must be >= 0, got {start}")
    lo, hi = difficulty
    if not 0.0 <= lo <= hi <= 1.0:
      raise ValueError(f"task stream: difficulty range {difficulty} not within [0, 1]")
    self.families = tuple(sorted(generators.FAMILIES) if families is None else families)
    unknown = [f for f in self.families if f not in generators.FAMILIES]
    if unknown or not self.families:
      raise ValueError(f"task stream: unknown or no generator families {unknown}")
    self._p = weights / weights.sum()
    self.seed, self.shard_index, self.num_shards = int(seed), int(shard_index), int(num_shards)
    self.position = int(start)
    self.difficulty = (float(lo), float(hi))
    self._task_sets = dict(task_sets or {})
    self._augment = augment or augment_lib.augment_task_randomly

  def __iter__(self) -> "TaskStream":
    return self

  def __next__(self) -> Task:
    task = self.task_at(self.shard_index + self.position * self.num_shards)
    self.position += 1
    return task

  def task_at(self, global_index: int) -> Task:
    """Example ``global_index`` of the unsharded sequence (random access, pure)."""
    rng = np.random.default_rng([self.seed, int(global_index)])
    name = self.sources[int(rng.choice(len(self.sources), p=self._p))][0]
    for _ in range(MAX_DRAWS):
      task = self._generated(rng) if name == GENERATORS else self._augmented(name, rng)
      if task is not None:
        return task
    raise RuntimeError(f"task stream: source {name!r} gave no usable task in {MAX_DRAWS} draws "
                       f"at global index {global_index} (seed {self.seed})")

  def _generated(self, rng: np.random.Generator) -> Optional[Task]:
    family = self.families[int(rng.integers(len(self.families)))]
    lo, hi = self.difficulty
    difficulty = float(lo + (hi - lo) * rng.random())
    seed = int(rng.integers(2**62))
    try:
      return generators.generate(family, seed, difficulty)
    except generators.GenerationError as e:
      log.warning("task stream: skipping a failed draw: %s", e)
      return None

  def _augmented(self, name: str, rng: np.random.Generator) -> Optional[Task]:
    tasks = self._task_sets.get(name)
    if tasks is None:
      tasks = self._task_sets[name] = _load_set(name)
    return self._augment(tasks[int(rng.integers(len(tasks)))], rng)

  def state(self) -> dict[str, Any]:
    """JSON-serialisable state; ``TaskStream.from_state`` resumes exactly here."""
    return {"sources": [list(s) for s in self.sources], "seed": self.seed,
            "shard_index": self.shard_index, "num_shards": self.num_shards,
            "position": self.position, "difficulty": list(self.difficulty),
            "families": list(self.families)}

  @classmethod
  def from_state(cls, state: Mapping[str, Any], **kwargs: Any) -> "TaskStream":
    """Rebuilds a stream from ``state()``; ``kwargs`` pass task_sets/augment."""
    return cls([tuple(s) for s in state["sources"]], state["seed"], state["shard_index"],
               state["num_shards"], state["position"], difficulty=tuple(state["difficulty"]),
               families=state["families"], **kwargs)


def task_stream(sources: Sequence[tuple[str, float]] = DEFAULT_SOURCES, seed: int = 0,
                shard_index: int = 0, num_shards: int = 1, start: int = 0,
                **kwargs: Any) -> TaskStream:
  """Shorthand for ``TaskStream(...)``; iterate it for ``Task``s, checkpoint ``.state()``."""
  return TaskStream(sources, seed, shard_index, num_shards, start, **kwargs)

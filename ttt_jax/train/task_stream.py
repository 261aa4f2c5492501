"""Deterministic, resumable streams of training tasks and their fine-tuning episodes.

A stream factory is ``make_stream(start: int) -> Iterator[Task]`` yielding the tasks at
positions ``start, start+1, ...``; the item at a position never depends on where iteration
began, so saving the position beside the weights makes a resumed run see the same data.
(The generators' ``ttt_jax.arc.stream`` provides richer streams with the same protocol.)
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ttt_jax.arc.task import Pair, Task

StreamFactory = Callable[[int], Iterator[Task]]


def augmented_task_stream(tasks: Sequence[Task], seed: int, augment: bool = True) -> StreamFactory:
  """Endless stream over ``tasks``: a fresh permutation per epoch, each task under a random
  augmentation drawn from ``default_rng((seed, position))`` (unaugmented when it fails)."""
  if not tasks:
    raise ValueError("augmented_task_stream needs at least one task")
  n = len(tasks)

  def at(position: int) -> Task:
    epoch, i = divmod(position, n)
    task = tasks[int(np.random.default_rng((seed, epoch)).permutation(n)[i])]
    if augment:
      from ttt_jax.arc.augment import augment_task_randomly  # pylint: disable=g-import-not-at-top
      aug = augment_task_randomly(task, np.random.default_rng((seed, epoch, i, 1)))
      task = aug if aug is not None else task
    return task

  def make_stream(start: int) -> Iterator[Task]:
    return (at(p) for p in itertools.count(start))

  return make_stream


def task_pairs(task: Task) -> list[Pair]:
  """Demonstrations plus test pairs whose outputs are known."""
  return list(task.train) + [p for p in task.test if p.output is not None]


def episode_for_task(task: Task, *, max_tokens: int, loss_mode: str = "all_outputs"):
  """One in-context episode of a task: the last known pair is the query, earlier pairs the
  demonstrations; leading demonstrations are dropped until it fits ``max_tokens``.
  Returns None when the task has under two pairs or cannot fit."""
  from ttt_jax.data import loo  # pylint: disable=g-import-not-at-top
  from ttt_jax.data.tokens import episode_num_tokens  # pylint: disable=g-import-not-at-top
  pairs = task_pairs(task)
  if len(pairs) < 2:
    return None
  demos, query = pairs[:-1], pairs[-1]
  while demos and episode_num_tokens(demos, query.input, query.output) > max_tokens:
    demos = demos[1:]
  if not demos:
    return None
  return loo.episode_example(demos, query, loss_mode)


def take_examples(stream: Iterator[Task], position: int, count: int,
                  to_example: Callable[[Task], Optional[object]]) -> tuple[list, int]:
  """Next ``count`` usable examples from ``stream`` (which is at ``position``); skips tasks
  that give None. Returns the examples and the new position."""
  out = []
  while len(out) < count:
    ex = to_example(next(stream))
    position += 1
    if ex is not None:
      out.append(ex)
  return out, position

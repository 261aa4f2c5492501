"""Deterministic, resumable streams of training tasks and their fine-tuning episodes.

A stream factory is ``make_stream(start: int) -> Iterator[Task]`` yielding the tasks at
positions ``start, start+1, ...``; the item at a position never depends on where iteration
began, so saving the position beside the weights makes a resumed run see the same data.
``source_stream`` builds one from ``ttt_jax.arc.stream`` (generated + augmented ARC tasks).
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

from ttt_jax.arc.task import Pair, Task

StreamFactory = Callable[[int], Iterator[Task]]


def parse_sources(spec: str) -> list[tuple[str, float]]:
  """``"generators:1,arc1-train:0.5"`` -> ``[("generators", 1.0), ("arc1-train", 0.5)]``."""
  out = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, _, weight = part.rpartition(":")
    if not name:
      name, weight = weight, "1"
    try:
      out.append((name, float(weight)))
    except ValueError:
      raise ValueError(f"bad source {part!r} in {spec!r}; expected name:weight") from None
  if not out:
    raise ValueError(f"no sources in {spec!r}")
  return out


def training_families(exclude: Sequence[str] = ()) -> tuple[str, ...]:
  """Generator families fine-tuning draws from: all but ``exclude`` (held out to measure
  generalisation to task types the model has never seen)."""
  from ttt_jax.arc import generators  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(exclude) - set(generators.FAMILIES))
  if unknown:
    raise ValueError(f"unknown generator families to hold out: {unknown}; known: "
                     f"{sorted(generators.FAMILIES)}")
  kept = tuple(f for f in sorted(generators.FAMILIES) if f not in set(exclude))
  if not kept:
    raise ValueError("every generator family is held out")
  return kept


def source_stream(spec: str, seed: int, exclude_families: Sequence[str] = ()) -> StreamFactory:
  """The fine-tuning stream: ``ttt_jax.arc.stream`` over weighted sources (``"generators"``
  or any ``load_tasks`` name, augmented), this process's shard of the global sequence.
  ``exclude_families`` are never generated."""
  import jax  # pylint: disable=g-import-not-at-top
  from ttt_jax.arc import stream  # pylint: disable=g-import-not-at-top
  sources = parse_sources(spec)
  families = training_families(exclude_families)

  def make_stream(start: int) -> Iterator[Task]:
    return stream.task_stream(sources, seed=seed, shard_index=jax.process_index(),
                              num_shards=jax.process_count(), start=start, families=families)

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

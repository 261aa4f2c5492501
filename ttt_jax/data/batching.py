"""Examples -> static-shape batches for jitted steps (numpy only).

jit compiles once per shape, so sequences are right-padded to one of a few bucket lengths and
partial batches are filled with zero-weight rows. The next-token shift happens here: a batch
holds the inputs ``tokens[:-1]``, the targets ``tokens[1:]`` and the loss weights
``loss_mask[1:]``, so the model and the loss never shift anything.

For many-task TTT, ``TaskGroupPlan`` lays K tasks' epochs side by side: step ``s`` gives a
``[K, B, T]`` batch; a task that has fewer steps than the longest gets all-zero-weight steps,
which the vmapped train step treats as "leave this task's adapter and optimizer state as they
are". Plans are built from index arrays, so no ``[S, K, B, T]`` array is ever materialised.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Protocol, Sequence

import numpy as np

from ttt_jax.data.tokens import PAD


class ExampleLike(Protocol):
  tokens_T: np.ndarray  # int32 token ids
  loss_mask_T: np.ndarray  # bool: token t is a training target (predicted from tokens < t)


class Batch(NamedTuple):
  """Model inputs and targets; every field has the same leading shape (``[B, T]``, ``[K, B, T]``...).

  tokens: int32 inputs, PAD after the end. positions: int32, 0.. along real tokens, 0 on padding.
  mask: bool, True on real input tokens. targets: int32 next tokens. weights: float32 loss weight
  of each target (0 on padding and on tokens outside the loss mask).
  """
  tokens: np.ndarray
  positions: np.ndarray
  mask: np.ndarray
  targets: np.ndarray
  weights: np.ndarray


def default_buckets(max_tokens: int, min_len: int = 64) -> tuple[int, ...]:
  """Powers of two from ``min_len`` up to ``max_tokens`` (always included): few shapes to compile."""
  if max_tokens < 2:
    raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
  out, n = [], min_len
  while n < max_tokens:
    out.append(n)
    n *= 2
  out.append(max_tokens)
  return tuple(out)


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """Smallest bucket holding ``n`` positions; raises when none does."""
  for b in sorted(buckets):
    if n <= b:
      return int(b)
  raise ValueError(f"sequence of {n} positions exceeds the largest bucket {max(buckets)}")


def input_length(example: ExampleLike) -> int:
  """Positions an example occupies after the next-token shift."""
  return int(len(example.tokens_T)) - 1


def _check(example: ExampleLike, i: int) -> None:
  t, m = np.asarray(example.tokens_T), np.asarray(example.loss_mask_T)
  if t.ndim != 1 or t.shape != m.shape or t.size < 2:
    raise ValueError(f"example {i}: tokens_T {t.shape} and loss_mask_T {m.shape} must be equal 1-D "
                     "arrays of at least 2 tokens")


def pad_examples(examples: Sequence[Optional[ExampleLike]], length: int,
                 batch_size: Optional[int] = None) -> Batch:
  """Shifts and right-pads examples into a ``[B, length]`` batch.

  ``None`` entries (and rows beyond ``len(examples)`` up to ``batch_size``) become padding rows
  with zero weight.
  """
  b = len(examples) if batch_size is None else batch_size
  if len(examples) > b:
    raise ValueError(f"{len(examples)} examples do not fit batch_size {b}")
  tokens = np.full((b, length), PAD, np.int32)
  targets = np.full((b, length), PAD, np.int32)
  positions = np.zeros((b, length), np.int32)
  mask = np.zeros((b, length), bool)
  weights = np.zeros((b, length), np.float32)
  for i, ex in enumerate(examples):
    if ex is None:
      continue
    _check(ex, i)
    t = np.asarray(ex.tokens_T, np.int32)
    n = t.size - 1
    if n > length:
      raise ValueError(f"example {i} has {n} input positions, longer than the batch length {length}")
    tokens[i, :n] = t[:-1]
    targets[i, :n] = t[1:]
    positions[i, :n] = np.arange(n)
    mask[i, :n] = True
    weights[i, :n] = np.asarray(ex.loss_mask_T[1:], np.float32)
  return Batch(tokens, positions, mask, targets, weights)


def stack_batches(batches: Sequence[Batch]) -> Batch:
  """Stacks batches of equal shape along a new leading axis (e.g. tasks -> ``[K, B, T]``)."""
  return Batch(*(np.stack(f) for f in zip(*batches)))


def num_steps(num_examples: int, batch_size: int, epochs: int) -> int:
  """Updates for ``epochs`` passes with a final partial batch per epoch (HF's drop_last=False)."""
  return epochs * -(-num_examples // batch_size)


def epoch_plan(num_examples: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
  """Example indices of every step: each epoch a fresh permutation, cut into batches."""
  if num_examples <= 0:
    raise ValueError("a task needs at least one example to train on")
  rng = np.random.default_rng(seed)
  steps = []
  for _ in range(epochs):
    order = rng.permutation(num_examples)
    steps.extend(order[i:i + batch_size] for i in range(0, num_examples, batch_size))
  return steps


@dataclasses.dataclass
class TaskGroupPlan:
  """K tasks' shuffled epochs side by side, padded to the longest with zero-weight steps.

  ``batch(s)`` is the ``[K, B, T]`` batch of step ``s``; ``steps_K[k]`` is how many real steps
  task k has (its schedule length). ``length`` is the shared padded sequence length.
  """
  examples: list[Sequence[ExampleLike]]
  steps: list[list[np.ndarray]]
  batch_size: int
  length: int

  @property
  def num_tasks(self) -> int:
    return len(self.examples)

  @property
  def steps_K(self) -> np.ndarray:
    return np.array([len(s) for s in self.steps], np.int32)

  @property
  def num_steps(self) -> int:
    return int(self.steps_K.max()) if self.steps else 0

  def task_batch(self, k: int, s: int) -> Batch:
    """Task k's ``[B, T]`` batch at step s (all padding past its last step)."""
    idx = self.steps[k][s] if s < len(self.steps[k]) else ()
    return pad_examples([self.examples[k][i] for i in idx], self.length, self.batch_size)

  def batch(self, s: int) -> Batch:
    return stack_batches([self.task_batch(k, s) for k in range(self.num_tasks)])


def plan_task_group(examples_per_task: Sequence[Sequence[ExampleLike]], *, batch_size: int,
                    epochs: int, seeds: Sequence[int], buckets: Sequence[int],
                    num_tasks: Optional[int] = None) -> TaskGroupPlan:
  """Plans K tasks' training together; ``num_tasks`` pads the group with empty (all-padding) tasks.

  The sequence length is the bucket of the longest example over the group; shuffling per task
  depends only on that task's seed, so a task trains on the same batches alone or in any group.
  """
  if len(seeds) != len(examples_per_task):
    raise ValueError(f"{len(seeds)} seeds for {len(examples_per_task)} tasks")
  k_total = len(examples_per_task) if num_tasks is None else num_tasks
  if k_total < len(examples_per_task):
    raise ValueError(f"num_tasks={k_total} is fewer than the {len(examples_per_task)} tasks given")
  longest = max((input_length(e) for exs in examples_per_task for e in exs), default=1)
  length = bucket_length(longest, buckets)
  examples = [list(e) for e in examples_per_task]
  steps = [epoch_plan(len(e), batch_size, epochs, s) for e, s in zip(examples, seeds)]
  examples += [[] for _ in range(k_total - len(examples))]
  steps += [[] for _ in range(k_total - len(steps))]
  return TaskGroupPlan(examples, steps, batch_size, length)


def group_by_length(lengths: Sequence[int], group_size: int,
                    buckets: Sequence[int]) -> list[list[int]]:
  """Indices grouped ``group_size`` at a time, sorted by bucket so groups share a padded length.

  Sorting by (bucket, length) keeps short tasks from paying for a long one's padding.
  """
  order = sorted(range(len(lengths)), key=lambda i: (bucket_length(lengths[i], buckets), lengths[i], i))
  return [order[i:i + group_size] for i in range(0, len(order), group_size)]

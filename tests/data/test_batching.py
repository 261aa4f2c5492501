from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ttt_jax.data import batching
from ttt_jax.data.tokens import PAD


@dataclasses.dataclass(frozen=True)
class Ex:
  tokens_T: np.ndarray
  loss_mask_T: np.ndarray


def ex(n: int, start: int = 0) -> Ex:
  toks = (np.arange(n) + start) % 10
  mask = np.arange(n) >= n // 2
  return Ex(toks.astype(np.int32), mask)


def test_buckets():
  assert batching.default_buckets(1000, 64) == (64, 128, 256, 512, 1000)
  assert batching.bucket_length(65, (64, 128)) == 128
  assert batching.bucket_length(64, (64, 128)) == 64
  with pytest.raises(ValueError, match="exceeds"):
    batching.bucket_length(129, (64, 128))


def test_pad_examples_shift_and_padding():
  a, b = ex(5), ex(3, start=4)
  batch = batching.pad_examples([a, b], length=6, batch_size=3)
  assert batch.tokens.shape == (3, 6) and batch.tokens.dtype == np.int32
  np.testing.assert_array_equal(batch.tokens[0], [0, 1, 2, 3, PAD, PAD])
  np.testing.assert_array_equal(batch.targets[0], [1, 2, 3, 4, PAD, PAD])
  np.testing.assert_array_equal(batch.weights[0], [0, 1, 1, 1, 0, 0])  # loss_mask[1:]
  np.testing.assert_array_equal(batch.positions[1], [0, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch.mask[1], [1, 1, 0, 0, 0, 0])
  assert not batch.mask[2].any() and not batch.weights[2].any()  # padding row
  # the shift is an inverse: inputs + last target rebuild each example
  for i, e in enumerate([a, b]):
    n = len(e.tokens_T) - 1
    np.testing.assert_array_equal(np.r_[batch.tokens[i, :n], batch.targets[i, n - 1]], e.tokens_T)
  with pytest.raises(ValueError, match="longer than"):
    batching.pad_examples([ex(10)], length=6)


def test_epoch_plan_covers_every_example_each_epoch():
  steps = batching.epoch_plan(5, batch_size=2, epochs=2, seed=3)
  assert len(steps) == batching.num_steps(5, 2, 2) == 6
  for e in range(2):
    np.testing.assert_array_equal(np.sort(np.concatenate(steps[3 * e:3 * e + 3])), np.arange(5))
  again = batching.epoch_plan(5, batch_size=2, epochs=2, seed=3)
  assert all(np.array_equal(x, y) for x, y in zip(steps, again))


def test_group_plan_pads_short_tasks_with_zero_weight_steps():
  tasks = [[ex(9), ex(12), ex(7)], [ex(20)]]
  plan = batching.plan_task_group(tasks, batch_size=2, epochs=2, seeds=[0, 1],
                                  buckets=(16, 32), num_tasks=3)
  assert plan.length == 32 and plan.num_tasks == 3
  np.testing.assert_array_equal(plan.steps_K, [4, 2, 0])
  assert plan.num_steps == 4
  b = plan.batch(3)
  assert b.tokens.shape == (3, 2, 32)
  assert b.weights[0].sum() > 0 and b.weights[1].sum() == 0 and b.weights[2].sum() == 0
  # a task's batches do not depend on the group it is in (only the padded length may differ)
  alone = batching.plan_task_group(tasks[:1], batch_size=2, epochs=2, seeds=[0], buckets=(16, 32))
  assert alone.length == 16
  for s in range(4):
    for f, g in zip(alone.batch(s), plan.batch(s)):
      np.testing.assert_array_equal(f[0], g[0][:, :16])
    assert not plan.batch(s).mask[0][:, 16:].any()


def test_group_by_length():
  groups = batching.group_by_length([100, 10, 90, 20, 60], 2, buckets=(32, 128))
  assert groups == [[1, 3], [4, 2], [0]]

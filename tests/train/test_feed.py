"""The training feed: worker processes give exactly the single-process example sequence, resumed
feeds continue it, and length-sorted windows plan every example once within the token budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from train_helpers import Ex

from ttt_jax.data import batching
from ttt_jax.train import feed, task_stream

# max_tokens=256 makes some generated tasks give no episode (None), so positions and usable
# examples differ, as they do in real runs.
SOURCE = feed.SourceExamples("generators:1", seed=1, exclude_families=("overlay_xor",),
                             max_tokens=256)


def assert_same_examples(got, want):
  assert len(got) == len(want)
  for i, (g, w) in enumerate(zip(got, want)):
    assert (g is None) == (w is None), i
    if w is not None:
      np.testing.assert_array_equal(g.tokens_T, w.tokens_T)
      np.testing.assert_array_equal(g.loss_mask_T, w.loss_mask_T)
      assert g.task_id == w.task_id


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def same_objects(a, b) -> bool:
  return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def test_source_examples_are_the_task_stream_episodes():
  tasks = task_stream.source_stream("generators:1", seed=1, exclude_families=("overlay_xor",))(7)
  want = [task_stream.episode_for_task(t, max_tokens=256) for t in itertools.islice(tasks, 30)]
  got = take(feed.serial_examples(SOURCE, 7), 30)
  assert_same_examples(got, want)
  assert any(e is None for e in got) and any(e is not None for e in got)


def test_worker_processes_give_the_single_process_sequence_and_resume():
  want = take(feed.serial_examples(SOURCE, 3), 45)
  with feed.ParallelExamples(SOURCE, 3, num_workers=3, chunk=4, prefetch=2) as par:
    assert_same_examples(take(par, 45), want)
  with feed.ParallelExamples(SOURCE, 3 + 17, num_workers=2, chunk=3) as resumed:
    assert_same_examples(take(resumed, 28), want[17:])


class FailsAt:
  """Picklable example function that raises at one position."""

  def __init__(self, bad: int):
    self.bad = bad

  def __call__(self, position: int):
    if position == self.bad:
      raise ValueError(f"no task at {position}")
    return Ex(np.arange(position + 2, dtype=np.int32), np.ones(position + 2, bool))


def test_a_worker_error_reaches_the_reader():
  with feed.ParallelExamples(FailsAt(5), 0, num_workers=2, chunk=1) as par:
    assert [len(e.tokens_T) for e in take(par, 5)] == [2, 3, 4, 5, 6]
    with pytest.raises(RuntimeError, match="no task at 5"):
      next(par)


def examples_with_gaps(n: int, seed: int = 0) -> list:
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    if rng.random() < 0.1:
      out.append(None)  # a task without an episode
      continue
    t = int(rng.integers(3, 129))
    out.append(Ex(rng.integers(0, 10, t).astype(np.int32), rng.random(t) < 0.5))
  return out


BUCKETS = (16, 32, 64, 128)


def test_plan_window_uses_every_example_once_within_the_budget():
  lengths = [batching.input_length(e) for e in examples_with_gaps(300) if e is not None]
  plan = feed.plan_window(lengths, BUCKETS, batch_tokens=256)
  assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
  for b in plan:
    bucket = batching.bucket_length(max(lengths[i] for i in b), BUCKETS)
    assert len(b) <= feed.rows_for(bucket, 256) and len(b) * bucket <= 256
  # short examples share batches: far fewer padded tokens than the same batch count in order
  sorted_cost = sum(batching.bucket_length(max(lengths[i] for i in b), BUCKETS) * len(b)
                    for b in plan)
  assert sum(lengths) / sorted_cost > 0.6


def test_fixed_batches_are_stream_order_chunks():
  exs = examples_with_gaps(200)
  usable = [e for e in exs if e is not None]
  got = take(feed.batches(iter(exs), feed.FeedState(0), batch_size=5, buckets=BUCKETS), 20)
  for k, b in enumerate(got):
    assert same_objects(b.examples, usable[5 * k:5 * k + 5]) and b.rows == 5 and b.state.skip == 0
    assert b.length == batching.bucket_length(max(map(batching.input_length, b.examples)),
                                              BUCKETS)
  # the state after batch k is the stream position after its last example
  assert got[-1].state.position == next(i for i, e in enumerate(exs) if e is usable[99]) + 1


def windowed(exs, state):
  return feed.batches(iter(exs[state.position:]), state, batch_size=5, buckets=BUCKETS,
                      batch_tokens=256, window=40, seed=3)


def test_windowed_batches_resume_from_any_state():
  exs = examples_with_gaps(600)
  full = take(windowed(exs, feed.FeedState(0)), 60)
  for k in (0, 1, 7, 23, 41):
    resumed = take(windowed(exs, full[k].state), 60 - k - 1)
    for a, b in zip(resumed, full[k + 1:]):
      assert same_objects(a.examples, b.examples) and (a.length, a.rows, a.state) == (b.length, b.rows, b.state)
  # the first window's batches (up to the one whose state moves past it) hold its 40 usable
  # examples once each, within the token budget
  n = next(k for k, b in enumerate(full) if b.state.skip == 0) + 1
  first = [e for b in full[:n] for e in b.examples]
  assert sorted(map(id, first)) == sorted(map(id, [e for e in exs if e is not None][:40]))
  assert all(b.rows * b.length <= 256 for b in full)
  fixed = take(feed.batches(iter(exs), feed.FeedState(0), batch_size=5, buckets=BUCKETS), 60)
  assert feed.padding_efficiency(full) > feed.padding_efficiency(fixed)

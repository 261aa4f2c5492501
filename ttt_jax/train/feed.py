"""Training batches from the task stream: worker processes and length-sorted windows.

Fine-tuning uses one example per stream position (``task_stream``). Generating, augmenting and
tokenising them is CPU work that a GPU step outruns, and padding a batch to its longest episode
wastes most of the step on short ones. Both fixes here are pure functions of the stream position,
so a resumed run sees exactly the data of an uninterrupted one:

* ``ParallelExamples``: W worker processes; worker w makes the examples at positions
  start + w, start + w + W, ...; the main process reads them back round-robin, so the sequence
  is the single-process one (``serial_examples``) whatever W is.
* ``batches``: cuts the example sequence into training batches. Either ``batch_size`` examples
  in stream order, padded to the longest one's bucket (the original behaviour), or length-sorted
  windows: ``window`` examples sorted by length and cut into batches of at most
  ``batch_tokens`` padded tokens (``batch_tokens // bucket`` rows, one compiled shape per
  bucket), in a shuffled order. ``FeedState`` (window start, batches of it done) says where to
  resume.

This module imports no JAX: worker processes load only numpy and the task code.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import multiprocessing
import os
import queue
import time
import traceback
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import numpy as np

from ttt_jax.data import batching
from ttt_jax.train import task_stream

Example = Any  # ttt_jax.data.loo.Example (tokens_T, loss_mask_T, ...)
ExampleAt = Callable[[int], Optional[Example]]


@functools.lru_cache(maxsize=4)
def _task_stream(spec: str, seed: int, exclude: tuple[str, ...], shard_index: int,
                 num_shards: int):
  """One ``TaskStream`` per process and source (its task sets load once)."""
  from ttt_jax.arc import stream  # pylint: disable=g-import-not-at-top
  return stream.TaskStream(task_stream.parse_sources(spec), seed, shard_index, num_shards,
                           families=task_stream.training_families(exclude))


@dataclasses.dataclass(frozen=True)
class SourceExamples:
  """Position -> the fine-tuning episode of ``task_stream.source_stream``'s task there (None
  when it gives none). Picklable, so worker processes can rebuild it."""
  spec: str
  seed: int
  exclude_families: tuple[str, ...] = ()
  max_tokens: int = 8192
  loss_mode: str = "all_outputs"
  shard_index: int = 0
  num_shards: int = 1

  def __call__(self, position: int) -> Optional[Example]:
    stream = _task_stream(self.spec, self.seed, tuple(self.exclude_families), self.shard_index,
                          self.num_shards)
    task = stream.task_at(self.shard_index + position * self.num_shards)
    return task_stream.episode_for_task(task, max_tokens=self.max_tokens,
                                        loss_mode=self.loss_mode)


def serial_examples(example_at: ExampleAt, start: int) -> Iterator[Optional[Example]]:
  """Examples at positions start, start + 1, ... made in this process."""
  return map(example_at, itertools.count(start))


class _Failure(NamedTuple):
  traceback: str


def _put(out, item, stop, parent: int) -> bool:
  """Blocks until ``item`` is queued; False once stopped or orphaned."""
  while not stop.is_set() and os.getppid() == parent:
    try:
      out.put(item, timeout=0.5)
      return True
    except queue.Full:
      continue
  return False


def _work(example_at: ExampleAt, start: int, worker: int, num_workers: int, chunk: int, out,
          stop, parent: int) -> None:
  """Worker ``worker``: chunks of its positions start + worker + j * num_workers, in order."""
  try:
    for j in itertools.count(0, chunk):
      items = [example_at(start + worker + (j + i) * num_workers) for i in range(chunk)]
      if not _put(out, items, stop, parent):
        break
  except BaseException:  # pylint: disable=broad-except
    if _put(out, _Failure(traceback.format_exc()), stop, parent):
      return  # exiting flushes it to the reader, who waits for this worker
  out.cancel_join_thread()  # stopped: exit without flushing what nobody will read


class ParallelExamples(Iterator[Optional[Example]]):
  """``serial_examples(example_at, start)``, made by ``num_workers`` processes.

  ``example_at`` must be picklable (e.g. ``SourceExamples``). Workers run ahead by up to
  ``prefetch`` chunks of ``chunk`` examples each; a worker's exception is re-raised here.
  Call ``close()`` (or use ``with``) to stop them.
  """

  def __init__(self, example_at: ExampleAt, start: int, num_workers: int, *, chunk: int = 8,
               prefetch: int = 8, context: str = "spawn"):
    if num_workers < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    ctx = multiprocessing.get_context(context)
    self._stop = ctx.Event()
    self._queues = [ctx.Queue(maxsize=prefetch) for _ in range(num_workers)]
    self._procs = [ctx.Process(target=_work, daemon=True, name=f"feed-{w}",
                               args=(example_at, start, w, num_workers, chunk, q, self._stop,
                                     os.getpid()))
                   for w, q in enumerate(self._queues)]
    for p in self._procs:
      p.start()
    self._buffers = [collections.deque() for _ in range(num_workers)]
    self._index = 0

  def __next__(self) -> Optional[Example]:
    w = self._index % len(self._procs)
    while not self._buffers[w]:
      self._buffers[w].extend(self._get(w))
    self._index += 1
    return self._buffers[w].popleft()

  def _get(self, w: int) -> list:
    while True:
      try:
        item = self._queues[w].get(timeout=1.0)
      except queue.Empty:
        if not self._procs[w].is_alive():
          raise RuntimeError(f"feed worker {w} exited (code {self._procs[w].exitcode})") from None
        continue
      if isinstance(item, _Failure):
        raise RuntimeError(f"feed worker {w} failed:\n{item.traceback}")
      return item

  def close(self) -> None:
    self._stop.set()
    for q in self._queues:  # unblocks workers waiting to put
      try:
        while True:
          q.get_nowait()
      except (queue.Empty, OSError, ValueError):
        pass
    deadline = time.monotonic() + 10
    for p in self._procs:
      p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in self._procs:
      if p.is_alive():
        p.terminate()
        p.join()

  def __enter__(self) -> "ParallelExamples":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def rows_for(length: int, batch_tokens: int) -> int:
  """Rows of a ``batch_tokens`` batch at padded ``length`` (at least one)."""
  return max(1, batch_tokens // length)


def plan_window(lengths: Sequence[int], buckets: Sequence[int], batch_tokens: int
                ) -> list[list[int]]:
  """Index lists of one window's batches, shortest examples first: each batch takes examples
  while they fit ``batch_tokens`` padded to its longest one's bucket, so similar lengths share
  a batch and few padding tokens are computed."""
  order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  plan: list[list[int]] = []
  for i in order:
    rows = rows_for(batching.bucket_length(lengths[i], buckets), batch_tokens)
    if plan and len(plan[-1]) < rows:  # sorted: example i is the batch's longest
      plan[-1].append(i)
    else:
      plan.append([i])
  return plan


class FeedState(NamedTuple):
  """Where a feed resumes: the stream position of a window and how many of its batches are done."""
  position: int
  skip: int = 0


@dataclasses.dataclass(frozen=True)
class FeedBatch:
  examples: list
  length: int  # padded sequence length (a bucket)
  rows: int  # padded batch size
  state: FeedState  # resume here to continue after this batch

  def padded(self) -> batching.Batch:
    return batching.pad_examples(self.examples, self.length, self.rows)


def batches(examples: Iterator[Optional[Example]], state: FeedState, *, batch_size: int,
            buckets: Sequence[int], batch_tokens: int = 0, window: int = 0, seed: int = 0
            ) -> Iterator[FeedBatch]:
  """Training batches from ``examples``, an iterator at stream position ``state.position``.

  ``batch_tokens == 0``: ``batch_size`` usable examples per batch in stream order. Otherwise
  ``window`` usable examples are planned together (``plan_window``) and their batches come in
  an order shuffled by (seed, window start).
  """
  if batch_tokens and window < 1:
    raise ValueError(f"length-sorted batches need window >= 1, got {window}")
  position, skip = state
  identity = lambda e: e
  while True:
    start = position
    exs, position = task_stream.take_examples(examples, position,
                                              window if batch_tokens else batch_size, identity)
    lengths = [batching.input_length(e) for e in exs]
    if batch_tokens:
      plan = plan_window(lengths, buckets, batch_tokens)
      plan = [plan[k] for k in np.random.default_rng([seed, start]).permutation(len(plan))]
    else:
      plan = [list(range(len(exs)))]
    for j in range(skip, len(plan)):
      length = batching.bucket_length(max(lengths[i] for i in plan[j]), buckets)
      rows = rows_for(length, batch_tokens) if batch_tokens else batch_size
      after = FeedState(position) if j + 1 == len(plan) else FeedState(start, j + 1)
      yield FeedBatch([exs[i] for i in plan[j]], length, rows, after)
    skip = 0


def padding_efficiency(batch_list: Sequence[FeedBatch]) -> float:
  """Real input tokens / padded tokens over ``batch_list`` (1.0: no padding computed)."""
  real = sum(batching.input_length(e) for b in batch_list for e in b.examples)
  return real / max(1, sum(b.length * b.rows for b in batch_list))

import itertools
import json

import numpy as np
import pytest

from ttt_jax.arc import augment, io, stream
from ttt_jax.arc.task import Pair, Task, check_grid


def _standin_tasks(n=5):
  rng = np.random.default_rng(0)
  tasks = []
  for i in range(n):
    grids = [rng.integers(0, 10, size=(3, 4)).astype(np.int8) for _ in range(4)]
    tasks.append(Task(f"standin{i}", (Pair(grids[0], grids[1]), Pair(grids[2], grids[3])),
                      (Pair(grids[1], grids[0]),)))
  return tasks


def _flip_augment(task, rng):
  """Stand-in augmentation: flips every grid when a coin says so, else gives up."""
  if rng.random() < 0.3:
    return None
  f = lambda g: np.ascontiguousarray(g[::-1])
  return Task(task.task_id + "/flip", tuple(Pair(f(p.input), f(p.output)) for p in task.train),
              tuple(Pair(f(p.input), f(p.output)) for p in task.test))


def _stream(**kw):
  kw.setdefault("task_sets", {"toy": _standin_tasks()})
  kw.setdefault("augment", _flip_augment)
  kw.setdefault("sources", [("generators", 1.0), ("toy", 1.0)])
  return stream.TaskStream(**kw)


def _key(task):
  return (task.task_id,) + tuple(g.tobytes() for p in task.train + task.test
                                 for g in (p.input, p.output))


def test_same_seed_same_sequence_and_different_seed_differs():
  a = [_key(t) for t in itertools.islice(_stream(seed=3), 12)]
  b = [_key(t) for t in itertools.islice(_stream(seed=3), 12)]
  c = [_key(t) for t in itertools.islice(_stream(seed=4), 12)]
  assert a == b and a != c


def test_mixes_both_sources_with_weights():
  ids = [t.task_id for t in itertools.islice(_stream(seed=0, sources=[("generators", 3.0),
                                                                      ("toy", 1.0)]), 80)]
  gen = sum(i.startswith("gen/") for i in ids)
  assert 40 <= gen <= 75 and all(i.startswith(("gen/", "standin")) for i in ids)
  assert all(i.endswith("/flip") for i in ids if i.startswith("standin"))
  only_toy = list(itertools.islice(_stream(seed=0, sources=[("generators", 0.0), ("toy", 1.0)]), 5))
  assert all(t.task_id.startswith("standin") for t in only_toy)


def test_shards_partition_the_global_sequence():
  whole = [_key(t) for t in itertools.islice(_stream(seed=1), 12)]
  shards = [[_key(t) for t in itertools.islice(_stream(seed=1, shard_index=k, num_shards=3), 4)]
            for k in range(3)]
  assert [shards[i % 3][i // 3] for i in range(12)] == whole
  assert stream.shard_of(1, 2, worker_index=2, num_workers=4) == (6, 8)
  with pytest.raises(ValueError, match="out of range"):
    stream.shard_of(2, 2)


def test_resume_from_state_gives_identical_continuation():
  s = _stream(seed=5, shard_index=1, num_shards=2)
  for _ in range(7):
    next(s)
  state = json.loads(json.dumps(s.state()))
  assert state["position"] == 7
  rest = [_key(next(s)) for _ in range(5)]
  resumed = stream.TaskStream.from_state(state, task_sets={"toy": _standin_tasks()},
                                         augment=_flip_augment)
  assert [_key(next(resumed)) for _ in range(5)] == rest
  assert [_key(t) for t in itertools.islice(_stream(seed=5, shard_index=1, num_shards=2,
                                                    start=7), 5)] == rest


def test_difficulty_and_family_restrictions():
  s = _stream(seed=2, sources=[("generators", 1.0)], families=["upscale", "tile_grid"],
              difficulty=(0.0, 0.0))
  for t in itertools.islice(s, 10):
    assert t.task_id.split("/")[1] in ("upscale", "tile_grid")
  with pytest.raises(ValueError, match="unknown or no generator families"):
    _stream(families=["no_such_family"])
  with pytest.raises(ValueError, match="positive sum"):
    _stream(sources=[("generators", 0.0)])
  with pytest.raises(ValueError, match="shard_index"):
    _stream(shard_index=2, num_shards=2)


def test_real_arc_training_tasks_under_paper_augmentations():
  train, errors = io.load_tasks("arc1-train")
  assert not errors
  s = stream.task_stream([("arc1-train", 1.0)], seed=0, task_sets={"arc1-train": train[:20]})
  originals = {t.task_id for t in train[:20]}
  for t in itertools.islice(s, 20):
    assert t.task_id.split("/")[0] in originals and t.has_test_outputs
    for p in t.train + t.test:
      check_grid(p.input), check_grid(p.output)
  # The default augmentation is the lead's paper augmentation.
  assert s._augment is augment.augment_task_randomly  # pylint: disable=protected-access

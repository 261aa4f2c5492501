import numpy as np
import pytest

from ttt_jax.arc import augment, io
from ttt_jax.arc.task import make_task


@pytest.fixture(scope="module")
def arc1_grids():
  grids = []
  for name in ("arc1-train", "arc1-eval"):
    tasks, errors = io.load_tasks(name)
    assert not errors and len(tasks) == 400
    for t in tasks:
      for p in t.train + t.test:
        grids.append(p.input)
        if p.output is not None:
          grids.append(p.output)
  return grids


def _all_transforms():
  rng = np.random.default_rng(0)
  ts = list(augment.D4) + augment.ttt_augmentations(rng)
  ts.append(augment.colour_permutation([0, 3, 1, 2, 9, 8, 7, 6, 5, 4]))
  ts.append(augment.ROT90.then(augment.translate(2, 3)).then(augment.UPSCALE_2X))
  return ts


def test_paper_list_has_23_distinct_augmenters():
  augs = augment.ttt_augmentations(np.random.default_rng(1))
  assert len(augs) == 23
  assert len({t.steps for t in augs}) == 23
  assert not any(t.is_identity for t in augs)


@pytest.mark.parametrize("t", _all_transforms(), ids=lambda t: t.name)
def test_inverse_on_every_arc1_grid(arc1_grids, t):
  inv = augment.inverse(t)
  for g in arc1_grids:
    back = inv(t(g))
    assert back.shape == g.shape and np.array_equal(back, g), t.name


def test_bijective_transforms_are_two_sided_inverses():
  g = np.arange(12, dtype=np.int8).reshape(3, 4) % 10
  for t in augment.INFERENCE_TRANSFORMS + (augment.translate(1, 2),):
    assert t.is_invertible
    assert np.array_equal(t(augment.inverse(t)(g)), g)
  assert not augment.UPSCALE_2X.is_invertible


def test_ops_do_what_their_names_say():
  g = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int8)
  assert np.array_equal(augment.ROT90(g), np.rot90(g))
  assert np.array_equal(augment.TRANSPOSE(g), g.T)
  assert augment.UPSCALE_2X(g).shape == (4, 6)
  assert augment.UPSCALE_H(g).shape == (4, 3)
  tile = [t for t in augment.ttt_augmentations() if t.name == "tile_both"][0]
  assert np.array_equal(tile(g), np.tile(g, (2, 2)))
  refl = [t for t in augment.ttt_augmentations() if t.name == "reflect_cols_before"][0]
  assert np.array_equal(refl(g), np.concatenate([g[:, ::-1], g], axis=1))


def test_colour_permutation_fixes_zero_and_prefers_unused_colours():
  task = make_task("t", [([[0, 1, 2]], [[2, 1, 0]])], [([[1, 0, 0]], None)])
  for seed in range(20):
    t = augment.random_colour_permutation(task, np.random.default_rng(seed))
    perm = t.steps[0][1]
    assert perm[0] == 0 and sorted(perm) == list(range(10))
    assert perm[1] not in (1, 2) and perm[2] not in (1, 2)


def test_augment_task_drops_oversized_and_keeps_shapes_consistent():
  big = np.zeros((20, 20), np.int8)
  task = make_task("big", [(big, big)], [(big, big)])
  assert augment.augment_task(task, augment.UPSCALE_2X) is None
  assert augment.augment_task(task, augment.ROT90) is not None


def test_augment_task_randomly_is_deterministic_and_varied():
  tasks, _ = io.load_tasks("arc1-train:20")
  a = [augment.augment_task_randomly(t, np.random.default_rng(7)) for t in tasks]
  b = [augment.augment_task_randomly(t, np.random.default_rng(7)) for t in tasks]
  names = set()
  for x, y in zip(a, b):
    assert (x is None) == (y is None)
    if x is not None:
      names.add(x.task_id)
      assert x.task_id == y.task_id
      for p, q in zip(x.train, y.train):
        assert np.array_equal(p.input, q.input) and np.array_equal(p.output, q.output)
  assert len(names) > 10

import numpy as np
import pytest

from ttt_jax.arc import augment, io
from ttt_jax.arc.task import make_task
from ttt_jax.data import tokens
from ttt_jax.infer import views


def _task(n, side=3):
  rng = np.random.default_rng(n)
  pairs = [(rng.integers(0, 10, (side, side + 1)), rng.integers(0, 10, (side + 1, side)))
           for _ in range(n)]
  return make_task("v", pairs, [(rng.integers(0, 10, (side, side + 2)), None)])


def test_view_count_and_contents():
  t = _task(4)
  vs = views.make_views(t, 0)
  assert len(vs) == 4 * 7 * 2  # leave-one-out subsets x transforms x orders
  assert len({(v.transform.name, v.demo_order) for v in vs}) == len(vs)
  for v in vs:
    pairs, query = tokens.decode_episode(v.prompt_T)
    assert len(pairs) == 3 and len(set(v.demo_order)) == 3
    assert np.array_equal(query, v.transform(t.test[0].input))
    for p, i in zip(pairs, v.demo_order):
      assert np.array_equal(p.output, v.transform(t.train[i].output))


def test_answers_map_back_to_the_original_frame():
  tasks, _ = io.load_tasks("dev80:10")
  for t in tasks:
    truth = t.test[0].output
    for v in views.make_views(t, 0):
      # A model that answers perfectly in the view's frame votes for the truth.
      assert np.array_equal(v.to_original(v.transform(truth)), truth)


def test_more_demonstrations_left_out_when_nothing_fits():
  t = _task(3, side=6)
  full = views.make_views(t, 0)
  assert all(len(v.demo_order) == 2 for v in full)
  shortest = min(len(v.prompt_T) for v in full)
  budget = views.answer_budget(t)
  fallback = views.make_views(t, 0, max_tokens=shortest - 1 + budget)
  assert fallback and all(len(v.demo_order) == 1 for v in fallback)
  assert all(len(v.prompt_T) + budget <= shortest - 1 + budget for v in fallback)
  assert views.make_views(t, 0, max_tokens=10) == []


def test_views_are_deterministic():
  t = _task(5)
  a, b = views.make_views(t, 0, seed=1), views.make_views(t, 0, seed=1)
  assert [v.demo_order for v in a] == [v.demo_order for v in b]


def test_single_demo_task_uses_it():
  t = _task(1)
  vs = views.make_views(t, 0)
  assert len(vs) == 7 and all(v.demo_order == (0,) for v in vs)


REFERENCE_OTHERS = ["transpose", "flip_ud", "flip_lr", "rot90", "rot180"]


def test_reference_views_of_a_three_demonstration_task():
  t = _task(3)
  subsets = [(0, 1), (0, 2), (1, 2)]
  vs = views.make_views(t, 0, scheme="reference", n_orders=1)
  assert [v.transform.name for v in vs] == ["identity"] * 3 + REFERENCE_OTHERS
  assert [v.demo_order for v in vs[:3]] == subsets
  assert all(v.demo_order in subsets for v in vs[3:])  # each built from an identity view

  # Three orders per subset: its own, then 2 random draws with repeats dropped. A subset of two
  # demonstrations has only two orders, so it gets one or two, and over seeds both happen.
  per_subset_counts = set()
  for seed in range(20):
    vs = views.make_views(t, 0, scheme="reference", n_orders=3, seed=seed)
    names = [v.transform.name for v in vs]
    n_id = names.count("identity")
    assert names == ["identity"] * n_id + REFERENCE_OTHERS
    identity_orders = [v.demo_order for v in vs[:n_id]]
    for s in subsets:
      orders = [o for o in identity_orders if sorted(o) == list(s)]
      assert orders[0] == s and set(orders) <= {s, s[::-1]} and len(set(orders)) == len(orders)
      per_subset_counts.add(len(orders))
    assert all(v.demo_order in identity_orders for v in vs[n_id:])
    # Ours keeps drawing until it has n_orders distinct orders (here: both, for every subset).
    ours = views.make_views(t, 0, n_orders=3, seed=seed, transforms=[augment.IDENTITY])
    assert len(ours) == 6
  assert per_subset_counts == {1, 2}


def test_reference_views_skip_repeated_prompts():
  # Every grid is symmetric under flip_lr, so flip_lr(view) == view, rot180 == flip_ud and
  # rot90 == transpose (the transpose of an lr-symmetric grid is ud-symmetric).
  sym = lambda g: np.concatenate([g, g[:, ::-1]], axis=1)
  rng = np.random.default_rng(0)
  grids = [sym(rng.integers(0, 10, (3, 2))) for _ in range(3)]
  t = make_task("sym", [(grids[0], grids[1])], [(grids[2], None)])
  vs = views.make_views(t, 0, scheme="reference", n_orders=1)
  assert [v.transform.name for v in vs] == ["identity", "transpose", "flip_ud"]
  # Ours keeps every view, repeats included.
  assert len(views.make_views(t, 0, n_orders=1)) == 7
  t3 = make_task("sym3", [(sym(rng.integers(0, 10, (2, 2))), sym(rng.integers(0, 10, (2, 2))))
                          for _ in range(3)], [(grids[2], None)])
  vs = views.make_views(t3, 0, scheme="reference", n_orders=3)
  assert "flip_lr" not in {v.transform.name for v in vs}
  assert len({v.prompt_T.tobytes() for v in vs}) == len(vs)


def test_view_scheme_is_checked():
  with pytest.raises(ValueError, match="view scheme"):
    views.make_views(_task(3), 0, scheme="nope")
  with pytest.raises(ValueError, match="identity"):
    views.make_views(_task(3), 0, scheme="reference", transforms=[augment.ROT90])

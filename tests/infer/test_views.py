import numpy as np

from ttt_jax.arc import io
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

"""Answer budgets: views reserve room for the answers they may need and decoding gives it."""

import numpy as np
import pytest

from experiments.configs import pipeline as pipeline_config
from ttt_jax import pipeline
from ttt_jax.arc import augment, io
from ttt_jax.arc.task import make_task
from ttt_jax.data import tokens
from ttt_jax.infer import predict, views

PAPER_CONTEXT = 8192


@pytest.mark.parametrize("scheme", ["ours", "reference"])
def test_every_arc1_eval_answer_fits_the_budget_the_pipeline_decodes_with(scheme):
  """Each true answer, under every inference transform, plus EOS fits the new tokens the
  pipeline gives its views (the old demonstration-sized budget cut 171 of 419 answers)."""
  tasks, _ = io.load_tasks("arc1-eval")
  infer_cfg = pipeline_config.get_config().infer
  infer_cfg.views = scheme
  n_inputs = n_viewed = 0
  for t in tasks:
    for j, pair in enumerate(t.test):
      n_inputs += 1
      need = {tr.name: tokens.grid_num_tokens(tr(pair.output)) + 1
              for tr in augment.INFERENCE_TRANSFORMS}
      assert views.answer_budget(t, infer_cfg.answer_budget) >= max(need.values()), t.task_id
      vs = pipeline.views_for_test_input(t, j, infer_cfg, PAPER_CONTEXT)
      n_viewed += bool(vs)
      if vs:
        max_new = predict.decode_budget(vs, PAPER_CONTEXT)
        assert all(max_new >= need[v.transform.name] for v in vs), t.task_id
        assert all(len(v.prompt_T) + max_new <= PAPER_CONTEXT for v in vs)
        assert {v.transform.name for v in vs} <= set(need)
  assert n_inputs == 419 and n_viewed > 400


def _task(out_shape, in_shape=(2, 2)):
  rng = np.random.default_rng(0)
  pairs = [(rng.integers(0, 10, in_shape), rng.integers(0, 10, out_shape)) for _ in range(2)]
  return make_task("b", pairs, [(rng.integers(0, 10, in_shape), None)])


def test_answer_budget_policies():
  t = _task((2, 6))  # 2 x 7 = 14 tokens as is, 6 x 3 = 18 transposed
  assert views.answer_budget(t) == views.FULL_ANSWER_TOKENS == 30 * 31 + 1
  assert views.FULL_ANSWER_TOKENS == tokens.grid_num_tokens(np.zeros((30, 30), int)) + 1
  assert views.answer_budget(t, "demos") == 18 + 1  # the transposed demonstration output
  assert views.answer_budget(t, 600) == views.answer_budget(t, "600") == 600
  for bad in ("some", 1, True, 2.5):
    with pytest.raises(ValueError, match="answer budget"):
      views.answer_budget(t, bad)


def test_views_reserve_the_budget_they_record():
  t = _task((2, 6))
  shortest = min(len(v.prompt_T) for v in views.make_views(t, 0))
  for budget in ("full", "demos", 100):
    reserved = views.answer_budget(t, budget)
    vs = views.make_views(t, 0, max_tokens=shortest + reserved, budget=budget)
    assert vs and all(v.answer_tokens == reserved for v in vs)
    assert all(len(v.prompt_T) + reserved <= shortest + reserved for v in vs)
    assert views.make_views(t, 0, max_tokens=shortest + reserved - 1, budget=budget) == []


def test_decode_budget_covers_every_view_and_splits_mixed_budgets():
  # Long prompts with small answers, then short prompts with large answers ("demos" budgets).
  long_small, short_big = _task((1, 1), in_shape=(10, 10)), _task((6, 6), in_shape=(1, 1))
  vs_a = views.make_views(long_small, 0, budget="demos", n_orders=1)
  vs_b = views.make_views(short_big, 0, budget="demos", n_orders=1)
  need_a, need_b = (views.answer_budget(t, "demos") for t in (long_small, short_big))
  longest_a, longest_b = (max(len(v.prompt_T) for v in vs) for vs in (vs_a, vs_b))
  roomy = longest_a + need_b
  max_new = predict.decode_budget(vs_a + vs_b, roomy)
  assert need_b > need_a and need_b <= max_new <= roomy - longest_a
  assert predict.decode_budget(vs_a + vs_b, roomy + 1000) == predict.bucket(need_b, 32)
  assert predict.split_for_context([vs_a, vs_b], roomy) == [[0, 1]]
  # Each input fits on its own, but the longest prompt and the largest budget do not together.
  tight = max(longest_a + need_a, longest_b + need_b)
  assert tight < longest_a + need_b
  assert predict.split_for_context([vs_a, [], vs_b, vs_b], tight) == [[0, 1], [2, 3]]
  for call in (vs_a, vs_b + vs_b):
    assert predict.decode_budget(call, tight) >= max(v.answer_tokens for v in call)
  with pytest.raises(ValueError, match="split"):
    predict.decode_budget(vs_a + vs_b, tight)
  assert predict.decode_budget([], 100) == 0

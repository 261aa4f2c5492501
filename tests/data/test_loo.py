import numpy as np
import pytest

from ttt_jax.arc import io
from ttt_jax.arc.task import make_task
from ttt_jax.data import loo, tokens


def _task(n, side=3, tid="t"):
  rng = np.random.default_rng(n)
  pairs = [(rng.integers(0, 10, (side, side)), rng.integers(0, 10, (side, side))) for _ in range(n)]
  return make_task(tid, pairs, [(rng.integers(0, 10, (side, side)), None)])


def test_leave_one_and_two_out_counts():
  assert len(loo.leave_one_out(4)) == 4 and loo.leave_one_out(1) == []
  assert all(q not in c and len(c) == 3 for q, c in loo.leave_one_out(4))
  assert len(loo.leave_two_out(4)) == 12 and loo.leave_two_out(2) == []
  assert all(q not in c and len(c) == 2 for q, c in loo.leave_two_out(4))


def test_counts_without_augmentation():
  t = _task(4)
  ex = loo.build_ttt_dataset(t, augment=False, leave_two_out_topup=False)
  assert len(ex) == 4 and {e.kind for e in ex} == {"loo"}
  ex = loo.build_ttt_dataset(t, augment=False)
  assert len(ex) == 4 + 12
  # Equal-sized grids: a leave-two-out episode is one demonstration shorter.
  assert min(len(e) for e in ex if e.kind == "loo") > max(len(e) for e in ex if e.kind == "l2o")


def test_cap_and_determinism():
  t = _task(5)
  a = loo.build_ttt_dataset(t, n_max=250, seed=3)
  b = loo.build_ttt_dataset(t, n_max=250, seed=3)
  c = loo.build_ttt_dataset(t, n_max=250, seed=4)
  assert len(a) == 250  # 24 views x 5 LOO = 120, topped up by leave-two-out
  assert sum(e.kind == "loo" for e in a) == 24 * 5
  assert all(np.array_equal(x.tokens_T, y.tokens_T) for x, y in zip(a, b))
  assert not all(np.array_equal(x.tokens_T, y.tokens_T) for x, y in zip(a, c))
  assert len(loo.build_ttt_dataset(t, n_max=7)) == 7


def test_episodes_are_valid_and_query_is_a_demonstration():
  t = _task(3)
  for e in loo.build_ttt_dataset(t, seed=1):
    pairs, query = tokens.decode_episode(e.tokens_T)
    assert query is None and len(pairs) == (3 if e.kind == "loo" else 2)
    if e.transform == "identity":
      demo_outputs = [p.output.tobytes() for p in t.train]
      assert all(p.output.tobytes() in demo_outputs for p in pairs)


def test_token_budget_and_fallback_to_leave_two_out():
  t = _task(3, side=10)
  lengths = sorted({len(e) for e in loo.build_ttt_dataset(t, augment=False)})
  l2o_len, loo_len = lengths[0], lengths[-1]
  ex = loo.build_ttt_dataset(t, augment=False, max_tokens=l2o_len)
  assert ex and all(e.kind == "l2o" and len(e) <= l2o_len for e in ex)
  assert loo.build_ttt_dataset(t, max_tokens=10) == []
  assert loo.build_ttt_dataset(_task(1)) == []


def test_oversized_augmentations_are_dropped():
  t = _task(3, side=20)
  names = {e.transform.split("+")[0] for e in loo.build_ttt_dataset(t, n_max=1000, max_tokens=10**6)}
  assert "rot90" in names and "upscale_2x" not in names and "tile_both" not in names


def test_loss_masks():
  t = _task(3)
  demos, q = list(t.train[:2]), t.train[2]
  toks, idx = tokens.encode_episode(demos, q.input, q.output)
  m_query = loo.episode_example(demos, q, "query").loss_mask_T
  m_outs = loo.episode_example(demos, q, "all_outputs").loss_mask_T
  m_all = loo.episode_example(demos, q, "all").loss_mask_T
  assert m_query.sum() == tokens.grid_num_tokens(q.output) + 1
  assert np.array_equal(tokens.decode_grid(toks[m_query]), q.output)
  assert m_outs.sum() == m_query.sum() + tokens.grid_num_tokens(demos[1].output) + 1
  assert not m_outs[idx == 0].any() and (m_query <= m_outs).all() and (m_outs <= m_all).all()
  assert m_all.sum() == len(toks) - 1
  with pytest.raises(ValueError, match="loss mode"):
    loo.episode_example(demos, q, "bogus")


def test_all_arc1_eval_tasks_build():
  tasks, _ = io.load_tasks("arc1-eval")
  total = 0
  for t in tasks:
    ex = loo.build_ttt_dataset(t)
    assert len(ex) <= 250 and all(len(e) <= 8192 for e in ex)
    total += len(ex)
  assert total > 400 * 100

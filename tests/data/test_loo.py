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


# Reference mode (the paper's code, ttt/preprocess.py): hand-made cases with exact counts.
_A = ([[1, 2, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 1], [0, 0, 2]])
_B = ([[0, 0, 0], [2, 0, 0], [1, 0, 0]], [[2, 2, 0], [0, 0, 0], [0, 0, 1]])


def _two_demo_task():
  """Two 3x3 demonstrations using colours {0, 1, 2}, distinct under every augmentation."""
  return make_task("two", [_A, _B], [(_A[0], None)])


def _num_demos(e):
  return len(tokens.decode_episode(e.tokens_T)[0]) - 1  # the query is the last pair


def test_leave_k_out_allows_an_empty_context():
  assert loo.leave_k_out(1, 1) == [(0, ())] and loo.leave_k_out(2, 2) == [(0, ()), (1, ())]
  assert loo.leave_k_out(1, 2) == [] and loo.leave_k_out(3, 2) == loo.leave_two_out(3)
  assert loo.leave_k_out(4, 1) == loo.leave_one_out(4)


def test_reference_two_demo_task_exact_counts():
  t = _two_demo_task()
  # 2 leave-one-out (1 demo) + 2 leave-two-out (0 demos) episodes, x 24 views (identity and
  # the 23 augmentations), x 2 (as is, and colour-permuted); 192 < n_max so all are kept.
  ex = loo.build_ttt_dataset(t, mode="reference")
  assert len(ex) == 192
  assert sum(e.kind == "loo" for e in ex) == sum(e.kind == "l2o" for e in ex) == 96
  assert {_num_demos(e) for e in ex if e.kind == "loo"} == {1}
  assert {_num_demos(e) for e in ex if e.kind == "l2o"} == {0}
  # No augmentation: no colour permutation, and shuffling one demonstration changes nothing.
  ex = loo.build_ttt_dataset(t, mode="reference", augment=False)
  assert len(ex) == 4 and {e.transform for e in ex} == {"identity"}
  assert sorted(_num_demos(e) for e in ex) == [0, 0, 1, 1]
  # Ours has no zero-demonstration episodes and one colour permutation per view.
  assert len(loo.build_ttt_dataset(t, augment=False)) == 2


def test_reference_keeps_permuted_and_unpermuted_copies():
  ex = loo.build_ttt_dataset(_two_demo_task(), mode="reference", seed=1)
  permuted = [e for e in ex if "colours_" in e.transform]
  plain = {e.transform for e in ex if "colours_" not in e.transform}
  assert len(permuted) == 96 and "identity" in plain and len(plain) == 24
  # Every plain view also appears colour-permuted (the identity view included), and the
  # permuted copy of an identity episode uses colours the task does not (0 stays 0).
  assert {e.transform.rsplit("+colours_", 1)[0] for e in permuted
          if "+" in e.transform} | {"identity"} == plain
  for e in permuted:
    if e.transform.startswith("colours_"):
      perm = [int(c) for c in e.transform[len("colours_"):]]
      assert perm[0] == 0 and perm[1] not in (1, 2) and perm[2] not in (1, 2)


def test_reference_zero_demo_episodes_train_on_the_query():
  ex = [e for e in loo.build_ttt_dataset(_two_demo_task(), mode="reference") if e.kind == "l2o"]
  for e in ex:
    (query,), _ = tokens.decode_episode(e.tokens_T)
    assert np.array_equal(tokens.decode_grid(e.tokens_T[e.loss_mask_T]), query.output)
  one = make_task("single", [_A], [(_A[0], None)])  # (its translation is not a multiple of 3)
  assert loo.build_ttt_dataset(one) == []  # ours needs two demonstrations
  ex = loo.build_ttt_dataset(one, mode="reference")
  assert len(ex) == 2 * 24 and {_num_demos(e) for e in ex} == {0} and {e.kind for e in ex} == {"loo"}


def test_reference_removes_duplicates():
  # Uniform grids look the same under rotations, flips, transpose and translation, and a 2x
  # upscale equals a 2x tile: only 4 distinct shapes (3x3, 6x3, 3x6, 6x6) remain per episode.
  ones, twos = np.ones((3, 3), int), np.full((3, 3), 2)
  t = make_task("flat", [(ones, twos), (twos, ones)], [(ones, None)])
  ex = loo.build_ttt_dataset(t, mode="reference", n_max=1000)
  assert len({e.tokens_T.tobytes() for e in ex}) == len(ex)
  plain = [e for e in ex if "colours_" not in e.transform]
  assert sum(e.kind == "loo" for e in plain) == sum(e.kind == "l2o" for e in plain) == 2 * 4
  assert len(ex) <= 2 * len(plain)


def test_reference_cap_top_up_and_uncapped_fallback():
  t = _task(4)  # 4 x 24 x 2 = 192 leave-one-out episodes, topped up with leave-two-out ones
  ex = loo.build_ttt_dataset(t, mode="reference")
  assert len(ex) == 250 and sum(e.kind == "loo" for e in ex) == 192
  ex = loo.build_ttt_dataset(_task(6), mode="reference")  # 288 leave-one-out: a random 250
  assert len(ex) == 250 and {e.kind for e in ex} == {"loo"}
  # No leave-one-out episode (2 demos: 82 tokens) fits but every leave-two-out one (1 demo:
  # 55 tokens) does: all of them are used, whatever n_max; the limit is strict (< max_tokens).
  t = _task(3)
  ex = loo.build_ttt_dataset(t, mode="reference", augment=False, max_tokens=60, n_max=3)
  assert len(ex) == 6 and {len(e) for e in ex} == {55} and {e.kind for e in ex} == {"l2o"}
  assert loo.build_ttt_dataset(t, mode="reference", augment=False, max_tokens=55) == []
  with pytest.raises(ValueError, match="data mode"):
    loo.build_ttt_dataset(t, mode="bogus")


def test_reference_mode_on_real_tasks():
  tasks, _ = io.load_tasks("arc1-eval:25")
  for t in tasks:
    ex = loo.build_ttt_dataset(t, mode="reference", seed=3)
    assert ex == [] or all(len(e) < 8192 and e.loss_mask_T.any() for e in ex)
    assert len({e.tokens_T.tobytes() for e in ex}) == len(ex)
    assert len(ex) <= 250 or {e.kind for e in ex} == {"l2o"}
    again = loo.build_ttt_dataset(t, mode="reference", seed=3)
    assert all(np.array_equal(a.tokens_T, b.tokens_T) for a, b in zip(ex, again))

import jax
import numpy as np

from ttt_jax.arc.task import make_task
from ttt_jax.data import tokens
from ttt_jax.infer import predict, views
from ttt_jax.model import config, lora, transformer

CFG = config.get_config("tiny", dtype="float32")
LCFG = lora.LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "down"))


def _task(seed, side):
  rng = np.random.default_rng(seed)
  pairs = [(rng.integers(0, 10, (side, side)), rng.integers(0, 10, (side, side))) for _ in range(3)]
  return make_task(f"t{seed}", pairs, [(rng.integers(0, 10, (side, side)), None)])


def _adapter(seed):
  a = lora.init_lora(CFG, LCFG, jax.random.key(seed))
  # Non-zero B so each adapter really changes the model.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.3 * jax.random.normal(jax.random.key(seed + 7), x.shape)
      if "b" in jax.tree_util.keystr(path).lower() else x, a)


def test_left_pad_right_aligns():
  t, m = predict.left_pad([np.array([1, 2, 3]), np.array([4])], 5)
  assert t.tolist() == [[15, 15, 1, 2, 3], [15, 15, 15, 15, 4]]
  assert m.sum(1).tolist() == [3, 1]
  assert predict.bucket(129, 128) == 256 and predict.bucket(1, 128) == 128


def test_vmapped_tasks_equal_one_by_one_and_map_back():
  params = transformer.init_params(CFG, jax.random.key(0))
  tasks = [_task(1, 2), _task(2, 3)]
  vs = [views.make_views(t, 0, n_orders=1)[:5] for t in tasks]
  ads = [_adapter(10), _adapter(20)]
  together = predict.decode_views(params, ads, vs, cfg=CFG, lora_cfg=LCFG, max_new_tokens=12)
  for k in range(2):
    alone = predict.decode_views(params, [ads[k]], [vs[k]], cfg=CFG, lora_cfg=LCFG,
                                 max_new_tokens=12)[0]
    assert len(together[k]) == len(vs[k])
    for a, b in zip(together[k], alone):
      assert a.view is b.view and np.array_equal(a.tokens_N, b.tokens_N)
      assert (a.grid is None and b.grid is None) or np.array_equal(a.grid, b.grid)
  # The adapters matter: the bare model decodes differently somewhere.
  bare = predict.decode_views(params, [None, None], vs, cfg=CFG, lora_cfg=None, max_new_tokens=12)
  assert [len(b) for b in bare] == [len(v) for v in vs]
  assert any(not np.array_equal(a.tokens_N, b.tokens_N)
             for k in range(2) for a, b in zip(together[k], bare[k]))


def test_views_decoded_in_chunks_equal_one_call():
  params = transformer.init_params(CFG, jax.random.key(0))
  tasks = [_task(3, 2), _task(4, 3)]
  vs = [views.make_views(tasks[0], 0, n_orders=2)[:20], views.make_views(tasks[1], 0, n_orders=1)[:6]]
  ads = [_adapter(30), _adapter(40)]
  kw = dict(cfg=CFG, lora_cfg=LCFG, max_new_tokens=10)
  whole = predict.decode_views(params, ads, vs, **kw)
  chunked = predict.decode_views(params, ads, vs, max_rows=16, **kw)  # 8 views per call
  short_loops = predict.decode_views(params, ads, vs, decode_chunk=3, **kw)  # 3 steps per cache
  for got in (chunked, short_loops):
    for k in range(2):
      assert [a.view for a in got[k]] == [a.view for a in whole[k]]
      for a, b in zip(got[k], whole[k]):
        np.testing.assert_array_equal(a.tokens_N, b.tokens_N)


def test_answers_parse_and_map_back_through_the_inverse_view():
  t = _task(3, 2)
  v = [x for x in views.make_views(t, 0) if x.transform.name == "rot90"][0]
  answer = np.array([[1, 2, 3], [4, 5, 6]], np.int8)
  grid = tokens.decode_grid(np.r_[tokens.encode_grid(answer), tokens.EOS])
  assert np.array_equal(np.rot90(v.to_original(grid)), answer)


def test_an_answer_without_eos_is_invalid_and_counted():
  from ttt_jax import pipeline  # pylint: disable=g-import-not-at-top
  t = _task(4, 2)
  v = [x for x in views.make_views(t, 0) if x.transform.name == "identity"][0]
  answer = np.array([[1, 2], [3, 4]], np.int8)
  cut = predict.answer_from_tokens(v, tokens.encode_grid(answer))  # budget ran out on a row end
  assert cut.grid is None and cut.new_tokens == 6
  padded = np.r_[tokens.encode_grid(answer), tokens.EOS, tokens.PAD, tokens.PAD]
  done = predict.answer_from_tokens(v, padded)
  assert np.array_equal(done.grid, answer) and done.new_tokens == 7
  r = pipeline.vote_test_input([cut, done, cut], t, 0)
  assert (r.num_views, r.num_invalid) == (3, 2)
  assert r.candidates[0].count == 1 and np.array_equal(r.attempts[0], answer)


def test_task_axis_padded_to_num_tasks_gives_the_same_answers_in_one_program():
  """``num_tasks``: a short group is padded with copies of its first task (discarded), so
  groups of one and of two tasks run the same compiled program and answer as unpadded."""
  params = transformer.init_params(CFG, jax.random.key(0))
  tasks = [_task(1, 2), _task(2, 3)]
  vs = [views.make_views(t, 0, n_orders=1)[:5] for t in tasks]
  ads = [_adapter(10), _adapter(20)]
  kw = dict(cfg=CFG, lora_cfg=LCFG, max_new_tokens=12)
  before = predict._generate_many._cache_size()  # pylint: disable=protected-access
  padded = [predict.decode_views(params, ads[:n], vs[:n], num_tasks=3, **kw) for n in (1, 2)]
  assert predict._generate_many._cache_size() == before + 1  # pylint: disable=protected-access
  for n, got in zip((1, 2), padded):
    want = predict.decode_views(params, ads[:n], vs[:n], **kw)
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want):
      for a, b in zip(g, w):
        assert a.view is b.view and np.array_equal(a.tokens_N, b.tokens_N)
  try:
    predict.decode_views(params, ads, vs, num_tasks=1, **kw)
    raise AssertionError("more tasks than num_tasks must be refused")
  except ValueError as e:
    assert "padded to 1" in str(e)

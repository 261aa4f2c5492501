from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import config, transformer

CFG = config.get_config("tiny", dtype="float32")


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, jax.random.key(0))


def _fwd(params, tokens, mask, cfg=CFG, jit=True):
  f = functools.partial(transformer.forward, cfg=cfg)
  f = jax.jit(f) if jit else f
  return f(params, None, tokens, transformer.positions_from_mask(mask), mask)


def _random_tokens(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, size=shape), jnp.int32)


def test_shapes_dtypes_and_jit_matches_eager(params):
  toks = _random_tokens(0, (2, 7))
  mask = jnp.ones((2, 7), bool)
  a = _fwd(params, toks, mask, jit=True)
  b = _fwd(params, toks, mask, jit=False)
  assert a.shape == (2, 7, CFG.vocab_size) and a.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_positions_from_mask_left_padding():
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(transformer.positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_left_padded_batch_equals_each_sequence_alone(params):
  lengths = [3, 8]
  T = max(lengths)
  seqs = [_random_tokens(i + 1, (n,)) for i, n in enumerate(lengths)]
  toks = jnp.stack([jnp.pad(s, (T - len(s), 0), constant_values=CFG.vocab_size - 1) for s in seqs])
  mask = jnp.arange(T)[None, :] >= (T - jnp.array(lengths))[:, None]
  batched = _fwd(params, toks, mask)
  assert np.all(np.isfinite(batched))
  for i, s in enumerate(seqs):
    alone = _fwd(params, s[None], jnp.ones((1, len(s)), bool))
    np.testing.assert_allclose(batched[i, T - len(s):], alone[0], atol=1e-5)


def test_causality_by_gradient(params):
  """d logits[t] / d embedding(token at s) is zero for every s > t (as nanodo tests it).

  The tokens are distinct and the embeddings untied, so embedding row ``toks[s]``
  is used by position s only.
  """
  T = 6
  toks = jnp.asarray(np.random.default_rng(3).permutation(CFG.vocab_size)[:T], jnp.int32)[None]
  mask = jnp.ones((1, T), bool)
  assert not CFG.tie_embeddings

  def logits_sum_T(embed):
    p = dict(params, embed=embed)
    return transformer.forward(p, None, toks, jnp.arange(T)[None], mask, cfg=CFG)[0].sum(-1)

  jac_TxVxD = jax.jit(jax.jacrev(logits_sum_T))(params["embed"])
  for t in range(T):
    per_pos = np.abs(np.asarray(jac_TxVxD[t][toks[0]])).sum(-1)
    assert np.all(per_pos[t + 1:] == 0), (t, per_pos)
    assert np.all(per_pos[: t + 1] > 0), (t, per_pos)


def test_remat_gives_same_values_and_grads(params):
  toks = _random_tokens(4, (2, 6))
  mask = jnp.ones((2, 6), bool)

  def loss(p, cfg):
    return _fwd(p, toks, mask, cfg=cfg, jit=False).mean()

  v0, g0 = jax.jit(jax.value_and_grad(functools.partial(loss, cfg=CFG)))(params)
  v1, g1 = jax.jit(jax.value_and_grad(functools.partial(loss, cfg=CFG.replace(remat=True))))(params)
  np.testing.assert_allclose(v0, v1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_bf16_compute_close_to_fp32(params):
  toks = _random_tokens(5, (2, 9))
  mask = jnp.ones((2, 9), bool)
  ref = _fwd(params, toks, mask)
  low = _fwd(params, toks, mask, cfg=CFG.replace(dtype="bfloat16"))
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, ref, atol=0.05)
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  low2 = _fwd(p16, toks, mask, cfg=CFG.replace(dtype="bfloat16", param_dtype="bfloat16"))
  np.testing.assert_allclose(low2, ref, atol=0.05)


def test_chunked_forward_with_cache_equals_full_forward(params):
  lengths = [4, 7]
  T, S = 7, 12
  toks = _random_tokens(6, (2, T + 3))
  mask = jnp.concatenate([jnp.arange(T)[None] >= (T - jnp.array(lengths))[:, None], jnp.ones((2, 3), bool)], 1)
  pos = transformer.positions_from_mask(mask)
  full = _fwd(params, toks, mask)
  cache = transformer.init_cache(CFG, 2, S)
  step = jax.jit(functools.partial(transformer.forward_with_cache, cfg=CFG))
  out1, cache = step(params, None, toks[:, :T], pos[:, :T], mask[:, :T], cache)
  out2, cache = step(params, None, toks[:, T:T + 1], pos[:, T:T + 1], mask[:, T:T + 1], cache)
  out3, cache = step(params, None, toks[:, T + 1:], pos[:, T + 1:], mask[:, T + 1:], cache)
  assert int(cache["index"]) == T + 3
  chunked = jnp.concatenate([out1, out2, out3], axis=1)
  np.testing.assert_allclose(chunked * mask[..., None], full * mask[..., None], atol=1e-5)


@pytest.mark.parametrize("attention", [None, "blocked", "flash"])
def test_prefill_cache_equals_forward_with_cache_from_an_empty_cache(params, attention):
  """The cache-free prefill returns the cache the reference path fills, padded to cache_len,
  and the chunks that follow it give the full pass's logits."""
  cfg = CFG.replace(attention_impl=attention)
  T, S = 7, 12
  toks = _random_tokens(7, (2, T + 2))
  mask = jnp.concatenate([jnp.arange(T)[None] >= jnp.array([[3], [0]]), jnp.ones((2, 2), bool)], 1)
  pos = transformer.positions_from_mask(mask)
  ref_logits, ref = transformer.forward_with_cache(params, None, toks[:, :T], pos[:, :T], mask[:, :T],
                                                   transformer.init_cache(cfg, 2, S), cfg=cfg)
  logits, cache = jax.jit(functools.partial(transformer.prefill_cache, cfg=cfg, cache_len=S))(
      params, None, toks[:, :T], pos[:, :T], mask[:, :T])
  m = np.asarray(mask[:, :T])
  np.testing.assert_allclose(np.asarray(logits)[m], np.asarray(ref_logits)[m], atol=1e-5)
  assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, ref)
  np.testing.assert_array_equal(cache["valid"], ref["valid"])
  assert int(cache["index"]) == int(ref["index"]) == T
  for got, want in zip(cache["k"] + cache["v"], ref["k"] + ref["v"]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)  # padding slots included
  rest, _ = transformer.forward_with_cache(params, None, toks[:, T:], pos[:, T:], mask[:, T:], cache, cfg=cfg)
  np.testing.assert_allclose(rest, _fwd(params, toks, mask, cfg=cfg)[:, T:], atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "arc-cpu", "arc-small", "llama-3.2-1b", "llama-3.1-8b"])
def test_num_params_counts_what_init_params_builds(name):
  cfg = config.get_config(name)
  for c in (cfg, cfg.replace(grid_positions=not cfg.grid_positions, vocab_size=16)):
    shapes = jax.eval_shape(lambda c=c: transformer.init_params(c, jax.random.key(0)))
    assert c.num_params == transformer.count_params(shapes), c.name

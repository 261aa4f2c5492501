"""Pure-JAX flash attention against the explicit-mask XLA path: outputs and gradients on every
row (padding rows too), grouped-query heads, blocks that do not divide ``T``; and the memory it
exists for, from XLA's compiled memory analysis."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import config, flash_attention, transformer

# (starts, lengths) of each row's real run: right-padded, left-padded, full, an all-padding row.
MASKS = [((0, 0, 0), (5, 11, 1)), ((3, 0, 7), (5, 11, 4)), ((0, 0, 0), (11, 11, 11)), ((0, 2, 0), (0, 6, 11))]


def _mask(starts, lengths, T):
  t = np.arange(T)[None]
  s, n = np.array(starts)[:, None], np.array(lengths)[:, None]
  return jnp.asarray((t >= s) & (t < s + n))


def _qkv(B, T, N, K, H, dtype=jnp.float32):
  return tuple(jax.random.normal(jax.random.key(i), (B, T, n, H), dtype) for i, n in enumerate((N, K, K)))


def _reference(q, k, v, valid):
  return jax.nn.dot_product_attention(q, k, v, mask=transformer.explicit_attention_mask(valid, 0, q.shape[1]))


@pytest.mark.parametrize("starts,lengths", MASKS)
@pytest.mark.parametrize("block", [4, 16])
def test_outputs_and_gradients_equal_the_explicit_mask_path(starts, lengths, block):
  B, T, N, K, H = 3, 11, 4, 2, 8
  q, k, v = _qkv(B, T, N, K, H)
  valid = _mask(starts, lengths, T)
  w = jax.random.normal(jax.random.key(9), (B, T, N, H))  # a loss that weighs every output
  flash = functools.partial(flash_attention.causal_attention, block=block)
  np.testing.assert_allclose(flash(q, k, v, valid), _reference(q, k, v, valid), atol=1e-5)
  loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v, valid) * w)
  got = jax.grad(loss(flash), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(_reference), argnums=(0, 1, 2))(q, k, v)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, atol=1e-4)


def test_bfloat16_inputs_stay_close_to_the_float32_reference():
  q, k, v = _qkv(2, 40, 4, 4, 16)
  valid = _mask((0, 5), (40, 30), 40)
  got = flash_attention.causal_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), valid, 16)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), _reference(q, k, v, valid), atol=0.05)


def test_model_with_flash_attention_equals_the_xla_model_and_its_gradient():
  cfg = config.get_config("tiny", dtype="float32")
  params = transformer.init_params(cfg, jax.random.key(0))
  toks = jax.random.randint(jax.random.key(1), (2, 9), 0, 10)
  mask = _mask((0, 3), (9, 6), 9)
  pos = transformer.positions_from_mask(mask)

  def loss(p, c):
    return jnp.sum(transformer.forward(p, None, toks, pos, mask, cfg=c) * mask[..., None])

  ref, ref_g = jax.value_and_grad(loss)(params, cfg)
  got, got_g = jax.value_and_grad(loss)(params, cfg.replace(attention_impl="flash"))
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  for g, r in zip(jax.tree.leaves(got_g), jax.tree.leaves(ref_g)):
    np.testing.assert_allclose(g, r, atol=1e-4)


def test_backward_memory_grows_linearly_not_quadratically():
  """XLA keeps the scores for the backward pass (T**2); flash keeps out + lse (T). Compiled
  temporaries of the gradient at T and 4T (no execution)."""
  B, N, K, H = 1, 4, 4, 16

  def temp_bytes(attend, T):
    s = lambda n: jax.ShapeDtypeStruct((B, T, n, H), jnp.float32)
    f = jax.jit(jax.grad(lambda q, k, v, m: jnp.sum(attend(q, k, v, m)), argnums=(0, 1, 2)))
    return f.lower(s(N), s(K), s(K), jax.ShapeDtypeStruct((B, T), jnp.bool_)).compile().memory_analysis().temp_size_in_bytes

  flash = functools.partial(flash_attention.causal_attention, block=64)
  scores_4T = B * N * 1024 * 1024 * 4  # the float32 score tensor at 4T
  assert temp_bytes(_reference, 1024) > scores_4T  # the reference holds it
  assert temp_bytes(flash, 1024) < scores_4T / 4
  assert temp_bytes(flash, 1024) < 8 * temp_bytes(flash, 256)  # ~4x, far from 16x

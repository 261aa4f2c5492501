"""The fused attention form (is_causal + lengths, what cuDNN gets) against the explicit-mask reference.

On CPU the fused form runs on XLA (``FUSED_BACKEND = "xla"``): the same arguments cuDNN gets, so
equal outputs here mean the expression is right; cuDNN's own numerics are a GPU check.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

from ttt_jax.model import config, decode, lora, transformer

CFG = config.get_config("tiny", dtype="float32")
FUSED = CFG.replace(attention_impl="cudnn")
LCFG = lora.LoraConfig(rank=4, alpha=8.0)
PAD = 15


@pytest.fixture
def on_xla(monkeypatch):
  monkeypatch.setattr(transformer, "FUSED_BACKEND", "xla")


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, jax.random.key(0))


def _runs_mask(starts, lengths, T):
  """BxT: row b is real on [starts[b], starts[b] + lengths[b])."""
  t = np.arange(T)[None]
  s, n = np.array(starts)[:, None], np.array(lengths)[:, None]
  return jnp.asarray((t >= s) & (t < s + n))


# Right-padded (training), left-padded (prefill), full, and an all-padding row.
MASKS = [((0, 0, 0), (5, 8, 1)), ((3, 0, 7), (5, 8, 1)), ((0, 0, 0), (8, 8, 8)), ((0, 2, 0), (0, 6, 8))]


@pytest.mark.parametrize("starts,lengths", MASKS)
def test_fused_form_equals_explicit_mask_on_real_rows_and_is_zero_on_padding(starts, lengths):
  B, T, N, K, H = 3, 8, 4, 2, 16
  q, k, v = (jax.random.normal(jax.random.key(i), (B, T, n, H)) for i, n in enumerate((N, K, K)))
  mask = _runs_mask(starts, lengths, T)
  ref = jax.nn.dot_product_attention(q, k, v, mask=transformer.explicit_attention_mask(mask, 0, T))
  got = transformer.fused_causal_attention(q, k, v, mask, "xla")
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(got)[m], np.asarray(ref)[m], atol=1e-6)
  assert np.all(np.asarray(got)[~m] == 0)


def test_roll_rows_gradient_is_the_inverse_rotation():
  x = jax.random.normal(jax.random.key(0), (3, 7, 2))
  shift = jnp.array([0, 3, 6], jnp.int32)
  rolled = transformer.roll_rows(x, shift)
  np.testing.assert_array_equal(rolled[1], jnp.roll(x[1], -3, axis=0))
  np.testing.assert_array_equal(transformer.roll_rows(rolled, -shift), x)
  w = jax.random.normal(jax.random.key(1), x.shape)
  grad = jax.grad(lambda x: jnp.sum(w * transformer.roll_rows(x, shift)))(x)
  ref = jax.grad(lambda x: jnp.sum(w * transformer._gather_rows(x, shift)))(x)  # pylint: disable=protected-access
  np.testing.assert_array_equal(grad, ref)


def _right_padded_batch(seed, lengths, T):
  rng = np.random.default_rng(seed)
  toks = jnp.asarray(rng.integers(0, 10, (len(lengths), T)), jnp.int32)
  mask = _runs_mask([0] * len(lengths), lengths, T)
  return toks, mask, jnp.where(mask, jnp.cumsum(mask, axis=1) - 1, 0)


def _loss(params, adapter, toks, mask, positions, cfg):
  logits = transformer.forward(params, adapter, toks, positions, mask, cfg=cfg, lora_cfg=LCFG)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.roll(toks, -1, axis=1)[..., None], -1)[..., 0]
  return jnp.sum(nll * mask) / jnp.sum(mask), logits


def test_fused_training_step_equals_explicit_logits_loss_and_gradients(params, on_xla):
  """Right-padded training batch with an all-padding row: same logits on real tokens, same loss,
  same LoRA gradients, nothing NaN."""
  del on_xla
  toks, mask, positions = _right_padded_batch(0, (9, 4, 0), 12)
  adapter = jax.tree.map(lambda x: x + 0.05, lora.init_lora(CFG, LCFG, jax.random.key(1)))
  grad = jax.jit(jax.value_and_grad(_loss, argnums=1, has_aux=True), static_argnames="cfg")
  (loss_ref, logits_ref), g_ref = grad(params, adapter, toks, mask, positions, cfg=CFG)
  (loss, logits), g = grad(params, adapter, toks, mask, positions, cfg=FUSED)
  m = np.asarray(mask)
  assert np.all(np.isfinite(np.asarray(logits)))
  np.testing.assert_allclose(np.asarray(logits)[m], np.asarray(logits_ref)[m], atol=1e-5)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_fused_prefill_fills_the_cache_like_the_explicit_path(params, on_xla):
  """Left-padded fused prefill (``prefill_cache``) against the reference, the prompt run into an
  empty cache: equal logits on real tokens and equal keys/values on the valid slots (padding
  slots are never attended to)."""
  del on_xla
  T = 9
  mask = _runs_mask([4, 0, 7], [5, 9, 2], T)
  toks = jnp.where(mask, jnp.asarray(np.random.default_rng(1).integers(0, 10, (3, T)), jnp.int32), PAD)
  positions = transformer.positions_from_mask(mask)
  run = jax.jit(transformer.forward_with_cache, static_argnames="cfg")
  ref, cache_ref = run(params, None, toks, positions, mask, transformer.init_cache(CFG, 3, T), cfg=CFG)
  assert transformer.uses_fused_attention(FUSED, T)
  got, cache = jax.jit(transformer.prefill_cache, static_argnames="cfg")(params, None, toks, positions, mask,
                                                                           cfg=FUSED)
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(got)[m], np.asarray(ref)[m], atol=1e-5)
  np.testing.assert_array_equal(cache["valid"], cache_ref["valid"])
  assert int(cache["index"]) == int(cache_ref["index"]) == T
  for name in ("k", "v"):
    axes = (0, 1, 3, 2, 4) if name == "k" else (0, 1, 4, 2, 3)  # to LxBxSxKxH
    got_kv, ref_kv = (np.transpose(np.stack(c[name]), axes) for c in (cache, cache_ref))
    np.testing.assert_allclose(got_kv[:, m], ref_kv[:, m], atol=1e-5)


def test_fused_generate_equals_explicit_generate(params, on_xla):
  """Fused prefill, then explicit-mask decode steps over the grown cache: the same greedy tokens."""
  del on_xla
  T = 8
  mask = _runs_mask([5, 0, 2], [3, 8, 6], T)
  toks = jnp.where(mask, jnp.asarray(np.random.default_rng(2).integers(0, 10, (3, T)), jnp.int32), PAD)
  gen = functools.partial(decode.generate, max_new_tokens=7, eos_id=-1, pad_id=PAD, chunk=3)
  np.testing.assert_array_equal(np.asarray(gen(params, None, toks, mask, cfg=FUSED)),
                                np.asarray(gen(params, None, toks, mask, cfg=CFG)))


def test_only_self_attention_calls_take_the_fused_path():
  assert transformer.uses_fused_attention(FUSED.replace(dtype="bfloat16"), 16)  # training, prefill
  assert not transformer.uses_fused_attention(FUSED, 16)  # cuDNN has no float32 flash attention
  assert not transformer.uses_fused_attention(FUSED.replace(dtype="bfloat16", head_dim=12), 16)
  assert not transformer.uses_fused_attention(CFG.replace(dtype="bfloat16"), 16)
  assert not transformer.uses_fused_attention(CFG.replace(dtype="bfloat16", attention_impl="xla"), 16)


def test_reference_paths_are_bit_identical(params):
  """None and "xla" are the same explicit-mask program; "cudnn" where it falls back (float32) too."""
  toks, mask, positions = _right_padded_batch(3, (7, 3), 7)
  outs = [np.asarray(jax.jit(functools.partial(transformer.forward, cfg=CFG.replace(attention_impl=impl)))(
      params, None, toks, positions, mask)) for impl in (None, "xla", "cudnn")]
  np.testing.assert_array_equal(outs[0], outs[1])
  np.testing.assert_array_equal(outs[0], outs[2])


def _avals(jaxpr):
  for eqn in jaxpr.eqns:
    for v in list(eqn.invars) + list(eqn.outvars):
      yield v.aval
    for sub in jax_core.jaxprs_in_params(eqn.params):
      yield from _avals(sub)


def test_cudnn_path_traces_under_vmap_and_grad_without_a_TxT_tensor(monkeypatch):
  """The real cuDNN primitive, traced on CPU (its version check stubbed; nothing is lowered): its
  batching rules accept what vmap over adapters gives them, in the TTT step and in vmapped decoding,
  and the fused step holds no T x T mask or score tensor, which the reference step does."""
  from jax._src.cudnn import fused_attention_stablehlo  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)
  K, B, T = 3, 2, 24  # T differs from every model dimension
  bf16 = CFG.replace(dtype="bfloat16")
  params = jax.eval_shape(lambda k: transformer.init_params(bf16, k), jax.random.key(0))
  adapter = jax.eval_shape(lambda k: lora.init_lora(bf16, LCFG, k), jax.random.key(0))
  adapters_K = jax.tree.map(lambda x: jax.ShapeDtypeStruct((K,) + x.shape, x.dtype), adapter)
  toks, mask = jax.ShapeDtypeStruct((K, B, T), jnp.int32), jax.ShapeDtypeStruct((K, B, T), bool)

  def ttt_grads(cfg):
    loss = lambda a, p, t, m: _loss(p, a, t, m, transformer.positions_from_mask(m), cfg)[0]
    return jax.make_jaxpr(jax.vmap(jax.grad(loss), in_axes=(0, None, 0, 0)))(adapters_K, params, toks, mask).jaxpr

  fused, ref = ttt_grads(bf16.replace(attention_impl="cudnn")), ttt_grads(bf16)
  assert "dot_product_attention_fwd" in str(fused) and "dot_product_attention_bwd" in str(fused)
  assert "dot_product_attention" not in str(ref)
  square = lambda jaxpr: [a for a in _avals(jaxpr) if getattr(a, "shape", ())[-2:] == (T, T)]
  assert not square(fused) and square(ref)
  gen = functools.partial(decode.generate, cfg=bf16.replace(attention_impl="cudnn"), lora_cfg=LCFG,
                          max_new_tokens=4, eos_id=3, pad_id=PAD)
  decoding = jax.make_jaxpr(jax.vmap(gen, in_axes=(None, 0, 0, 0)))(params, adapters_K, toks, mask)
  assert "dot_product_attention_fwd" in str(decoding)  # the prefill; decode steps use the XLA path


@pytest.mark.parametrize("block", [4, 5])
def test_blocked_attention_equals_the_explicit_mask_in_logits_loss_and_gradients(params, monkeypatch, block):
  """Right padding and an all-padding row; blocks that divide T, that do not, and one block."""
  monkeypatch.setattr(transformer, "ATTENTION_BLOCK", block)
  toks, mask, positions = _right_padded_batch(4, (9, 4, 0), 12)
  adapter = jax.tree.map(lambda x: x + 0.05, lora.init_lora(CFG, LCFG, jax.random.key(2)))
  grad = jax.jit(jax.value_and_grad(_loss, argnums=(0, 1), has_aux=True), static_argnames="cfg")
  (loss_ref, logits_ref), g_ref = grad(params, adapter, toks, mask, positions, cfg=CFG)
  (loss, logits), g = grad(params, adapter, toks, mask, positions, cfg=CFG.replace(attention_impl="blocked"))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(logits_ref), atol=1e-5)  # padding rows too
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_blocked_attention_under_vmap_over_adapters_equals_one_by_one(params, monkeypatch):
  monkeypatch.setattr(transformer, "ATTENTION_BLOCK", 4)
  toks, mask, positions = _right_padded_batch(5, (10, 6), 12)
  adapters = [jax.tree.map(lambda x, i=i: x + 0.03 * (i + 1), lora.init_lora(CFG, LCFG, jax.random.key(i)))
              for i in range(3)]
  blocked = CFG.replace(attention_impl="blocked")
  fwd = lambda ad, cfg: transformer.forward(params, ad, toks, positions, mask, cfg=cfg, lora_cfg=LCFG)
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *adapters)
  together = jax.jit(jax.vmap(lambda ad: fwd(ad, blocked)))(stacked)
  for i, ad in enumerate(adapters):
    np.testing.assert_allclose(np.asarray(together[i]), np.asarray(jax.jit(lambda a: fwd(a, CFG))(ad)), atol=1e-5)


def test_blocked_attention_leaves_cached_calls_on_the_reference_path(params):
  toks, mask, positions = _right_padded_batch(6, (7, 5), 8)
  cache = transformer.init_cache(CFG, 2, 16)
  outs = [transformer.forward_with_cache(params, None, toks, positions, mask, cache, cfg=c)[0]
          for c in (CFG, CFG.replace(attention_impl="blocked"))]
  np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))

"""Blockwise token log-probabilities equal the full-logits path, values and gradients, and the
compiled program holds no BxTxV tensor."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.model import blockwise, config, lora, transformer
from ttt_jax.train import steps

CFG = config.get_config("tiny").replace(dtype="float32", vocab_size=97)
LCFG = lora.LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "down"))
B, T = 3, 20


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  toks = jnp.asarray(rng.integers(0, CFG.vocab_size, (B, T)), jnp.int32)
  mask = jnp.asarray(np.arange(T)[None] >= np.array([[0], [5], [11]]))  # left padding
  return toks, mask, transformer.positions_from_mask(mask)


def _params():
  params = transformer.init_params(CFG, jax.random.key(0))
  adapter = lora.init_lora(CFG, LCFG, jax.random.key(1))
  # A nonzero B so the adapter changes the logits.
  adapter = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), adapter)
  return params, adapter


@jax.jit
def _full(params, adapter, toks, mask, positions):
  logits = transformer.forward(params, adapter, toks, positions, mask, cfg=CFG, lora_cfg=LCFG)[:, :-1]
  logp = jax.nn.log_softmax(logits, axis=-1)
  target = toks[:, 1:]
  truth = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
  return jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0], truth >= jnp.max(logits, axis=-1)


@functools.partial(jax.jit, static_argnames="block")
def _blocked(params, adapter, toks, mask, positions, block=7):
  hidden = transformer.forward_hidden(params, adapter, toks, positions, mask, cfg=CFG, lora_cfg=LCFG)
  hidden = transformer.Hidden(hidden.states_BxTxD[:, :-1], hidden.head_DxV)
  return blockwise.target_logprobs(hidden, toks[:, 1:], block=block)


def test_blockwise_logprobs_and_argmax_equal_the_full_logits():
  params, adapter = _params()
  args = _batch()
  want_logp, want_top = _full(params, adapter, *args)
  for block in (7, 64):  # T - 1 = 19 tokens: a partial last block; one padded block
    logp, top = _blocked(params, adapter, *args, block=block)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(want_logp), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(top), np.asarray(want_top))


def test_blockwise_gradients_equal_the_full_logits_loss():
  params, adapter = _params()
  toks, mask, positions = _batch(1)
  w = mask[:, 1:].astype(jnp.float32)

  def full_loss(a):
    logits = transformer.forward(params, a, toks, positions, mask, cfg=CFG, lora_cfg=LCFG)[:, :-1]
    return jnp.sum(steps.token_nll(logits, toks[:, 1:]) * w)

  def block_loss(a):
    return -jnp.sum(_blocked(params, a, toks, mask, positions)[0] * w)

  (l_full, g_full), (l_block, g_block) = (jax.jit(jax.value_and_grad(f))(adapter) for f in (full_loss, block_loss))
  np.testing.assert_allclose(float(l_block), float(l_full), rtol=1e-6)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_full))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale),
               g_block, g_full)


def test_blockwise_under_vmap_over_adapters_equals_one_by_one():
  params, adapter = _params()
  adapters = [adapter, jax.tree.map(lambda x: 0.5 * x, adapter)]
  toks, mask, positions = _batch(2)
  one = functools.partial(_blocked, params)
  got, _ = jax.vmap(one, in_axes=(0, None, None, None))(lora.stack(adapters), toks, mask, positions)
  for k, a in enumerate(adapters):
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(one(a, toks, mask, positions)[0]), atol=1e-6)


def test_compiled_loss_gradient_holds_no_full_logits_tensor():
  """XLA's memory analysis of the gradient program, at two vocabulary sizes: the full path's
  temporaries grow by more than the extra B x T x V float32 logits, the blockwise path's by a
  small part of it (one block's logits, the head and its gradient)."""
  toks = jnp.zeros((2, 256), jnp.int32)
  mask = jnp.ones((2, 256), bool)
  pos = transformer.positions_from_mask(mask)

  def temp_bytes(vocab, path):
    cfg = CFG.replace(vocab_size=vocab)
    params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
    if path == "full":
      loss = lambda p: jnp.sum(steps.token_nll(transformer.forward(p, None, toks, pos, mask, cfg=cfg), toks))
    else:
      loss = lambda p: jnp.sum(blockwise.token_nll(transformer.forward_hidden(p, None, toks, pos, mask, cfg=cfg),
                                                   toks, block=32))
    return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

  extra_logits = 2 * 256 * (8192 - 1024) * 4
  growth = {path: temp_bytes(8192, path) - temp_bytes(1024, path) for path in ("full", "blocked")}
  assert growth["full"] > extra_logits, growth
  assert growth["blocked"] < extra_logits / 4, (growth, extra_logits)

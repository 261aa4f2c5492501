from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import config, lora, transformer

CFG = config.get_config("tiny", dtype="float32")
LCFG = lora.LoraConfig(rank=4, alpha=8.0, targets=("q", "k", "v", "o", "gate", "up", "down"))


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, jax.random.key(0))


def _nonzero_b(adapter, seed):
  """B is zero at init; give it random values so the adapter matters."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(adapter)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [jax.random.normal(k, x.shape, x.dtype) * 0.1 if path[-1].key == "b" else x
         for k, (path, x) in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, new)


def _inputs(B=2, T=6, seed=0):
  toks = jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, (B, T)), jnp.int32)
  mask = jnp.ones((B, T), bool).at[0, :2].set(False)
  return toks, transformer.positions_from_mask(mask), mask


_fwd = jax.jit(functools.partial(transformer.forward, cfg=CFG, lora_cfg=LCFG))


def test_adapter_structure_and_count():
  a = lora.init_lora(CFG, LCFG, jax.random.key(1))
  assert a["layers"]["attn"]["q"]["a"].shape == (CFG.n_layers, CFG.dim, LCFG.rank)
  assert a["layers"]["attn"]["k"]["b"].shape == (CFG.n_layers, LCFG.rank, CFG.kv_dim)
  assert a["layers"]["mlp"]["down"]["a"].shape == (CFG.n_layers, CFG.ffn_dim, LCFG.rank)
  r, L, D, F, KV = LCFG.rank, CFG.n_layers, CFG.dim, CFG.ffn_dim, CFG.kv_dim
  expected = L * r * ((D + D) * 2 + (D + KV) * 2 + (D + F) * 2 + (F + D))
  assert lora.count_params(a) == expected
  assert np.any(np.asarray(a["layers"]["attn"]["q"]["a"]) != 0)


def test_fresh_adapter_changes_nothing_and_nonzero_b_does(params):
  toks, pos, mask = _inputs()
  base = _fwd(params, None, toks, pos, mask)
  a = lora.init_lora(CFG, LCFG, jax.random.key(1))
  np.testing.assert_array_equal(_fwd(params, a, toks, pos, mask), base)
  changed = _fwd(params, _nonzero_b(a, 2), toks, pos, mask)
  assert np.max(np.abs(changed - base)) > 1e-3


def test_merge_equals_applying_adapter(params):
  toks, pos, mask = _inputs()
  a = _nonzero_b(lora.init_lora(CFG, LCFG, jax.random.key(1)), 3)
  merged = lora.merge(params, a, LCFG)
  np.testing.assert_allclose(_fwd(merged, None, toks, pos, mask), _fwd(params, a, toks, pos, mask), atol=1e-5)
  assert jax.tree.structure(merged) == jax.tree.structure(params)


def test_partial_targets_only_touch_their_modules(params):
  lcfg = lora.LoraConfig(rank=2, alpha=2.0, targets=("v", "up"))
  a = lora.init_lora(CFG, lcfg, jax.random.key(1))
  assert set(a["layers"]["attn"]) == {"v"} and set(a["layers"]["mlp"]) == {"up"}
  merged = lora.merge(params, _nonzero_b(a, 4), lcfg)
  np.testing.assert_array_equal(merged["layers"]["attn"]["q"]["kernel"], params["layers"]["attn"]["q"]["kernel"])
  assert not np.allclose(merged["layers"]["mlp"]["up"]["kernel"], params["layers"]["mlp"]["up"]["kernel"])


def test_stack_unstack_round_trip_and_vmap_equals_one_by_one(params):
  adapters = [_nonzero_b(lora.init_lora(CFG, LCFG, jax.random.key(i)), 10 + i) for i in range(3)]
  stacked = lora.stack(adapters)
  assert stacked["layers"]["attn"]["q"]["a"].shape[0] == 3
  for x, y in zip(lora.unstack(stacked), adapters):
    jax.tree.map(np.testing.assert_array_equal, x, y)
  toks = jnp.stack([_inputs(seed=s)[0] for s in range(3)])
  mask = jnp.ones(toks.shape, bool)
  pos = transformer.positions_from_mask(mask)
  vmapped = jax.jit(jax.vmap(functools.partial(transformer.forward, cfg=CFG, lora_cfg=LCFG),
                             in_axes=(None, 0, 0, 0, 0)))(params, stacked, toks, pos, mask)
  for k in range(3):
    np.testing.assert_allclose(vmapped[k], _fwd(params, adapters[k], toks[k], pos[k], mask[k]), atol=1e-5)


def test_grad_flows_only_to_adapter(params):
  toks, pos, mask = _inputs()
  a = lora.init_lora(CFG, LCFG, jax.random.key(1))
  g = jax.jit(jax.grad(lambda ad: _fwd(params, ad, toks, pos, mask).mean()))(a)
  assert jax.tree.structure(g) == jax.tree.structure(a)
  assert np.any(np.asarray(g["layers"]["attn"]["q"]["b"]) != 0)  # B gets gradient even at zero


def test_split_combine_and_errors(params):
  a = lora.init_lora(CFG, LCFG, jax.random.key(1))
  p2, a2 = lora.split(lora.combine(params, a))
  assert p2 is params and a2 is a
  with pytest.raises(ValueError, match="targets"):
    lora.LoraConfig(targets=("q", "bogus"))
  with pytest.raises(ValueError, match="rank"):
    lora.LoraConfig(rank=0)
  with pytest.raises(ValueError, match="lora_cfg"):
    transformer.forward(params, a, *_inputs(), cfg=CFG)

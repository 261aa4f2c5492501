from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import config, decode, lora, transformer

CFG = config.get_config("tiny", dtype="float32")
LCFG = lora.LoraConfig(rank=4, alpha=8.0)
PAD = 15
N = 6


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, jax.random.key(0))


def _adapter(seed):
  a = lora.init_lora(CFG, LCFG, jax.random.key(seed))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jax.random.normal(jax.random.key(seed + 100), x.shape) * 0.3 if p[-1].key == "b" else x, a)


def _left_pad(seqs, T=None):
  T = T or max(len(s) for s in seqs)
  toks = np.full((len(seqs), T), PAD, np.int32)
  mask = np.zeros((len(seqs), T), bool)
  for i, s in enumerate(seqs):
    toks[i, T - len(s):] = s
    mask[i, T - len(s):] = True
  return jnp.asarray(toks), jnp.asarray(mask)


def _prompts(seed, lengths=(3, 7, 5)):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 10, n) for n in lengths]


@jax.jit
def _argmax_at(params, adapter, toks_BxT, len_B):
  """Full forward over right-padded rows; argmax of the logits at each row's last real token."""
  mask = jnp.arange(toks_BxT.shape[1])[None] < len_B[:, None]
  logits = transformer.forward(params, adapter, toks_BxT, transformer.positions_from_mask(mask), mask, cfg=CFG,
                               lora_cfg=LCFG)
  return jnp.argmax(logits[jnp.arange(len(len_B)), len_B - 1], -1)


def _reference_greedy(params, adapter, seqs, eos_id):
  """Argmax decoding by full recomputation of the growing sequences (no cache)."""
  buf = np.full((len(seqs), max(map(len, seqs)) + N), PAD, np.int32)
  lens = np.array([len(s) for s in seqs])
  for b, s in enumerate(seqs):
    buf[b, :len(s)] = s
  out = np.full((len(seqs), N), PAD, np.int32)
  done = np.zeros(len(seqs), bool)
  for i in range(N):
    nxt = np.asarray(_argmax_at(params, adapter, jnp.asarray(buf), jnp.asarray(lens)))
    out[:, i] = np.where(done, PAD, nxt)
    done |= nxt == eos_id
    buf[np.arange(len(seqs)), lens] = nxt
    lens = lens + 1
  return out


def _gen(params, adapter, toks, mask, eos_id, **kw):
  return decode.generate(params, adapter, toks, mask, cfg=CFG, lora_cfg=LCFG, max_new_tokens=N, eos_id=eos_id,
                         pad_id=PAD, **kw)


def test_cached_greedy_equals_full_recomputation_with_eos_stop(params):
  adapter = _adapter(1)
  seqs = _prompts(0)
  toks, mask = _left_pad(seqs)
  free = np.asarray(_gen(params, adapter, toks, mask, eos_id=-1))  # never stops
  np.testing.assert_array_equal(free, _reference_greedy(params, adapter, seqs, eos_id=-1))
  eos = int(free[0, 2])  # a token that sequence 0 emits at step 2: it must stop there
  got = np.asarray(_gen(params, adapter, toks, mask, eos_id=eos))
  np.testing.assert_array_equal(got, _reference_greedy(params, adapter, seqs, eos_id=eos))
  first = int(np.argmax(got[0] == eos))
  assert first <= 2 and np.all(got[0, first + 1:] == PAD)


def test_left_padded_batch_equals_each_prompt_alone(params):
  seqs = _prompts(1, lengths=(3, 7))
  toks, mask = _left_pad(seqs, T=9)
  batched = np.asarray(_gen(params, None, toks, mask, eos_id=-1))
  for b, s in enumerate(seqs):
    t1, m1 = _left_pad([s])
    np.testing.assert_array_equal(batched[b], np.asarray(_gen(params, None, t1, m1, eos_id=-1))[0])


def test_vmap_over_adapters_equals_one_by_one(params):
  K = 3
  adapters = [_adapter(10 + k) for k in range(K)]
  batches = [_left_pad(_prompts(20 + k), T=8) for k in range(K)]
  toks_KxBxT = jnp.stack([b[0] for b in batches])
  mask_KxBxT = jnp.stack([b[1] for b in batches])
  for temperature, rng in ((0.0, None), (1.0, jax.random.key(7))):
    gen = functools.partial(decode.generate, cfg=CFG, lora_cfg=LCFG, max_new_tokens=N, eos_id=3, pad_id=PAD,
                            temperature=temperature, rng=rng)
    vmapped = np.asarray(jax.vmap(gen, in_axes=(None, 0, 0, 0))(params, lora.stack(adapters), toks_KxBxT,
                                                                  mask_KxBxT))
    for k in range(K):
      np.testing.assert_array_equal(vmapped[k], np.asarray(gen(params, adapters[k], *batches[k])))


def test_sampling_is_reproducible_and_depends_on_rng(params):
  toks, mask = _left_pad(_prompts(2, lengths=(4,) * 8))
  a = _gen(params, None, toks, mask, eos_id=-1, temperature=5.0, rng=jax.random.key(0))
  b = _gen(params, None, toks, mask, eos_id=-1, temperature=5.0, rng=jax.random.key(0))
  c = _gen(params, None, toks, mask, eos_id=-1, temperature=5.0, rng=jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert np.any(np.asarray(a) != np.asarray(c))
  assert np.all((np.asarray(a) >= 0) & (np.asarray(a) < CFG.vocab_size))


def test_generate_rejects_bad_arguments(params):
  toks, mask = _left_pad(_prompts(3))
  with pytest.raises(ValueError, match="rng"):
    _gen(params, None, toks, mask, eos_id=1, temperature=1.0)
  with pytest.raises(ValueError, match="max_seq_len"):
    decode.generate(params, None, toks, mask, cfg=CFG, max_new_tokens=CFG.max_seq_len, eos_id=1, pad_id=PAD)

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

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


# ----- chunked decoding: each step reads only the live cache, rounded up to its chunk -----

@pytest.mark.parametrize("T,n,chunk", [(8, 6, 2), (37, 20, 6), (5, 931, 117), (3, 2, 64), (4, 1, 3)])
def test_chunk_schedule_reads_live_slots_rounded_up_to_the_chunk(T, n, chunk):
  schedule = decode.chunk_schedule(T, n, chunk)
  steps = [i for first, end, _ in schedule for i in range(first, end)]
  assert steps == list(range(1, n))  # every decode step once, in order
  for first, end, cache_len in schedule:
    assert end - first <= chunk
    for i in range(first, end):
      live = T + i  # the prompt plus tokens 0..i-1, the last one written by this step
      assert live <= cache_len < live + chunk
      assert cache_len == T + min(1 + ((i - 1) // chunk + 1) * chunk, n) - 1  # rounded up to the chunk grid
  assert not schedule or schedule[-1][2] == T + n - 1  # never more than the old T + n slots


def test_default_chunk_bounds_the_number_of_compiled_loops():
  for n in (1, 2, 16, 300, 931, 5000):
    assert len(decode.chunk_schedule(10, n, decode.default_chunk(n))) <= decode.DEFAULT_MAX_CHUNKS
    assert decode.default_chunk(n) >= decode.MIN_CHUNK


def _leaves_dims(jaxpr) -> set[int]:
  """Every dimension of every value in a jaxpr and its sub-jaxprs."""
  dims = set()
  for eqn in jaxpr.eqns:
    for v in list(eqn.invars) + list(eqn.outvars):
      dims.update(getattr(v.aval, "shape", ()))
    for sub in jax_core.jaxprs_in_params(eqn.params):
      dims |= _leaves_dims(sub)
  return dims


def _while_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "while":
      yield eqn
    else:
      for sub in jax_core.jaxprs_in_params(eqn.params):
        yield from _while_eqns(sub)


def test_each_chunk_loop_traces_only_its_cache_length(params):
  """The traced loop bodies: chunk c touches a cache of its own length and no longer one."""
  T, n, chunk = 37, 20, 6  # cache lengths 43, 49, 55, 56: distinct from every model dimension
  lens = [c for _, _, c in decode.chunk_schedule(T, n, chunk)]
  toks, mask = _left_pad(_prompts(4, lengths=(30, 37)), T=T)
  logits, cache = decode.prefill(params, None, toks, mask, cfg=CFG)
  assert cache["k"][0].shape[2] == T
  loop = functools.partial(decode.decode_loop, cfg=CFG, max_new_tokens=n, eos_id=-1, pad_id=PAD, chunk=chunk)
  jaxpr = jax.make_jaxpr(loop)(params, None, cache, logits, mask.sum(1), jax.random.key(0)).jaxpr
  loops = list(_while_eqns(jaxpr))
  assert len(loops) == len(lens) == 4
  for eqn, length in zip(loops, lens):
    body_dims = _leaves_dims(eqn.params["body_jaxpr"].jaxpr)
    # length + 1: a step's scores span the cache's slots and the step's own token.
    assert (body_dims & set(lens + [T + n])) - {length + 1} == {length}, (length, body_dims & set(lens))
  assert CFG.dim not in lens and CFG.ffn_dim not in lens and CFG.vocab_size not in lens


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunked_greedy_equals_full_recomputation_with_padding_and_eos(params, chunk):
  adapter = _adapter(1)
  seqs = _prompts(0)
  toks, mask = _left_pad(seqs, T=9)  # every row padded
  free = np.asarray(_gen(params, adapter, toks, mask, eos_id=-1, chunk=chunk))
  np.testing.assert_array_equal(free, _reference_greedy(params, adapter, seqs, eos_id=-1))
  eos = int(free[1, 3])  # sequence 1 emits it at step 3 (in a later chunk): it must stop there
  got = np.asarray(_gen(params, adapter, toks, mask, eos_id=eos, chunk=chunk))
  np.testing.assert_array_equal(got, _reference_greedy(params, adapter, seqs, eos_id=eos))


def test_chunking_does_not_change_sampled_tokens(params):
  toks, mask = _left_pad(_prompts(2, lengths=(4, 6, 5)))
  kw = dict(eos_id=-1, temperature=2.0, rng=jax.random.key(3))
  one = np.asarray(_gen(params, None, toks, mask, chunk=N, **kw))
  np.testing.assert_array_equal(np.asarray(_gen(params, None, toks, mask, chunk=2, **kw)), one)


def test_vmapped_chunked_decode_stops_on_one_unbatched_predicate(params):
  """Under vmap over adapters the loops keep a scalar predicate (no per-step select of the
  cache), and the tokens (with EOS stops inside later chunks) equal decoding one by one."""
  K = 3
  adapters = [_adapter(30 + k) for k in range(K)]
  batches = [_left_pad(_prompts(40 + k), T=8) for k in range(K)]
  gen = functools.partial(decode.generate, cfg=CFG, lora_cfg=LCFG, max_new_tokens=N, eos_id=-1, pad_id=PAD,
                          chunk=2)
  eos = int(np.asarray(gen(params, adapters[0], *batches[0]))[0, 2])
  gen = functools.partial(gen, eos_id=eos)
  args = (params, lora.stack(adapters), jnp.stack([b[0] for b in batches]), jnp.stack([b[1] for b in batches]))
  vmapped = np.asarray(jax.vmap(gen, in_axes=(None, 0, 0, 0))(*args))
  for k in range(K):
    np.testing.assert_array_equal(vmapped[k], np.asarray(gen(params, adapters[k], *batches[k])))
  assert (vmapped == PAD).any()
  jaxpr = jax.make_jaxpr(jax.vmap(lambda a, t, m: decode.decode_loop(
      params, a, *decode.prefill(params, a, t, m, cfg=CFG, lora_cfg=LCFG)[::-1], m.sum(1), jax.random.key(0),
      cfg=CFG, lora_cfg=LCFG, max_new_tokens=N, eos_id=eos, pad_id=PAD, chunk=2)))(*args[1:]).jaxpr
  loops = list(_while_eqns(jaxpr))
  assert len(loops) == 3
  for eqn in loops:
    assert eqn.params["cond_jaxpr"].out_avals[0].shape == ()


def test_grow_cache_keeps_contents_and_grid_state():
  cfg = CFG.replace(grid_positions=True)
  cache = transformer.init_cache(cfg, 2, 3)
  cache = dict(cache, k=tuple(k + 1.0 for k in cache["k"]), valid=cache["valid"].at[:, 1:].set(True), index=jnp.int32(3),
               grid=cache["grid"] + 2)
  grown = decode.grow_cache(cache, 5)
  assert grown["k"][0].shape[2] == grown["v"][-1].shape[3] == grown["valid"].shape[1] == 5
  np.testing.assert_array_equal(np.stack(grown["k"])[:, :, :, :3], np.stack(cache["k"]))
  assert not np.stack(grown["k"])[:, :, :, 3:].any() and not np.asarray(grown["valid"][:, 3:]).any()
  np.testing.assert_array_equal(grown["valid"][:, :3], cache["valid"])
  assert int(grown["index"]) == 3 and np.array_equal(grown["grid"], cache["grid"])
  with pytest.raises(ValueError, match="shrink"):
    decode.grow_cache(cache, 2)


def _completion(prefix):
  """A continuation that makes ``prefix`` (no EOS yet) a valid answer, when one exists."""
  from ttt_jax.data import tokens  # pylint: disable=g-import-not-at-top
  rows = [[]]
  for t in prefix:
    if t == tokens.NL:
      rows.append([])
    else:
      rows[-1].append(t)
  done_rows, cur = rows[:-1], rows[-1]
  width = len(done_rows[0]) if done_rows else max(len(cur), 1)
  fill = [0] * (width - len(cur)) + [tokens.NL] if (cur or not done_rows) else []
  return fill + [tokens.EOS]


def test_grid_step_stops_exactly_when_no_continuation_parses():
  """Over (without EOS) iff no continuation gives a grid: a parsing completion exists before,
  none of several after."""
  from ttt_jax.data import tokens  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  grids = [rng.integers(0, 10, (h, w)) for h, w in [(1, 1), (3, 5), (30, 2), (2, 30)]]
  seqs = [list(tokens.encode_grid(g)) + [tokens.EOS] for g in grids]
  alphabet = [0, 3, 9, tokens.NL, tokens.NL, tokens.EOS, tokens.IN]
  seqs += [list(rng.choice(alphabet, size=int(rng.integers(1, 40)))) for _ in range(300)]
  seqs += [[1, 2, tokens.NL, 3, tokens.NL], [tokens.NL], [4] * 31, ([5, tokens.NL] * 31)]
  for seq in seqs:
    state = decode.grid_state_init(1)
    for k, t in enumerate(seq):
      state, over = decode.grid_step(state, jnp.asarray([t], jnp.int32))
      prefix = seq[:k + 1]
      if t == tokens.EOS:
        assert bool(over[0])
        break
      if bool(over[0]):
        for tail in ([tokens.EOS], [tokens.NL, tokens.EOS], [0, tokens.NL, tokens.EOS]):
          assert tokens.decode_answer(prefix + tail) is None, (prefix, tail)
        break
      assert tokens.decode_answer(prefix + _completion(prefix)) is not None, prefix
  for seq in seqs[:4]:  # a valid answer is never cut: over only at its EOS
    state, overs = decode.grid_state_init(1), []
    for t in seq:
      state, over = decode.grid_step(state, jnp.asarray([t], jnp.int32))
      overs.append(bool(over[0]))
    assert overs == [False] * (len(seq) - 1) + [True]


def test_grid_stop_gives_the_same_answers_and_stops_astray_rows():
  from ttt_jax.data import tokens  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.get_config("tiny", dtype="float32")
  p = transformer.init_params(cfg, jax.random.key(3))
  rng = np.random.default_rng(1)
  prompts = rng.integers(0, 11, (6, 12)).astype(np.int32)
  mask = np.ones_like(prompts, bool)
  kw = dict(cfg=cfg, max_new_tokens=40, eos_id=tokens.EOS, pad_id=tokens.PAD, chunk=16)
  plain = np.asarray(decode.generate(p, None, prompts, mask, **kw))
  stopped = np.asarray(decode.generate(p, None, prompts, mask, grid_stop=True, **kw))
  for a, b in zip(plain, stopped):
    ga, gb = tokens.decode_answer(a), tokens.decode_answer(b)
    assert (ga is None) == (gb is None) and (ga is None or np.array_equal(ga, gb))
    n = int(np.sum(b != tokens.PAD))
    np.testing.assert_array_equal(a[:n], b[:n])  # the same tokens until the stop
  assert np.sum(stopped != tokens.PAD) < np.sum(plain != tokens.PAD)  # astray rows cut short
  with pytest.raises(ValueError, match="grid_stop"):
    decode.generate(p, None, prompts, mask, grid_stop=True, **(kw | {"eos_id": 3}))

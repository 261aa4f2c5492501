"""Grid-aware positions: parity with a step-by-step reference, chunking, decoding, the off switch."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.arc import io
from ttt_jax.data import tokens
from ttt_jax.model import config, decode, grid_positions as gp, hf, lora, store, transformer

CFG = config.get_config("tiny", dtype="float32", grid_positions=True)
LCFG = lora.LoraConfig(rank=4, alpha=8.0)
_MARKERS = {tokens.BOS, tokens.IN, tokens.OUT, tokens.EOS, tokens.PAD}


def _reference_coords(seq) -> np.ndarray:
  """The coordinates by walking the tokens one at a time (the definition)."""
  out, row, col, role = [], 0, 0, gp.SPECIAL
  for tok in map(int, seq):
    if tok in _MARKERS:
      out.append((0, 0, gp.SPECIAL))
      role = {tokens.IN: gp.INPUT, tokens.OUT: gp.OUTPUT}.get(tok, gp.SPECIAL)
      row = col = 0
      continue
    out.append((min(row, gp.MAX_COORD - 1), min(col, gp.MAX_COORD - 1), role))
    row, col = (row + 1, 0) if tok == tokens.NL else (row, col + 1)
  return np.array(out, np.int32).reshape(-1, 3)


def _episodes(n: int) -> list[np.ndarray]:
  tasks, _ = io.load_tasks(f"arc1-train:{n}")
  return [tokens.encode_episode(t.train[:2], t.test[0].input, t.test[0].output)[0] for t in tasks]


def _coords(seqs_BxT) -> np.ndarray:
  return np.asarray(gp.grid_coords(jnp.asarray(seqs_BxT, jnp.int32))[0])


def test_vectorised_coords_equal_the_step_by_step_definition():
  eps = _episodes(6)
  for ep in eps:  # real episodes, some with grids of over 20 rows
    np.testing.assert_array_equal(_coords(ep[None])[0], _reference_coords(ep))
  rng = np.random.default_rng(0)  # arbitrary streams: markers anywhere, rows over 30 cells
  streams = rng.choice(np.arange(16), size=(8, 300), p=[0.08] * 10 + [0.08, 0.01, 0.01, 0.01, 0.02, 0.07])
  streams[:4, 50:120] = 3  # a 70-cell row: columns are clipped, not wrapped
  got = _coords(streams)
  for b in range(len(streams)):
    np.testing.assert_array_equal(got[b], _reference_coords(streams[b]))


def test_a_small_grid_gets_its_rows_columns_and_roles():
  ep, _ = tokens.encode_episode([], np.array([[1, 2, 3], [4, 5, 6]], np.int8))
  c = _coords(ep[None])[0]
  # BOS IN 1 2 3 NL 4 5 6 NL OUT
  np.testing.assert_array_equal(c[2:10, 0], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(c[2:10, 1], [0, 1, 2, 3, 0, 1, 2, 3])
  assert set(c[2:10, 2]) == {gp.INPUT} and c[0, 2] == c[1, 2] == c[10, 2] == gp.SPECIAL


def test_chunks_with_carried_state_equal_one_pass():
  seq = _episodes(3)[2]
  whole = _coords(seq[None])[0]
  rng = np.random.default_rng(1)
  cuts = sorted(rng.choice(np.arange(1, len(seq)), 6, replace=False)) + [len(seq)]
  state, parts, start = None, [], 0
  for cut in cuts:
    c, state = gp.grid_coords(jnp.asarray(seq[None, start:cut]), state)
    parts.append(np.asarray(c)[0])
    start = cut
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  # The carried state is what a cell appended after the sequence would get.
  np.testing.assert_array_equal(np.asarray(state)[0],
                                _reference_coords(np.append(seq, 0))[-1])


@pytest.fixture(scope="module")
def params():
  # Weights far larger than init_std: greedy outputs then vary (cells, NL, markers) and a
  # wrong coordinate changes the argmax.
  p = transformer.init_params(CFG.replace(init_std=0.5), jax.random.key(0))
  for i, name in enumerate(("row_embed", "col_embed", "role_embed")):
    p[name] = jax.random.normal(jax.random.key(10 + i), p[name].shape)
  return p


def _prompts(lengths, seed):
  """Left-padded episode prompts ending with OUT, of different lengths."""
  tasks, _ = io.load_tasks("arc1-train:40")
  small = [t for t in tasks if max(g.size for p in t.train for g in (p.input, p.output)) <= 25]
  rng = np.random.default_rng(seed)
  seqs = []
  for n in lengths:
    t = small[int(rng.integers(len(small)))]
    seqs.append(tokens.encode_episode(t.train[:n], t.test[0].input)[0])
  T = max(map(len, seqs)) + 3
  toks = np.full((len(seqs), T), tokens.PAD, np.int32)
  mask = np.zeros((len(seqs), T), bool)
  for b, s in enumerate(seqs):
    toks[b, T - len(s):], mask[b, T - len(s):] = s, True
  return jnp.asarray(toks), jnp.asarray(mask)


def _adapter(seed):
  a = lora.init_lora(CFG, LCFG, jax.random.key(seed))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jax.random.normal(jax.random.key(seed + 1), x.shape) * 0.3 if p[-1].key == "b" else x, a)


N = 12


def _gen(params, adapter, toks, mask, cfg=CFG):
  return decode.generate(params, adapter, toks, mask, cfg=cfg, lora_cfg=LCFG, max_new_tokens=N,
                         eos_id=-1, pad_id=tokens.PAD)


# 3-D RoPE alone, and with the learned embeddings
ROPE_GRID = CFG.replace(grid_positions=False, rope_grid=True)


@pytest.mark.parametrize("cfg", [CFG, ROPE_GRID, CFG.replace(rope_grid=True)],
                         ids=["embeddings", "rope_grid", "both"])
def test_incremental_decoding_equals_full_forward_with_padding(params, cfg):
  if not cfg.grid_positions:
    params = {k: v for k, v in params.items() if k not in ("row_embed", "col_embed", "role_embed")}
  adapter = _adapter(3)
  toks, mask = _prompts((1, 2, 1), seed=0)
  new_BxN = _gen(params, adapter, toks, mask, cfg)
  full = jnp.concatenate([toks, new_BxN], axis=1)
  full_mask = jnp.concatenate([mask, jnp.ones(new_BxN.shape, bool)], axis=1)
  logits = transformer.forward(params, adapter, full, transformer.positions_from_mask(full_mask),
                               full_mask, cfg=cfg, lora_cfg=LCFG)
  T = toks.shape[1]
  greedy = np.asarray(jnp.argmax(logits[:, T - 1:-1], -1))
  np.testing.assert_array_equal(np.asarray(new_BxN), greedy)
  # Each prompt decoded alone (no padding) gives the same tokens.
  for b in range(toks.shape[0]):
    alone = toks[b:b + 1, int((~mask[b]).sum()):]
    got = _gen(params, adapter, alone, jnp.ones(alone.shape, bool), cfg)
    np.testing.assert_array_equal(np.asarray(got)[0], np.asarray(new_BxN)[b])
  assert (np.asarray(new_BxN) == tokens.NL).any()  # the coordinates were exercised


def test_rope_grid_scores_depend_only_on_coordinate_offsets():
  """<R(p) q, R(p') k> depends on p - p' axis by axis; and every axis moves the score."""
  inv_freq, axis = transformer.rope_grid_sections(ROPE_GRID)
  assert axis.tolist() == [a for a in range(4) for _ in range(ROPE_GRID.head_dim // 8)]
  rng = np.random.default_rng(0)
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, ROPE_GRID.head_dim)), jnp.float32) for _ in range(2))
  score = lambda pq, pk: float(jnp.sum(transformer.apply_rope(q, jnp.asarray([[pq]]), inv_freq, axis)
                                       * transformer.apply_rope(k, jnp.asarray([[pk]]), inv_freq, axis)))
  base = score([7, 3, 4, 2], [5, 1, 1, 1])
  np.testing.assert_allclose(score([17, 9, 24, 2], [15, 7, 21, 1]), base, rtol=1e-4, atol=1e-5)
  for a in range(4):
    moved = [5, 1, 1, 1]
    moved[a] += 1
    assert abs(score([7, 3, 4, 2], moved) - base) > 1e-4, a


def test_rope_grid_sees_rows_that_1d_rope_does_not(params):
  """Same weights: the 3-D and 1-D forms differ on a grid, and the option adds no parameters."""
  p = {k: v for k, v in params.items() if k not in ("row_embed", "col_embed", "role_embed")}
  assert set(transformer.init_params(ROPE_GRID, jax.random.key(0))) == set(p)
  toks, mask = _prompts((1, 2), seed=5)
  pos = transformer.positions_from_mask(mask)
  a = transformer.forward(p, None, toks, pos, mask, cfg=ROPE_GRID)
  b = transformer.forward(p, None, toks, pos, mask, cfg=ROPE_GRID.replace(rope_grid=False))
  assert not np.allclose(np.asarray(a), np.asarray(b))
  assert "grid" in transformer.init_cache(ROPE_GRID, 1, 4)
  with pytest.raises(ValueError, match="rope_grid"):
    config.to_hf_config(ROPE_GRID)
  with pytest.raises(ValueError, match="multiple of 8"):
    ROPE_GRID.replace(head_dim=12)
  with pytest.raises(ValueError, match="compact ARC vocabulary"):
    config.get_config("llama-3.2-1b", rope_grid=True)


def test_vmap_over_adapters_equals_one_by_one(params):
  K = 3
  adapters = [_adapter(20 + k) for k in range(K)]
  batches = [_prompts((1, 2), seed=k) for k in range(K)]
  T = max(b[0].shape[1] for b in batches)
  pad = lambda x, v: jnp.pad(x, ((0, 0), (T - x.shape[1], 0)), constant_values=v)
  batches = [(pad(t, tokens.PAD), pad(m, False)) for t, m in batches]
  gen = functools.partial(decode.generate, cfg=CFG, lora_cfg=LCFG, max_new_tokens=N, eos_id=-1,
                          pad_id=tokens.PAD)
  vmapped = jax.vmap(gen, in_axes=(None, 0, 0, 0))(
      params, lora.stack(adapters), jnp.stack([b[0] for b in batches]),
      jnp.stack([b[1] for b in batches]))
  for k in range(K):
    np.testing.assert_array_equal(np.asarray(vmapped[k]), np.asarray(gen(params, adapters[k], *batches[k])))


def test_option_off_adds_nothing_and_zero_tables_are_bit_identical(params):
  off = CFG.replace(grid_positions=False)
  p_off = transformer.init_params(off, jax.random.key(0))
  assert set(p_off) == set(params) - {"row_embed", "col_embed", "role_embed"}
  assert "grid" not in transformer.init_cache(off, 1, 4)
  toks, mask = _prompts((1, 2), seed=5)
  pos = transformer.positions_from_mask(mask)
  zeroed = dict(p_off, **{k: jnp.zeros_like(params[k]) for k in ("row_embed", "col_embed", "role_embed")})
  a = transformer.forward(p_off, None, toks, pos, mask, cfg=off)
  b = transformer.forward(zeroed, None, toks, pos, mask, cfg=CFG)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = transformer.forward(params, None, toks, pos, mask, cfg=CFG)
  assert not np.allclose(np.asarray(a), np.asarray(c))


def test_model_directory_records_the_option_and_export_refuses(tmp_path, params):
  store.save_model(str(tmp_path / "m"), params, CFG)
  loaded, cfg2, _ = store.load_model(str(tmp_path / "m"))
  assert cfg2.grid_positions and set(loaded) == set(params)
  with pytest.raises(ValueError, match="grid_positions"):
    config.to_hf_config(CFG)
  with pytest.raises(ValueError, match="grid_positions"):
    hf.export_peft_adapter(_adapter(1), LCFG, CFG, str(tmp_path / "peft"))
  with pytest.raises(ValueError, match="compact ARC vocabulary"):
    config.get_config("llama-3.2-1b", grid_positions=True)


def test_chunked_decoding_carries_the_grid_state(params):
  """Chunks grow the cache between loops; the grid state rides along, so tokens do not change."""
  adapter = _adapter(3)
  toks, mask = _prompts((1, 2, 1), seed=0)
  chunked = decode.generate(params, adapter, toks, mask, cfg=CFG, lora_cfg=LCFG, max_new_tokens=N,
                            eos_id=-1, pad_id=tokens.PAD, chunk=5)
  np.testing.assert_array_equal(np.asarray(chunked), np.asarray(_gen(params, adapter, toks, mask)))

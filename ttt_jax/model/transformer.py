"""A Llama-style decoder as Flax linen modules, applied functionally.

``forward(params, lora, tokens, positions, mask)`` is the one entry point for
training; ``forward_with_cache`` serves prefill and decoding. Parameters are a
plain nested dict; layers are stacked on a leading ``L`` axis (``nn.scan``), so
compile time does not grow with depth. LoRA adapters are a second variable
collection, ``'lora'``, with the same module paths as the parameters they
adapt (``lora['layers']['attn']['q'] = {'a': LxDxR, 'b': LxRxQ}``); a module
without an adapter entry simply has none, so ``lora=None`` is the base model.

Padding: ``mask_BxT`` marks real tokens. Padding keys are never attended to,
and every query may attend to itself, so no attention row is empty (no NaN for
pad queries). With left padding and ``positions = cumsum(mask) - 1`` each
sequence gets exactly the logits it would get alone.

Attention has two forms. The reference builds that rule as an explicit
``Bx1xTxS`` boolean mask. The fused form (``cfg.attention_impl="cudnn"``) needs
no mask tensor: when the keys are just the chunk's own tokens (training, and
prefill through ``prefill_cache``) and each row's real tokens are one
contiguous run, the rule is "causal within the run", so rows are rotated to
start at their run and cuDNN gets ``is_causal`` plus per-row lengths. On a CPU,
``attention_impl="blocked"`` keeps the explicit mask but computes attention one block of
queries at a time over the keys up to that block (training and scoring, no cache), skipping
the masked upper triangle. ``attention_impl="flash"`` (``ttt_jax.model.flash_attention``) is
cuDNN's algorithm in pure JAX: no mask tensor, and memory linear in ``T`` (the backward pass
recomputes each block's probabilities), for backends without a fused kernel.

A chunk after a cache (decode steps, DFS expansions) runs the layers unrolled, each writing
the chunk into its own cache arrays in place and attending over them (``cached_attention``):
no step copies the cache.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.model import flash_attention
from ttt_jax.model import grid_positions
from ttt_jax.model.config import ModelConfig

Params = dict
# {'k': L-tuple of BxKxSxH, 'v': L-tuple of BxKxHxS, 'valid': BxS bool, 'index': int32 scalar}, plus
# 'grid': Bx3 int32 (the next cell's row, column, role) when cfg.grid_positions or cfg.rope_grid.
Cache = dict


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
  """RoPE positions for a (left-)padded batch: real tokens count 0, 1, 2, ..."""
  return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
  """Inverse frequencies in float32, with HF's ``llama3`` scaling when configured."""
  d = cfg.head_dim
  inv_freq = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))))
  inv_freq = inv_freq.astype(np.float32)
  rs = cfg.rope_scaling
  if rs is None:
    return inv_freq
  factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
  old_len = rs["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
  return np.where(medium, smoothed, scaled).astype(np.float32)


ROPE_GRID_AXES = 4  # rope_grid: sequence position, row, column, role


def rope_grid_sections(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
  """``(inv_freq_H2, axis_H2)`` of 3-D RoPE: four equal sections of the rotary pairs, section
  ``a`` rotated by position axis ``a`` with the frequency ladder of a ``head_dim / 4`` head."""
  d = cfg.head_dim // ROPE_GRID_AXES
  ladder = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))))
  inv_freq = np.tile(ladder.astype(np.float32), ROPE_GRID_AXES)
  return inv_freq, np.repeat(np.arange(ROPE_GRID_AXES, dtype=np.int32), d // 2)


def apply_rope(x_BxTxNxH: jax.Array, positions: jax.Array, inv_freq_H2: np.ndarray,
               axis_H2: Optional[np.ndarray] = None) -> jax.Array:
  """Rotate-half RoPE (HF layout: the two halves of each head are the pairs).

  ``positions`` is BxT, or BxTxA with ``axis_H2`` naming the position axis of each pair (3-D RoPE).
  """
  if axis_H2 is None:
    angles_BxTxH2 = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_H2)
  else:
    angles_BxTxH2 = jnp.take(positions.astype(jnp.float32), jnp.asarray(axis_H2), axis=-1) * jnp.asarray(inv_freq_H2)
  cos = jnp.cos(angles_BxTxH2)[:, :, None, :]
  sin = jnp.sin(angles_BxTxH2)[:, :, None, :]
  x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.dtype(self.cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.norm_eps)
    dtype = jnp.dtype(self.cfg.dtype)
    return x32.astype(dtype) * scale.astype(dtype)


class LoraDense(nn.Module):
  """Bias-free dense layer; adds ``scale * (x @ a) @ b`` when the 'lora' collection has this module."""

  features: int
  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    dtype = jnp.dtype(self.cfg.dtype)
    kernel = self.param("kernel", nn.initializers.normal(self.cfg.init_std), (x.shape[-1], self.features),
                        jnp.dtype(self.cfg.param_dtype))
    x = x.astype(dtype)
    y = jnp.dot(x, kernel.astype(dtype))
    if self.has_variable("lora", "a"):
      a = self.get_variable("lora", "a").astype(dtype)
      b = self.get_variable("lora", "b").astype(dtype)
      y = y + (jnp.dot(jnp.dot(x, a), b) * self.lora_scale).astype(dtype)
    return y


# The backend of the fused form. Tests set "xla" to check its mask-free expression on CPU.
FUSED_BACKEND = "cudnn"


def uses_fused_attention(cfg: ModelConfig, T: int) -> bool:
  """Static: whether a call on ``T`` tokens without a cache (training, prefill) runs fused.

  Only self-attention within the chunk has the mask-free form; a chunk after a cache (decode
  steps) runs ``cached_attention``. cuDNN flash attention further needs bf16/fp16 and a
  head_dim that is a multiple of 8, at most 128.
  """
  if cfg.attention_impl != "cudnn":
    return False
  if FUSED_BACKEND != "cudnn":
    return True
  return cfg.dtype in ("bfloat16", "float16") and cfg.head_dim % 8 == 0 and cfg.head_dim <= 128


def _gather_rows(x_BxTx_: jax.Array, shift_B: jax.Array) -> jax.Array:
  T = x_BxTx_.shape[1]
  idx_BxT = (jnp.arange(T)[None, :] + shift_B[:, None]) % T
  return jnp.take_along_axis(x_BxTx_, idx_BxT.reshape(idx_BxT.shape + (1,) * (x_BxTx_.ndim - 2)), axis=1)


@jax.custom_vjp
def roll_rows(x_BxTx_: jax.Array, shift_B: jax.Array) -> jax.Array:
  """``out[b, t] = x[b, (t + shift[b]) % T]``; its gradient is the inverse rotation, not a scatter-add."""
  return _gather_rows(x_BxTx_, shift_B)


roll_rows.defvjp(lambda x, shift: (_gather_rows(x, shift), shift),
                 lambda shift, g: (_gather_rows(g, -shift), None))


def fused_causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_BxT, implementation: Optional[str]):
  """Causal self-attention of one contiguous run of real tokens per row, with no mask tensor.

  Rotating each row so its run starts at slot 0 turns left (or no) padding into right padding,
  which ``is_causal`` plus ``query/key_value_seq_lengths`` express exactly. Real rows equal the
  explicit-mask path; padding rows are zero (a row with no real token gets length 1, not 0,
  so no backend ever normalises an empty row).
  """
  start_B = jnp.argmax(mask_BxT, axis=1).astype(jnp.int32)
  len_B = jnp.maximum(jnp.sum(mask_BxT, axis=1, dtype=jnp.int32), 1)
  q, k, v = (roll_rows(x, start_B) for x in (q_BxTxNxH, k_BxTxKxH, v_BxTxKxH))
  out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=len_B,
                                     key_value_seq_lengths=len_B, implementation=implementation)
  return jnp.where(mask_BxT[:, :, None, None], roll_rows(out, -start_B), 0).astype(q.dtype)


ATTENTION_BLOCK = 128  # query rows per block of attention_impl="blocked"


def blocked_causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_Bx1xTxT, block: int):
  """The explicit-mask attention of a chunk over its own keys (no cache), one query block at a time.

  Query block ``[start, end)`` attends only to keys ``[0, end)``: under the causal rule every key
  after ``end`` is masked for those queries, so skipping them changes nothing and saves the
  upper triangle's score FLOPs and memory (about half at long ``T``).
  """
  T = q_BxTxNxH.shape[1]
  outs = []
  for start in range(0, T, block):
    end = min(start + block, T)
    outs.append(jax.nn.dot_product_attention(q_BxTxNxH[:, start:end], k_BxTxKxH[:, :end], v_BxTxKxH[:, :end],
                                             mask=mask_Bx1xTxT[:, :, start:end, :end]))
  return jnp.concatenate(outs, axis=1)


def cache_layout(k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keys and values as the cache holds them: BxKxTxH and BxKxHxT. Head before slot, so each
  (row, head) is one contiguous block, and both attention products contract the minor axis
  (on a CPU several times faster than contracting a major axis)."""
  return jnp.swapaxes(k_BxTxKxH, 1, 2), jnp.transpose(v_BxTxKxH, (0, 2, 3, 1))


def pad_cache(cache: "Cache", length: int) -> "Cache":
  """The cache with empty (invalid) slots appended up to ``length`` slots."""
  extra = length - cache["valid"].shape[1]
  pad = lambda a, axis: jnp.pad(a, [(0, extra if i == axis else 0) for i in range(a.ndim)])
  return dict(cache, k=tuple(pad(a, 2) for a in cache["k"]), v=tuple(pad(a, 3) for a in cache["v"]),
              valid=pad(cache["valid"], 1))


def cached_attention(q_BxTxNxH, k_BxKxSxH, v_BxKxHxS, mask_Bx1xTxS) -> jax.Array:
  """Explicit-mask attention over the cache's layout (``cache_layout``); grouped-query heads
  share a key head by reshaping, not repeating. Softmax in float32, as the XLA reference does."""
  B, T, N, H = q_BxTxNxH.shape
  K = k_BxKxSxH.shape[1]
  q = (q_BxTxNxH * jnp.asarray(1.0 / math.sqrt(H), q_BxTxNxH.dtype)).reshape(B, T, K, N // K, H)
  f32 = jnp.float32
  scores = jnp.einsum("btkgh,bksh->bkgts", q, k_BxKxSxH, preferred_element_type=f32)
  scores = jnp.where(mask_Bx1xTxS[:, :, None], scores, jnp.finfo(f32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_BxKxHxS.dtype)
  out = jnp.einsum("bkgts,bkhs->btkgh", probs, v_BxKxHxS, preferred_element_type=f32)
  return out.reshape(B, T, N, H).astype(q_BxTxNxH.dtype)


class Attention(nn.Module):
  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, attn_mask_Bx1xTxS, fused_mask_BxT, cache_kv, cache_index):
    """Returns (output, keys and values). Without a cache: explicit-mask attention, or the
    fused form when ``attn_mask_Bx1xTxS`` is None; the chunk's own keys and values. With
    ``cache_kv`` (this layer's cache arrays): the chunk is written at ``cache_index``
    (in place) and attends over the whole cache; the updated arrays."""
    cfg = self.cfg
    B, T, _ = x_BxTxD.shape
    dense = lambda n, name: LoraDense(n, cfg, self.lora_scale, name=name)
    q = dense(cfg.q_dim, "q")(x_BxTxD).reshape(B, T, cfg.n_heads, cfg.head_dim)
    k = dense(cfg.kv_dim, "k")(x_BxTxD).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
    v = dense(cfg.kv_dim, "v")(x_BxTxD).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
    inv_freq, axis = rope_grid_sections(cfg) if cfg.rope_grid else (rope_inv_freq(cfg), None)
    q = apply_rope(q, positions_BxT, inv_freq, axis)
    k = apply_rope(k, positions_BxT, inv_freq, axis)
    if cache_kv is not None:
      k_new, v_new = cache_layout(k, v)
      k = jax.lax.dynamic_update_slice(cache_kv[0], k_new.astype(cache_kv[0].dtype), (0, 0, cache_index, 0))
      v = jax.lax.dynamic_update_slice(cache_kv[1], v_new.astype(cache_kv[1].dtype), (0, 0, 0, cache_index))
      out = cached_attention(q, k.astype(q.dtype), v.astype(q.dtype), attn_mask_Bx1xTxS)
    elif attn_mask_Bx1xTxS is None and cfg.attention_impl == "flash":
      out = flash_attention.causal_attention(q, k, v, fused_mask_BxT, flash_attention.DEFAULT_BLOCK)
    elif attn_mask_Bx1xTxS is None:
      out = fused_causal_attention(q, k, v, fused_mask_BxT, FUSED_BACKEND)
    elif cfg.attention_impl == "blocked":
      out = blocked_causal_attention(q, k, v, attn_mask_Bx1xTxS, ATTENTION_BLOCK)
    else:
      impl = None if cfg.attention_impl in ("cudnn", "blocked") else cfg.attention_impl  # XLA's choice
      out = jax.nn.dot_product_attention(q, k, v, mask=attn_mask_Bx1xTxS, implementation=impl)
    out = dense(cfg.dim, "o")(out.reshape(B, T, cfg.q_dim))
    return out, (k, v)


def explicit_attention_mask(valid_BxS: jax.Array, index, T: int) -> jax.Array:
  """The reference rule as a Bx1xTxS mask: valid keys up to each query's slot, plus the query itself."""
  S = valid_BxS.shape[1]
  q_slot_T = index + jnp.arange(T)
  k_slot_S = jnp.arange(S)
  causal_TxS = k_slot_S[None, :] <= q_slot_T[:, None]
  attn_mask = (valid_BxS[:, None, :] & causal_TxS[None]) | (k_slot_S[None, :] == q_slot_T[:, None])[None]
  return attn_mask[:, None]


class Mlp(nn.Module):
  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    gate = LoraDense(cfg.ffn_dim, cfg, self.lora_scale, name="gate")(x)
    up = LoraDense(cfg.ffn_dim, cfg, self.lora_scale, name="up")(x)
    return LoraDense(cfg.dim, cfg, self.lora_scale, name="down")(nn.silu(gate) * up)


class Block(nn.Module):
  """One pre-norm decoder layer, shaped for ``nn.scan``: x -> (x, the layer's keys and values
  of this chunk when ``emit_kv``, else None)."""

  cfg: ModelConfig
  lora_scale: float = 1.0
  emit_kv: bool = False

  @nn.compact
  def __call__(self, x, positions_BxT, attn_mask_Bx1xTxS, fused_mask_BxT, cache_kv=None, cache_index=None):
    h, kv = Attention(self.cfg, self.lora_scale, name="attn")(
        RMSNorm(self.cfg, name="attn_norm")(x), positions_BxT, attn_mask_Bx1xTxS, fused_mask_BxT, cache_kv,
        cache_index)
    x = x + h
    x = x + Mlp(self.cfg, self.lora_scale, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x))
    return x, (kv if self.emit_kv else None)


class Transformer(nn.Module):
  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT, mask_BxT, cache: Optional[Cache] = None, last_only: bool = False,
               cond_BxD: Optional[jax.Array] = None, return_cache: bool = False, return_hidden: bool = False):
    """(logits, new cache). With ``cache``: the chunk follows its slots and is written into it.
    Without: self-attention within the chunk (training, prefill); ``return_cache`` also returns
    the cache of exactly these ``T`` slots (else None)."""
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    B, T = tokens_BxT.shape
    embed = self.param("embed", nn.initializers.normal(cfg.init_std),
                       (cfg.vocab_size, cfg.dim), jnp.dtype(cfg.param_dtype))
    x = jnp.take(embed, tokens_BxT, axis=0).astype(dtype)
    grid_state = None
    if cfg.grid_positions or cfg.rope_grid:
      coords_BxTx3, grid_state = grid_positions.grid_coords(
          tokens_BxT, None if cache is None else cache["grid"])
    if cfg.grid_positions:  # learned row, column and role embeddings, added to the token's
      for i, (name, size) in enumerate((("row_embed", grid_positions.MAX_COORD),
                                        ("col_embed", grid_positions.MAX_COORD),
                                        ("role_embed", grid_positions.NUM_ROLES))):
        table = self.param(name, nn.initializers.normal(cfg.init_std), (size, cfg.dim),
                           jnp.dtype(cfg.param_dtype))
        x = x + jnp.take(table, coords_BxTx3[..., i], axis=0).astype(dtype)
    if cfg.rope_grid:  # 3-D RoPE: (sequence position, row, column, role) per token
      positions_BxT = jnp.concatenate([positions_BxT[..., None].astype(jnp.int32), coords_BxTx3], axis=-1)
    if cond_BxD is not None:  # a per-sequence vector on every token (ttt_jax.taskemb)
      x = x + cond_BxD[:, None, :].astype(dtype)

    mask_BxT = mask_BxT.astype(bool)
    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    if cache is None:
      attn_mask, fused_mask = None, mask_BxT
      if not (uses_fused_attention(cfg, T) or cfg.attention_impl == "flash"):
        attn_mask, fused_mask = explicit_attention_mask(mask_BxT, 0, T), None
      layers = nn.scan(block, variable_axes={"params": 0, "lora": 0}, split_rngs={"params": True},
                       in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layers)
      x, kv_L = layers(cfg, self.lora_scale, return_cache, name="layers")(x, positions_BxT, attn_mask, fused_mask)
    else:
      # After a cache the layers are unrolled, each updating its own cache arrays in place: a
      # scan would slice (copy) every layer's keys and values out of a stacked cache each step.
      index = cache["index"]
      valid_BxS = jax.lax.dynamic_update_slice(cache["valid"], mask_BxT, (0, index))
      attn_mask = explicit_attention_mask(valid_BxS, index, T)
      stacked = {c: self.variables[c]["layers"] for c in ("params", "lora")
                 if c in self.variables and "layers" in self.variables[c]}
      kv_L = []
      for layer in range(cfg.n_layers):
        x, kv = block(cfg, self.lora_scale, True, parent=None).apply(
            jax.tree.map(lambda a, layer=layer: a[layer], stacked), x, positions_BxT, attn_mask, None,
            (cache["k"][layer], cache["v"][layer]), index)
        kv_L.append(kv)
    if last_only:  # prefill needs only the next-token logits; skip a BxTxV tensor
      x = x[:, -1:]
    x = RMSNorm(cfg, name="final_norm")(x)
    if cfg.tie_embeddings:
      head_DxV = embed.T
    else:
      head_DxV = self.param("lm_head", nn.initializers.normal(cfg.init_std), (cfg.dim, cfg.vocab_size),
                            jnp.dtype(cfg.param_dtype))
    if return_hidden:
      return Hidden(x, head_DxV.astype(dtype)), None
    logits = jnp.dot(x, head_DxV.astype(dtype), preferred_element_type=jnp.float32)
    if cache is None and not return_cache:
      return logits, None
    if cache is None:  # the cache this chunk fills: exactly its T slots, one array per layer
      k_LxBxTxKxH, v_LxBxTxKxH = kv_L
      k_L, v_L = zip(*(cache_layout(k_LxBxTxKxH[i], v_LxBxTxKxH[i]) for i in range(cfg.n_layers)))
      new_cache = {"k": k_L, "v": v_L, "valid": mask_BxT, "index": jnp.asarray(T, jnp.int32)}
    else:
      new_cache = dict(cache, k=tuple(kv[0] for kv in kv_L), v=tuple(kv[1] for kv in kv_L), valid=valid_BxS,
                       index=index + T)
    if grid_state is not None:
      new_cache["grid"] = grid_state
    return logits, new_cache


def _model(cfg: ModelConfig, lora_cfg: Any = None) -> Transformer:
  return Transformer(cfg, 1.0 if lora_cfg is None else float(lora_cfg.scale))


def _variables(params: Params, lora: Optional[dict]) -> dict:
  return {"params": params} if lora is None else {"params": params, "lora": lora}


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
  """Random parameters (plain nested dict). Wrap in ``jax.eval_shape`` for shapes only."""
  toks = jnp.zeros((1, 1), jnp.int32)
  init = jax.jit(_model(cfg).init)
  return init(rng, toks, toks, jnp.ones((1, 1), bool))["params"]


def forward(params: Params, lora: Optional[dict], tokens_BxT, positions_BxT, mask_BxT, *,
            cfg: ModelConfig, lora_cfg: Any = None, cond_BxD: Optional[jax.Array] = None) -> jax.Array:
  """Float32 logits_BxTxV. ``lora=None`` runs the base model.

  ``cond_BxD``: a conditioning vector added to every token's embedding (a task embedding in
  the pair format, ``ttt_jax.taskemb``); None adds nothing.
  """
  if lora is not None and lora_cfg is None:
    raise ValueError("forward: an adapter was given without its lora_cfg (needed for the scale)")
  logits, _ = _model(cfg, lora_cfg).apply(_variables(params, lora), tokens_BxT, positions_BxT, mask_BxT,
                                          cond_BxD=cond_BxD)
  return logits


class Hidden(NamedTuple):
  """The last layer's normalised states and the output head: logits are ``states @ head``,
  which ``ttt_jax.model.blockwise`` computes a block of tokens at a time."""
  states_BxTxD: jax.Array
  head_DxV: jax.Array


def forward_hidden(params: Params, lora: Optional[dict], tokens_BxT, positions_BxT, mask_BxT, *,
                   cfg: ModelConfig, lora_cfg: Any = None, cond_BxD: Optional[jax.Array] = None) -> Hidden:
  """``forward`` without its last product: no BxTxV logits tensor (``ttt_jax.model.blockwise``)."""
  if lora is not None and lora_cfg is None:
    raise ValueError("forward_hidden: an adapter was given without its lora_cfg (needed for the scale)")
  hidden, _ = _model(cfg, lora_cfg).apply(_variables(params, lora), tokens_BxT, positions_BxT, mask_BxT,
                                          cond_BxD=cond_BxD, return_hidden=True)
  return hidden


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Optional[str] = None) -> Cache:
  """Empty KV cache for ``batch`` sequences of up to ``length`` tokens."""
  dt = jnp.dtype(dtype or cfg.dtype)
  zeros = lambda *shape: tuple(jnp.zeros(shape, dt) for _ in range(cfg.n_layers))
  cache = {"k": zeros(batch, cfg.n_kv_heads, length, cfg.head_dim),
           "v": zeros(batch, cfg.n_kv_heads, cfg.head_dim, length), "valid": jnp.zeros((batch, length), bool),
           "index": jnp.zeros((), jnp.int32)}
  if cfg.grid_positions or cfg.rope_grid:
    cache["grid"] = grid_positions.initial_state(batch)
  return cache


def prefill_cache(params: Params, lora: Optional[dict], tokens_BxT, positions_BxT, mask_BxT, *,
                  cfg: ModelConfig, lora_cfg: Any = None, cache_len: Optional[int] = None,
                  cache_dtype: Optional[str] = None, last_only: bool = False,
                  cond_BxD: Optional[jax.Array] = None) -> tuple[jax.Array, Cache]:
  """A prompt's forward pass without a cache (so fused or blocked attention applies) that
  returns the cache it fills: ``cache_len`` slots (None: the prompt's ``T``), the prompt in
  the first ``T``. Equals ``forward_with_cache`` from an empty cache; (logits, cache)."""
  if lora is not None and lora_cfg is None:
    raise ValueError("prefill_cache: an adapter was given without its lora_cfg")
  T = tokens_BxT.shape[1]
  cache_len = T if cache_len is None else cache_len
  if cache_len < T:
    raise ValueError(f"prefill_cache: cache_len {cache_len} is shorter than the prompt's {T} tokens")
  logits, cache = _model(cfg, lora_cfg).apply(_variables(params, lora), tokens_BxT, positions_BxT, mask_BxT,
                                              None, last_only, cond_BxD, True)
  dt = jnp.dtype(cache_dtype or cfg.dtype)
  cast = lambda arrays: tuple(a.astype(dt) for a in arrays)
  return logits, pad_cache(dict(cache, k=cast(cache["k"]), v=cast(cache["v"])), cache_len)


def forward_with_cache(params: Params, lora: Optional[dict], tokens_BxT, positions_BxT, mask_BxT, cache: Cache,
                       *, cfg: ModelConfig, lora_cfg: Any = None, last_only: bool = False,
                       cond_BxD: Optional[jax.Array] = None) -> tuple[jax.Array, Cache]:
  """Runs ``tokens_BxT`` at slots ``cache['index']...`` of the cache; returns (logits, new cache).

  Logits are BxTxV, or Bx1xV for the last position only when ``last_only``.
  """
  if lora is not None and lora_cfg is None:
    raise ValueError("forward_with_cache: an adapter was given without its lora_cfg")
  return _model(cfg, lora_cfg).apply(_variables(params, lora), tokens_BxT, positions_BxT, mask_BxT, cache,
                                     last_only, cond_BxD)


def count_params(tree) -> int:
  """Number of scalars in a pytree (works on ShapeDtypeStructs from eval_shape too)."""
  return int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)))

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
prefill into a cache of exactly ``T`` slots) and each row's real tokens are one
contiguous run, the rule is "causal within the run", so rows are rotated to
start at their run and cuDNN gets ``is_causal`` plus per-row lengths. On a CPU,
``attention_impl="blocked"`` keeps the explicit mask but computes attention one block of
queries at a time over the keys up to that block (training and scoring, no cache), skipping
the masked upper triangle.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.model import grid_positions
from ttt_jax.model.config import ModelConfig

Params = dict
# {'k': LxBxSxKxH, 'v': LxBxSxKxH, 'valid': BxS bool, 'index': int32 scalar}, plus
# 'grid': Bx3 int32 (the next cell's row, column, role) when cfg.grid_positions.
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


def apply_rope(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, inv_freq_H2: np.ndarray) -> jax.Array:
  """Rotate-half RoPE (HF layout: the two halves of each head are the pairs)."""
  angles_BxTxH2 = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_H2)
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


def uses_fused_attention(cfg: ModelConfig, T: int, S: Optional[int] = None) -> bool:
  """Static: whether a call on ``T`` tokens over ``S`` cache slots (None: no cache) runs fused.

  Only self-attention within the chunk has the mask-free form: no cache (training), or a cache
  of exactly ``T`` slots, which a chunk can only fill from slot 0 (prefill). cuDNN flash
  attention further needs bf16/fp16 and a head_dim that is a multiple of 8, at most 128.
  """
  if cfg.attention_impl != "cudnn" or (S is not None and S != T):
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


class Attention(nn.Module):
  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, attn_mask_Bx1xTxS, fused_mask_BxT, cache, layer, cache_index):
    """Explicit-mask attention, or the fused form when ``attn_mask_Bx1xTxS`` is None."""
    cfg = self.cfg
    B, T, _ = x_BxTxD.shape
    dense = lambda n, name: LoraDense(n, cfg, self.lora_scale, name=name)
    q = dense(cfg.q_dim, "q")(x_BxTxD).reshape(B, T, cfg.n_heads, cfg.head_dim)
    k = dense(cfg.kv_dim, "k")(x_BxTxD).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
    v = dense(cfg.kv_dim, "v")(x_BxTxD).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
    inv_freq = rope_inv_freq(cfg)
    q = apply_rope(q, positions_BxT, inv_freq)
    k = apply_rope(k, positions_BxT, inv_freq)
    if cache is not None:  # write this chunk at cache_index, then attend over the whole cache
      start = (0, cache_index, 0, 0)
      k_all = jax.lax.dynamic_update_slice(cache["k"][layer], k.astype(cache["k"].dtype), start)
      v_all = jax.lax.dynamic_update_slice(cache["v"][layer], v.astype(cache["v"].dtype), start)
      cache = dict(cache, k=cache["k"].at[layer].set(k_all), v=cache["v"].at[layer].set(v_all))
      # Attend to what the cache holds; fused, the cache is exactly this chunk.
      k, v = k_all.astype(q.dtype), v_all.astype(q.dtype)
    if attn_mask_Bx1xTxS is None:
      out = fused_causal_attention(q, k, v, fused_mask_BxT, FUSED_BACKEND)
    elif cfg.attention_impl == "blocked" and cache is None:
      out = blocked_causal_attention(q, k, v, attn_mask_Bx1xTxS, ATTENTION_BLOCK)
    else:
      impl = None if cfg.attention_impl in ("cudnn", "blocked") else cfg.attention_impl  # XLA's choice
      out = jax.nn.dot_product_attention(q, k, v, mask=attn_mask_Bx1xTxS, implementation=impl)
    out = dense(cfg.dim, "o")(out.reshape(B, T, cfg.q_dim))
    return out, cache


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
  """One pre-norm decoder layer, shaped for ``nn.scan``: (carry, layer_index) -> (carry, None)."""

  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, carry, layer, positions_BxT, attn_mask_Bx1xTxS, fused_mask_BxT, cache_index):
    x, cache = carry
    h, cache = Attention(self.cfg, self.lora_scale, name="attn")(
        RMSNorm(self.cfg, name="attn_norm")(x), positions_BxT, attn_mask_Bx1xTxS, fused_mask_BxT, cache, layer,
        cache_index)
    x = x + h
    x = x + Mlp(self.cfg, self.lora_scale, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x))
    return (x, cache), None


class Transformer(nn.Module):
  cfg: ModelConfig
  lora_scale: float = 1.0

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT, mask_BxT, cache: Optional[Cache] = None, last_only: bool = False,
               cond_BxD: Optional[jax.Array] = None):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    B, T = tokens_BxT.shape
    embed = self.param("embed", nn.initializers.normal(cfg.init_std),
                       (cfg.vocab_size, cfg.dim), jnp.dtype(cfg.param_dtype))
    x = jnp.take(embed, tokens_BxT, axis=0).astype(dtype)
    grid_state = None
    if cfg.grid_positions:  # learned row, column and role embeddings, added to the token's
      coords_BxTx3, grid_state = grid_positions.grid_coords(
          tokens_BxT, None if cache is None else cache["grid"])
      for i, (name, size) in enumerate((("row_embed", grid_positions.MAX_COORD),
                                        ("col_embed", grid_positions.MAX_COORD),
                                        ("role_embed", grid_positions.NUM_ROLES))):
        table = self.param(name, nn.initializers.normal(cfg.init_std), (size, cfg.dim),
                           jnp.dtype(cfg.param_dtype))
        x = x + jnp.take(table, coords_BxTx3[..., i], axis=0).astype(dtype)
    if cond_BxD is not None:  # a per-sequence vector on every token (ttt_jax.taskemb)
      x = x + cond_BxD[:, None, :].astype(dtype)

    mask_BxT = mask_BxT.astype(bool)
    if cache is None:
      index, valid_BxS, S = 0, mask_BxT, T
    else:
      index, S = cache["index"], cache["valid"].shape[1]
      valid_BxS = jax.lax.dynamic_update_slice(cache["valid"], mask_BxT, (0, index))
    attn_mask, fused_mask = None, mask_BxT
    if not uses_fused_attention(cfg, T, None if cache is None else S):
      attn_mask, fused_mask = explicit_attention_mask(valid_BxS, index, T), None

    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    layers = nn.scan(block, variable_axes={"params": 0, "lora": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layers)
    layer_cache = None if cache is None else {"k": cache["k"], "v": cache["v"]}
    (x, layer_cache), _ = layers(cfg, self.lora_scale, name="layers")(
        (x, layer_cache), jnp.arange(cfg.n_layers), positions_BxT, attn_mask, fused_mask, index)
    if last_only:  # prefill needs only the next-token logits; skip a BxTxV tensor
      x = x[:, -1:]
    x = RMSNorm(cfg, name="final_norm")(x)
    if cfg.tie_embeddings:
      head_DxV = embed.T
    else:
      head_DxV = self.param("lm_head", nn.initializers.normal(cfg.init_std), (cfg.dim, cfg.vocab_size),
                            jnp.dtype(cfg.param_dtype))
    logits = jnp.dot(x, head_DxV.astype(dtype), preferred_element_type=jnp.float32)
    if cache is None:
      return logits, None
    new_cache = dict(layer_cache, valid=valid_BxS, index=index + T)
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


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Optional[str] = None) -> Cache:
  """Empty KV cache for ``batch`` sequences of up to ``length`` tokens."""
  shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
  dt = jnp.dtype(dtype or cfg.dtype)
  cache = {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt), "valid": jnp.zeros((batch, length), bool),
           "index": jnp.zeros((), jnp.int32)}
  if cfg.grid_positions:
    cache["grid"] = grid_positions.initial_state(batch)
  return cache


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

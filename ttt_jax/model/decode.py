"""Batched autoregressive decoding with a KV cache.

Prompts are left-padded, so every sequence's next token goes to the same cache
slot while its RoPE position counts only its real tokens. ``prefill`` and the
decode loop (``lax.while_loop``, stopping when every sequence has emitted EOS)
are jitted separately; the loop donates the cache on accelerators so it is
updated in place. Everything is a pure function of arrays, so ``jax.vmap`` over
a stacked adapter (and per-adapter prompts) decodes many adapters at once.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from ttt_jax.model import transformer
from ttt_jax.model.config import ModelConfig


def prefill(params, adapter, prompt_BxT, prompt_mask_BxT, *, cfg: ModelConfig, lora_cfg: Any = None,
            cache_len: int) -> tuple[jax.Array, transformer.Cache]:
  """Runs the left-padded prompt into a fresh cache of ``cache_len`` slots; returns (next logits_BxV, cache)."""
  B, _ = prompt_BxT.shape
  cache = transformer.init_cache(cfg, B, cache_len)
  positions = transformer.positions_from_mask(prompt_mask_BxT)
  logits, cache = transformer.forward_with_cache(params, adapter, prompt_BxT, positions, prompt_mask_BxT, cache,
                                                 cfg=cfg, lora_cfg=lora_cfg, last_only=True)
  return logits[:, -1], cache


def _sample(logits_BxV, key, temperature: float):
  if temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits_BxV / temperature, axis=-1).astype(jnp.int32)


def decode_loop(params, adapter, cache, logits_BxV, prompt_len_B, rng, *, cfg: ModelConfig, lora_cfg: Any = None,
                max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 0.0) -> jax.Array:
  """Samples up to ``max_new_tokens`` tokens per sequence after ``prefill``; PAD after each EOS."""
  B = logits_BxV.shape[0]
  rng, key = jax.random.split(rng)
  tok_B = _sample(logits_BxV, key, temperature)
  out_BxN = jnp.full((B, max_new_tokens), pad_id, jnp.int32)
  done_B = jnp.zeros((B,), bool)

  def cond(carry):
    i, _, done_B, *_ = carry
    return (i < max_new_tokens) & ~jnp.all(done_B)

  def body(carry):
    i, tok_B, done_B, out_BxN, cache, rng = carry
    out_BxN = jax.lax.dynamic_update_slice(out_BxN, jnp.where(done_B, pad_id, tok_B)[:, None], (0, i))
    done_B = done_B | (tok_B == eos_id)
    positions = (prompt_len_B + i)[:, None]
    logits, cache = transformer.forward_with_cache(params, adapter, tok_B[:, None], positions,
                                                   jnp.ones((B, 1), bool), cache, cfg=cfg, lora_cfg=lora_cfg)
    rng, key = jax.random.split(rng)
    return i + 1, _sample(logits[:, -1], key, temperature), done_B, out_BxN, cache, rng

  carry = (jnp.zeros((), jnp.int32), tok_B, done_B, out_BxN, cache, rng)
  return jax.lax.while_loop(cond, body, carry)[3]


_STATIC = ("cfg", "lora_cfg", "max_new_tokens", "eos_id", "pad_id", "temperature")
_prefill_jit = jax.jit(prefill, static_argnames=("cfg", "lora_cfg", "cache_len"))
_decode_jit = jax.jit(decode_loop, static_argnames=_STATIC)
_decode_jit_donating = jax.jit(decode_loop, static_argnames=_STATIC, donate_argnames=("cache",))


def generate(params, adapter, prompt_BxT, prompt_mask_BxT, *, cfg: ModelConfig, lora_cfg: Any = None,
             max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 0.0,
             rng: Optional[jax.Array] = None) -> jax.Array:
  """New tokens_BxN for left-padded prompts (the last column must be real tokens); PAD after EOS.

  ``temperature=0`` is greedy; otherwise ``rng`` is required. Usable under
  ``jax.vmap(partial(generate, cfg=..., ...), in_axes=(None, 0, 0, 0))``.
  """
  if max_new_tokens <= 0:
    raise ValueError(f"generate: max_new_tokens must be positive, got {max_new_tokens}")
  if temperature < 0:
    raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
  if temperature > 0 and rng is None:
    raise ValueError("generate: temperature > 0 needs an rng key")
  if adapter is not None and lora_cfg is None:
    raise ValueError("generate: an adapter was given without its lora_cfg")
  T = prompt_BxT.shape[-1]
  cache_len = T + max_new_tokens
  if cache_len > cfg.max_seq_len:
    raise ValueError(f"generate: prompt length {T} + max_new_tokens {max_new_tokens} exceeds "
                     f"cfg.max_seq_len={cfg.max_seq_len} ({cfg.name})")
  rng = jax.random.key(0) if rng is None else rng  # unused when greedy
  logits_BxV, cache = _prefill_jit(params, adapter, prompt_BxT, prompt_mask_BxT, cfg=cfg, lora_cfg=lora_cfg,
                                   cache_len=cache_len)
  prompt_len_B = jnp.sum(prompt_mask_BxT.astype(jnp.int32), axis=-1)
  loop = _decode_jit if jax.default_backend() == "cpu" else _decode_jit_donating  # CPU cannot donate
  return loop(params, adapter, cache, logits_BxV, prompt_len_B, rng, cfg=cfg, lora_cfg=lora_cfg,
              max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, temperature=float(temperature))

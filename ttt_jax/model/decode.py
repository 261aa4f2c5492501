"""Batched autoregressive decoding with a KV cache.

Prompts are left-padded, so every sequence's next token goes to the same cache
slot while its RoPE position counts only its real tokens. ``prefill`` and the
decode loop are jitted separately; the loop donates the cache on accelerators.

A decode step reads only the live part of the cache, rounded up to a chunk: the
steps run in chunks (``chunk_schedule``), each a ``lax.while_loop`` over a cache
exactly as long as its last step needs, grown (one copy) between chunks. Every
shape stays static, so ``jax.vmap`` over a stacked adapter (and per-adapter
prompts) decodes many adapters at once. The loops stop when every sequence has
emitted EOS; under vmap that test spans all adapters (``_all_done``), so the
loop predicate stays unbatched and no per-step select copies the cache.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from ttt_jax.data import tokens
from ttt_jax.model import transformer
from ttt_jax.model.config import ModelConfig
from ttt_jax.parallel.sharding import rng_key, to_device


DEFAULT_MAX_CHUNKS = 8  # compiled loop bodies per generate call
MIN_CHUNK = 64  # steps: a chunk boundary copies the cache once


def default_chunk(max_new_tokens: int) -> int:
  """Steps per chunk: at most ``DEFAULT_MAX_CHUNKS`` chunks, none shorter than ``MIN_CHUNK``."""
  return max(MIN_CHUNK, -(-(max_new_tokens - 1) // DEFAULT_MAX_CHUNKS))


def chunk_schedule(prompt_len: int, max_new_tokens: int, chunk: int) -> tuple[tuple[int, int, int], ...]:
  """Static ``(first_step, end_step, cache_len)`` of each chunk of decode steps.

  Token 0 comes from the prefill; step ``i`` (1 <= i < max_new_tokens) writes token ``i - 1`` at
  slot ``prompt_len + i - 1`` and samples token ``i``, so it needs ``prompt_len + i`` live slots.
  A chunk's cache is as long as its last step needs: no step reads ``chunk`` or more idle slots.
  """
  if chunk < 1:
    raise ValueError(f"chunk_schedule: chunk must be positive, got {chunk}")
  return tuple((s, min(s + chunk, max_new_tokens), prompt_len + min(s + chunk, max_new_tokens) - 1)
               for s in range(1, max_new_tokens, chunk))


def grow_cache(cache: transformer.Cache, length: int) -> transformer.Cache:
  """The cache with empty (invalid) slots appended up to ``length``."""
  extra = length - cache["valid"].shape[1]
  if extra < 0:
    raise ValueError(f"grow_cache: cannot shrink a cache of {cache['valid'].shape[1]} slots to {length}")
  return transformer.pad_cache(cache, length)


@jax.custom_batching.custom_vmap
def _all_done(done_B: jax.Array) -> jax.Array:
  return jnp.all(done_B)


@_all_done.def_vmap
def _all_done_vmap(axis_size, in_batched, done_KxB):
  """Under vmap, "all done" spans every instance and stays unbatched: finished instances keep
  stepping (emitting PAD), while a batched predicate would select the whole carry every step."""
  del axis_size, in_batched
  return _all_done(done_KxB), False


def prefill(params, adapter, prompt_BxT, prompt_mask_BxT, *, cfg: ModelConfig, lora_cfg: Any = None,
            cache_len: Optional[int] = None, cond_BxD: Optional[jax.Array] = None
            ) -> tuple[jax.Array, transformer.Cache]:
  """Runs the left-padded prompt into a fresh cache (of the prompt's length unless ``cache_len``).

  Returns (next-token logits_BxV, cache).
  """
  positions = transformer.positions_from_mask(prompt_mask_BxT)
  logits, cache = transformer.prefill_cache(params, adapter, prompt_BxT, positions, prompt_mask_BxT, cfg=cfg,
                                            lora_cfg=lora_cfg, cache_len=cache_len, last_only=True,
                                            cond_BxD=cond_BxD)
  return logits[:, -1], cache


def _sample(logits_BxV, key, temperature: float):
  if temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits_BxV / temperature, axis=-1).astype(jnp.int32)


GridState = tuple[jax.Array, jax.Array, jax.Array]  # (column_B, width_B, rows_B)


def grid_state_init(B: int) -> GridState:
  zeros = jnp.zeros((B,), jnp.int32)
  return zeros, zeros, zeros


def grid_step(state: GridState, tok_B: jax.Array) -> tuple[GridState, jax.Array]:
  """Feeds one answer token of the compact vocabulary to each row's grid parser:
  ``(state, over_B)``, where ``over_B`` says the row's answer is settled -- it ended (EOS), or
  no continuation can parse any more (``tokens.decode_answer`` would give None whatever
  follows). A grid is rows of 1..30 colours, each ended by NL, all of one width, 1..30 rows."""
  col_B, width_B, rows_B = state
  is_colour = tok_B < tokens.NUM_COLOURS
  is_nl, is_eos = tok_B == tokens.NL, tok_B == tokens.EOS
  new_col = jnp.where(is_colour, col_B + 1, jnp.where(is_nl, 0, col_B))
  width_ok = jnp.where(width_B == 0, (col_B >= 1) & (col_B <= tokens.MAX_SIDE), col_B == width_B)
  bad = ((~is_colour & ~is_nl & ~is_eos)  # IN, OUT, BOS, PAD: never inside an answer
         | (is_colour & ((new_col > tokens.MAX_SIDE) | ((width_B > 0) & (new_col > width_B))
                         | (rows_B >= tokens.MAX_SIDE)))  # a 31st row can never end well
         | (is_nl & (~width_ok | (rows_B >= tokens.MAX_SIDE))))
  new_width = jnp.where(is_nl & (width_B == 0), col_B, width_B)
  new_rows = rows_B + is_nl.astype(jnp.int32)
  return (new_col, new_width, new_rows), bad | is_eos


def decode_loop(params, adapter, cache, logits_BxV, prompt_len_B, rng, *, cfg: ModelConfig, lora_cfg: Any = None,
                max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 0.0,
                chunk: Optional[int] = None, grid_stop: bool = False,
                cond_BxD: Optional[jax.Array] = None) -> jax.Array:
  """Samples up to ``max_new_tokens`` tokens per sequence after ``prefill``; PAD after each EOS.

  ``cache`` holds the prompt's slots (its ``index``); chunks grow it as ``chunk_schedule`` says.
  ``grid_stop`` (compact ARC vocabulary only): a row also stops, PAD after it, as soon as its
  answer can no longer parse as a grid (``grid_step``). Its answer was invalid either way, so
  every answer parses as without it; the loop ends when every row is settled instead of
  running the whole budget for one row that went astray.
  """
  B = logits_BxV.shape[0]
  rng, key = jax.random.split(rng)
  tok_B = _sample(logits_BxV, key, temperature)
  out_BxN = jnp.full((B, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok_B)
  done_B = tok_B == eos_id
  grid = grid_state_init(B)
  if grid_stop:
    grid, over_B = grid_step(grid, tok_B)
    done_B = done_B | over_B

  def step(carry):
    i, tok_B, done_B, out_BxN, cache, rng, grid = carry
    positions = (prompt_len_B + i - 1)[:, None]
    logits, cache = transformer.forward_with_cache(params, adapter, tok_B[:, None], positions,
                                                   jnp.ones((B, 1), bool), cache, cfg=cfg, lora_cfg=lora_cfg,
                                                   cond_BxD=cond_BxD)
    rng, key = jax.random.split(rng)
    tok_B = _sample(logits[:, -1], key, temperature)
    out_BxN = jax.lax.dynamic_update_slice(out_BxN, jnp.where(done_B, pad_id, tok_B)[:, None], (0, i))
    new_done = done_B | (tok_B == eos_id)
    if grid_stop:
      grid, over_B = grid_step(grid, tok_B)
      new_done = new_done | over_B
    return i + 1, tok_B, new_done, out_BxN, cache, rng, grid

  carry = (jnp.ones((), jnp.int32), tok_B, done_B, out_BxN, cache, rng, grid)
  prompt_slots = cache["valid"].shape[1]
  for _, end, cache_len in chunk_schedule(prompt_slots, max_new_tokens, chunk or default_chunk(max_new_tokens)):
    carry = carry[:4] + (grow_cache(carry[4], cache_len),) + carry[5:]
    carry = jax.lax.while_loop(lambda c, end=end: (c[0] < end) & ~_all_done(c[2]), step, carry)
  return carry[3]


_STATIC = ("cfg", "lora_cfg", "max_new_tokens", "eos_id", "pad_id", "temperature", "chunk",
           "grid_stop")
_prefill_jit = jax.jit(prefill, static_argnames=("cfg", "lora_cfg", "cache_len"))
_decode_jit = jax.jit(decode_loop, static_argnames=_STATIC)
_decode_jit_donating = jax.jit(decode_loop, static_argnames=_STATIC, donate_argnames=("cache",))


def generate(params, adapter, prompt_BxT, prompt_mask_BxT, *, cfg: ModelConfig, lora_cfg: Any = None,
             max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 0.0,
             rng: Optional[jax.Array] = None, chunk: Optional[int] = None,
             grid_stop: bool = False, cond_BxD: Optional[jax.Array] = None) -> jax.Array:
  """New tokens_BxN for left-padded prompts (the last column must be real tokens); PAD after EOS.

  ``temperature=0`` is greedy; otherwise ``rng`` is required. ``chunk``: decode steps per
  compiled loop (None: ``default_chunk``); it changes speed, never the tokens. ``grid_stop``:
  stop a row once its answer cannot parse (``decode_loop``; compact vocabulary). Usable under
  ``jax.vmap(partial(generate, cfg=..., ...), in_axes=(None, 0, 0, 0))``. ``cond_BxD``: the
  per-sequence conditioning vector of ``transformer.forward`` (pair format), at every step.
  """
  if max_new_tokens <= 0:
    raise ValueError(f"generate: max_new_tokens must be positive, got {max_new_tokens}")
  if temperature < 0:
    raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
  if temperature > 0 and rng is None:
    raise ValueError("generate: temperature > 0 needs an rng key")
  if adapter is not None and lora_cfg is None:
    raise ValueError("generate: an adapter was given without its lora_cfg")
  if grid_stop and (eos_id != tokens.EOS or cfg.vocab_size != tokens.VOCAB_SIZE):
    raise ValueError("generate: grid_stop parses the compact ARC vocabulary "
                     f"(EOS {tokens.EOS}, {tokens.VOCAB_SIZE} ids); got eos_id={eos_id}, "
                     f"vocab_size={cfg.vocab_size}")
  T = prompt_BxT.shape[-1]
  if T + max_new_tokens > cfg.max_seq_len:
    raise ValueError(f"generate: prompt length {T} + max_new_tokens {max_new_tokens} exceeds "
                     f"cfg.max_seq_len={cfg.max_seq_len} ({cfg.name})")
  rng = rng_key(0) if rng is None else rng  # unused when greedy
  # host prompts are placed explicitly (the stages run under a host-to-device transfer guard)
  prompt_BxT, prompt_mask_BxT, cond_BxD = to_device((prompt_BxT, prompt_mask_BxT, cond_BxD))
  logits_BxV, cache = _prefill_jit(params, adapter, prompt_BxT, prompt_mask_BxT, cfg=cfg, lora_cfg=lora_cfg,
                                   cond_BxD=cond_BxD)
  prompt_len_B = jnp.sum(prompt_mask_BxT.astype(jnp.int32), axis=-1)
  loop = _decode_jit if jax.default_backend() == "cpu" else _decode_jit_donating  # CPU cannot donate
  return loop(params, adapter, cache, logits_BxV, prompt_len_B, rng, cfg=cfg, lora_cfg=lora_cfg,
              max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, temperature=float(temperature),
              chunk=chunk, grid_stop=grid_stop, cond_BxD=cond_BxD)

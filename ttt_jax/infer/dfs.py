"""Depth-first sampling: every completion whose probability stays above a threshold.

After the ARChitects (arXiv 2505.07859): rather than one greedy answer per view, enumerate
all answers with p(answer | prompt) > ``min_prob``. A prefix's probability only falls as it
grows, so a prefix at or below the threshold is pruned with everything under it: the search
returns exactly the sequences a brute-force enumeration would (up to the length and count
bounds), with their model log-probabilities.

A host loop over a DFS stack (a documented cost: one small device call per expanded node,
B=1). The prompt is prefilled once into a KV cache long enough for the whole answer, and the
whole search runs on that one cache, updated in place (the step donates it): a node at depth d
writes its token's keys and values at slot d and attends causally to the slots before it. In
depth-first order those slots hold exactly the node's ancestors (a subtree only writes deeper
slots, and a sibling overwrites its own), so stale deeper slots are never attended and no node
needs a cache of its own. A node's forward call is made when it is popped. With grid positions
the cache also carries the grid coordinates' running state (a few integers a row): each stack
entry keeps its parent's on the host and the step starts from it.

Greedy decoding is a special case: with ``min_prob >= 0.5`` at most one token per step can
exceed the threshold and that token is the argmax, so the result is either empty or exactly
the greedy sequence (when it ends in EOS within the bound and its probability exceeds
``min_prob``).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data import tokens
from ttt_jax.model import decode, transformer
from ttt_jax.parallel.sharding import to_device


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg", "cache_len"))
def _prefill(params, adapter, prompt_1xT, mask_1xT, cond_1xD, *, cfg, lora_cfg, cache_len):
  logits_1xV, cache = decode.prefill(params, adapter, prompt_1xT, mask_1xT,
                                     cfg=cfg, lora_cfg=lora_cfg, cache_len=cache_len, cond_BxD=cond_1xD)
  return jax.nn.log_softmax(logits_1xV[0]), cache


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg"), donate_argnames=("cache",))
def _step(params, adapter, cache, token, position, slot, cond_1xD, grid=None, *, cfg, lora_cfg):
  """Feeds one token at ``position`` into cache slot ``slot`` (in place: the cache is donated),
  from the grid-coordinate state ``grid`` when the model has one: (next-token log-probs_V, the
  cache)."""
  cache = dict(cache, index=jnp.asarray(slot, jnp.int32))
  if grid is not None:
    cache["grid"] = grid
  logits_1x1xV, cache = transformer.forward_with_cache(
      params, adapter, jnp.reshape(token, (1, 1)).astype(jnp.int32),
      jnp.reshape(position, (1, 1)).astype(jnp.int32), jnp.ones((1, 1), bool), cache,
      cfg=cfg, lora_cfg=lora_cfg, cond_BxD=cond_1xD)
  return jax.nn.log_softmax(logits_1x1xV[0, -1]), cache


def dfs_sample(params, adapter, prompt_T: np.ndarray, *, cfg, lora_cfg=None, min_prob: float = 0.1,
               max_new_tokens: int, max_candidates: int = 64, max_expansions: int = 10_000,
               allowed_ids: Optional[Sequence[int]] = None, eos_id: int = tokens.EOS,
               length_multiple: int = 64, cond_D: Optional[np.ndarray] = None
               ) -> list[tuple[np.ndarray, float]]:
  """Every completion of ``prompt_T`` that ends in ``eos_id`` within ``max_new_tokens`` tokens
  (EOS included) and has probability > ``min_prob``: ``(tokens_N, logprob)`` pairs, most
  probable first. Log-probs are the model's own (float32 sums of log-softmax).

  ``allowed_ids`` restricts the tokens explored (no renormalisation: a completion's score is
  still its full-vocabulary probability); EOS is always allowed. The search stops early after
  ``max_candidates`` results or ``max_expansions`` forward calls (results so far returned;
  a node is expanded, one forward call, when it is popped).
  Children are explored most probable first, so the first result is the greedy path when
  that qualifies. The prompt is left-padded and the cache sized to multiples of
  ``length_multiple``, so the views of a run share a few compiled shapes (padding changes no
  probability: padded slots are masked and positions count real tokens only). ``cond_D``: the
  pair format's conditioning vector (``transformer.forward(cond_BxD=...)``), at every node.
  """
  if not 0.0 < min_prob < 1.0:
    raise ValueError(f"dfs_sample: min_prob must be in (0, 1), got {min_prob}")
  if max_new_tokens < 1:
    raise ValueError(f"dfs_sample: max_new_tokens must be positive, got {max_new_tokens}")
  prompt_T = np.asarray(prompt_T, np.int32)
  P = len(prompt_T)
  if P + max_new_tokens > cfg.max_seq_len:
    raise ValueError(f"dfs_sample: prompt {P} + {max_new_tokens} new tokens exceed "
                     f"cfg.max_seq_len={cfg.max_seq_len}")
  lora_cfg = lora_cfg if adapter is not None else None
  adapter = to_device(adapter)  # a host adapter is placed once, not per node
  cond_1xD = None if cond_D is None else to_device(np.asarray(cond_D, np.float32)[None])
  allowed = None if allowed_ids is None else np.array(sorted(set(allowed_ids) | {eos_id}), np.int64)
  floor = math.log(min_prob)
  # The cache holds the prompt and every answer token but the last (EOS is never fed back).
  padded = -(-P // length_multiple) * length_multiple
  tokens_1xT = np.full((1, padded), tokens.PAD, np.int32)
  tokens_1xT[0, padded - P:] = prompt_T
  mask_1xT = np.zeros((1, padded), bool)
  mask_1xT[0, padded - P:] = True
  cache_len = padded + -(-(max_new_tokens - 1) // length_multiple) * length_multiple
  logp_V, cache = _prefill(params, adapter, *to_device((tokens_1xT, mask_1xT)), cond_1xD,
                           cfg=cfg, lora_cfg=lora_cfg, cache_len=max(cache_len, padded + 1))

  results: list[tuple[np.ndarray, float]] = []
  expansions = 0

  def host_grid(c):
    return None if "grid" not in c else jax.tree.map(np.asarray, jax.device_get(c["grid"]))

  # A stack entry is a node: (tokens, logprob, next-token log-probs or None until it is popped,
  # the grid state its token starts from, on the host).
  stack = [((), 0.0, np.asarray(jax.device_get(logp_V), np.float64), None)]
  while stack and len(results) < max_candidates:
    prefix, score, logp_V, grid = stack.pop()
    if logp_V is None:  # feed the node's last token at its depth's slot: one forward call
      if expansions >= max_expansions:
        break
      expansions += 1
      d = len(prefix) - 1
      token, position, slot, grid = to_device((np.int32(prefix[-1]), np.int32(P + d),
                                               np.int32(padded + d), grid))
      logp_V, cache = _step(params, adapter, cache, token, position, slot, cond_1xD, grid,
                            cfg=cfg, lora_cfg=lora_cfg)
      logp_V = np.asarray(jax.device_get(logp_V), np.float64)
    ids = np.arange(len(logp_V)) if allowed is None else allowed
    if len(prefix) + 1 >= max_new_tokens:  # room for one more token: EOS only
      ids = np.array([eos_id])
    child_scores = score + logp_V[ids]
    keep = child_scores > floor
    ids, child_scores = ids[keep], child_scores[keep]
    order = np.argsort(-child_scores, kind="stable")
    pending = []
    for i in order:  # most probable first
      tok, s = int(ids[i]), float(child_scores[i])
      if tok == eos_id:
        results.append((np.array(prefix + (tok,), np.int32), s))
        if len(results) >= max_candidates:
          break
      else:
        pending.append((tok, s))
    if len(results) >= max_candidates:
      break
    # the most probable child is popped (and expanded) next
    if pending:
      after = host_grid(cache)  # this node's grid state: where its children start
      stack.extend((prefix + (tok,), s, None, after) for tok, s in reversed(pending))
  results.sort(key=lambda r: -r[1])
  return results

"""Batched greedy decoding of augmented views, one adapter per task.

All views of K tasks are decoded by one compiled call: prompts are left-padded
to a bucketed length, views are padded to the same count per task, and
``decode.generate`` is vmapped over the stacked adapters (one frozen base).
Answers are parsed strictly (``None`` when malformed or cut off before EOS: counted, never
raised) and mapped back to the task's frame by each view's inverse transform.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import numpy as np

from ttt_jax.arc.task import Grid
from ttt_jax.data import tokens
from ttt_jax.infer.views import View
from ttt_jax.model import decode, lora
from ttt_jax.parallel.sharding import to_device


def bucket(n: int, multiple: int) -> int:
  """Rounds up so that few distinct shapes reach the compiler."""
  return max(multiple, -(-n // multiple) * multiple)


def decode_budget(views: Sequence[View], context: int, multiple: int = 32) -> int:
  """New tokens for decoding ``views`` in one call: at least every view's reserved
  ``answer_tokens`` (rounded up to a ``multiple``, so few shapes compile), but no more than
  the longest prompt leaves of ``context``. Raises when the views cannot share one call."""
  if not views:
    return 0
  need = max(v.answer_tokens for v in views)
  room = context - max(len(v.prompt_T) for v in views)
  if room < need:
    raise ValueError(f"the longest prompt leaves {room} of {context} tokens for answers that "
                     f"need {need}; split the views with split_for_context")
  return min(bucket(need, multiple), room)


def split_for_context(views_per_input: Sequence[Sequence[View]], context: int
                      ) -> list[list[int]]:
  """Consecutive runs of test inputs (their indices) whose views can share one decoding call:
  longest prompt plus largest answer budget within ``context``. One run when every input
  reserves the same budget (each input's views fit on their own); budgets that differ per
  task (``answer_budget="demos"``) can need more."""
  calls: list[list[int]] = []
  need = longest = 0
  for i, vs in enumerate(views_per_input):
    n = max((v.answer_tokens for v in vs), default=0)
    l = max((len(v.prompt_T) for v in vs), default=0)
    if calls and max(need, n) + max(longest, l) <= context:
      calls[-1].append(i)
      need, longest = max(need, n), max(longest, l)
    else:
      calls.append([i])
      need, longest = n, l
  return calls


def pad_count(n: int, num_tasks: Optional[int]) -> int:
  """Padding tasks that bring ``n`` tasks up to ``num_tasks`` (0 without it)."""
  if num_tasks is None:
    return 0
  if n > num_tasks:
    raise ValueError(f"{n} tasks in a call padded to {num_tasks}")
  return num_tasks - n


def left_pad(prompts: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens_BxT, mask_BxT)`` with every prompt right-aligned (PAD on the left)."""
  tokens_BxT = np.full((len(prompts), length), tokens.PAD, np.int32)
  mask_BxT = np.zeros((len(prompts), length), bool)
  for b, p in enumerate(prompts):
    if len(p) > length:
      raise ValueError(f"prompt of {len(p)} tokens exceeds the padded length {length}")
    tokens_BxT[b, length - len(p):] = p
    mask_BxT[b, length - len(p):] = True
  return tokens_BxT, mask_BxT


@dataclasses.dataclass(frozen=True)
class ViewAnswer:
  view: View
  grid: Optional[Grid]  # in the task's own frame; None when the output did not parse
  tokens_N: np.ndarray  # generated tokens up to and including EOS (in the view's frame)

  @property
  def new_tokens(self) -> int:
    return int(self.tokens_N.shape[0])


def answer_from_tokens(view: View, new_N: np.ndarray) -> ViewAnswer:
  """A view's generated tokens as its answer: parsed strictly (``tokens.decode_answer``: no
  EOS means invalid) and mapped back to the task's frame; tokens kept up to EOS."""
  is_eos = new_N == tokens.EOS
  n_new = int(np.argmax(is_eos)) + 1 if is_eos.any() else len(new_N)
  return ViewAnswer(view, view.to_original(tokens.decode_answer(new_N)), new_N[:n_new])


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg", "max_new_tokens", "decode_chunk"))
def _generate_many(params, adapters_K, tokens_KxBxT, mask_KxBxT, *, cfg, lora_cfg,
                   max_new_tokens, decode_chunk=None):
  def one(adapter, tokens_BxT, mask_BxT):
    return decode.generate(params, adapter, tokens_BxT, mask_BxT, cfg=cfg, lora_cfg=lora_cfg,
                           max_new_tokens=max_new_tokens, eos_id=tokens.EOS,
                           pad_id=tokens.PAD, temperature=0.0, chunk=decode_chunk,
                           grid_stop=True)  # stop rows that can no longer parse: same answers
  return jax.vmap(one)(adapters_K, tokens_KxBxT, mask_KxBxT)


def decode_views(params: Any, adapters: Sequence[Any], views_per_task: Sequence[Sequence[View]],
                 *, cfg, lora_cfg, max_new_tokens: int, length_multiple: int = 128,
                 views_multiple: int = 8, max_total_tokens: Optional[int] = None,
                 max_rows: Optional[int] = None, decode_chunk: Optional[int] = None,
                 num_tasks: Optional[int] = None) -> list[list[ViewAnswer]]:
  """Greedy answers for every view of every task, all tasks in one vmapped call.

  ``adapters[k]`` (a LoRA pytree, or None for the bare model) serves the views of
  task k. Prompts are padded to a multiple of ``length_multiple`` (fewer compiled
  shapes) but never past ``max_total_tokens - max_new_tokens`` (default: the model's
  ``max_seq_len``). ``max_rows`` bounds the sequences (tasks x views) of one compiled call:
  the views are then decoded in chunks, which bounds the prefill's attention memory
  (rows x heads x prompt x cache) and gives the same tokens. ``decode_chunk``: decode steps
  per KV-cache length (``decode.generate``'s ``chunk``; None = its default). Returns, per task, one
  ``ViewAnswer`` per view in input order.
  ``num_tasks`` pads the task axis to that many (copies of the first task, discarded), so
  every decoding group of a stage, the last short one included, runs one compiled program.
  """
  if len(adapters) != len(views_per_task):
    raise ValueError(f"{len(adapters)} adapters for {len(views_per_task)} tasks")
  live = [k for k, vs in enumerate(views_per_task) if vs]
  results: list[list[ViewAnswer]] = [[] for _ in views_per_task]
  if not live:
    return results
  longest = max(len(v.prompt_T) for k in live for v in views_per_task[k])
  limit = (max_total_tokens or cfg.max_seq_len) - max_new_tokens
  if longest > limit:
    raise ValueError(f"a prompt of {longest} tokens leaves no room for {max_new_tokens} new "
                     f"tokens within {limit + max_new_tokens}")
  length = min(bucket(longest, length_multiple), limit)
  have = [adapters[k] is not None for k in live]
  pad = pad_count(len(live), num_tasks)
  if any(have) and not all(have):
    raise ValueError("either every task has an adapter or none has (use a fresh adapter, "
                     "whose B is zero, for the bare model)")
  stacked = lora.stack([adapters[k] for k in live + live[:1] * pad]) if all(have) else None
  n_views = bucket(max(len(views_per_task[k]) for k in live), views_multiple)
  per_call = n_views
  if max_rows:
    per_call = min(n_views, max(views_multiple, max_rows // (len(live) + pad) // views_multiple
                                * views_multiple))
  for start in range(0, n_views, per_call):
    toks, masks = [], []
    for k in live:
      prompts = [v.prompt_T for v in views_per_task[k][start:start + per_call]]
      if not prompts:  # this task has no views left: padding rows only
        prompts = [views_per_task[k][0].prompt_T]
      prompts += [prompts[0]] * (per_call - len(prompts))  # padding rows, discarded below
      t, m = left_pad(prompts, length)
      toks.append(t)
      masks.append(m)
    toks, masks = toks + toks[:1] * pad, masks + masks[:1] * pad
    out_KxBxN = _generate_many(params, stacked, *to_device((np.stack(toks), np.stack(masks))), cfg=cfg,
                               lora_cfg=lora_cfg if stacked is not None else None,
                               max_new_tokens=max_new_tokens, decode_chunk=decode_chunk)
    out_KxBxN = np.asarray(jax.device_get(out_KxBxN))
    for row, k in enumerate(live):
      for b, v in enumerate(views_per_task[k][start:start + per_call]):
        results[k].append(answer_from_tokens(v, out_KxBxN[row, b]))
  return results

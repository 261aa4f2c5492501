"""Teacher-forced scoring of candidate answers, and product-of-experts (PoE) scores.

After the ARChitects' "Product of Experts with LLMs" (arXiv 2505.07859): a candidate grid
is scored under every augmented view of its task. Each view transforms both the task
(already in its prompt) and the candidate, so the model judges the candidate in the
view's own frame; the PoE score is the sum of the per-view log-probabilities, so it does
not depend on the frame the candidate was found in.

One forward pass scores a whole batch: sequence = prompt + answer tokens, right-padded
(causal attention never lets a real token see the padding behind it, and the compact
vocabulary's grid positions are counted from the left, so padding changes no score).
Tasks with their own adapters are scored together by vmapping over the stacked adapters.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.arc.task import Grid
from ttt_jax.data import tokens
from ttt_jax.infer.predict import bucket, pad_count
from ttt_jax.infer.views import View
from ttt_jax.model import blockwise, lora, transformer
from ttt_jax.parallel.sharding import to_device


def answer_tokens(view: View, candidate: Grid) -> np.ndarray:
  """The candidate as the view would answer it: transformed into the view's frame, then EOS."""
  grid = view.transform(np.asarray(candidate))
  return np.concatenate([tokens.encode_grid(grid), np.array([tokens.EOS], np.int32)])


def right_pad(prompts: Sequence[np.ndarray], answers: Sequence[np.ndarray], length: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(tokens_BxT, mask_BxT, answer_BxT)``: prompt + answer left-aligned, PAD behind;
  ``answer_BxT`` marks the answer tokens, the ones a score sums over."""
  B = len(prompts)
  tokens_BxT = np.full((B, length), tokens.PAD, np.int32)
  mask_BxT = np.zeros((B, length), bool)
  answer_BxT = np.zeros((B, length), bool)
  for b, (p, a) in enumerate(zip(prompts, answers)):
    n = len(p) + len(a)
    if n > length:
      raise ValueError(f"sequence of {n} tokens exceeds the padded length {length}")
    if len(p) == 0:
      raise ValueError("scoring needs a non-empty prompt: the first token has no prediction")
    tokens_BxT[b, :n] = np.concatenate([p, a])
    mask_BxT[b, :n] = True
    answer_BxT[b, len(p):n] = True
  return tokens_BxT, mask_BxT, answer_BxT


def _next_token_scores(params, adapter, tokens_BxT, mask_BxT, *, cfg, lora_cfg):
  """(log p(token t+1 | tokens up to t), whether it is the argmax) for t < T-1, blockwise: no
  BxTxV logits tensor (``ttt_jax.model.blockwise``)."""
  positions_BxT = transformer.positions_from_mask(mask_BxT)
  states_BxTxD, head_DxV = transformer.forward_hidden(params, adapter, tokens_BxT, positions_BxT, mask_BxT,
                                                      cfg=cfg, lora_cfg=lora_cfg)
  return blockwise.target_logprobs(transformer.Hidden(states_BxTxD[:, :-1], head_DxV), tokens_BxT[:, 1:])


def sequence_logprobs(params, adapter, tokens_BxT, mask_BxT, answer_BxT, *, cfg, lora_cfg=None
                      ) -> jax.Array:
  """Sum over the marked tokens of log p(token | everything before it): float32 scores_B."""
  logp_BxT, _ = _next_token_scores(params, adapter, tokens_BxT, mask_BxT, cfg=cfg, lora_cfg=lora_cfg)
  return jnp.sum(jnp.where(answer_BxT[:, 1:], logp_BxT, 0.0), axis=-1)


_sequence_logprobs_jit = jax.jit(sequence_logprobs, static_argnames=("cfg", "lora_cfg"))


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg"))
def _greedy_hits(params, adapter, tokens_BxT, mask_BxT, answer_BxT, *, cfg, lora_cfg):
  """Per row: (all answer tokens greedy, answer tokens greedy, answer tokens). A token is
  greedy when no logit beats the truth's (an exact tie counts for the truth)."""
  _, hit_BxT = _next_token_scores(params, adapter, tokens_BxT, mask_BxT, cfg=cfg, lora_cfg=lora_cfg)
  ans_BxT = answer_BxT[:, 1:].astype(bool)
  return (jnp.all(jnp.where(ans_BxT, hit_BxT, True), axis=-1),
          jnp.sum(hit_BxT & ans_BxT, axis=-1), jnp.sum(ans_BxT, axis=-1))


def _padded_rows(prompts: Sequence[np.ndarray], answers: Sequence[np.ndarray], length_multiple: int,
                 rows_multiple: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Right-padded (tokens, mask, answer marks) with the row count rounded up to a multiple of
  ``rows_multiple`` by rows that mark no answer token (callers drop them): few compiled shapes
  whatever the number of demonstrations or candidates."""
  extra = bucket(len(prompts), rows_multiple) - len(prompts)
  length = bucket(max(len(p) + len(a) for p, a in zip(prompts, answers)), length_multiple)
  return right_pad(list(prompts) + [prompts[0]] * extra, list(answers) + [np.zeros(0, np.int32)] * extra,
                   length)


def greedy_matches(params, adapter, prompts: Sequence[np.ndarray], answers: Sequence[np.ndarray],
                   *, cfg, lora_cfg=None, length_multiple: int = 64, rows_multiple: int = 8
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Teacher-forced greedy agreement of each answer, in one forward pass: (exact bool[n]:
  greedy decoding returns the whole answer, i.e. every answer token is the argmax given the
  answer before it; token accuracy float[n]: the fraction of answer tokens that are).
  Exact ties between logits count as the truth's token winning."""
  if not prompts:
    return np.zeros(0, bool), np.zeros(0)
  t, m, a = _padded_rows(prompts, answers, length_multiple, rows_multiple)
  exact, hits, total = _greedy_hits(params, to_device(adapter), *to_device((t, m, a)), cfg=cfg,
                                    lora_cfg=lora_cfg if adapter is not None else None)
  exact, hits, total = jax.device_get((exact, hits, total))
  n = len(prompts)
  return (np.asarray(exact, bool)[:n],
          np.asarray(hits, np.float64)[:n] / np.maximum(np.asarray(total)[:n], 1))


def answers_are_greedy(params, adapter, prompts: Sequence[np.ndarray],
                       answers: Sequence[np.ndarray], *, cfg, lora_cfg=None,
                       length_multiple: int = 64) -> np.ndarray:
  """Whether greedy decoding of each prompt returns exactly its answer: bool[n]
  (``greedy_matches``' first half)."""
  return greedy_matches(params, adapter, prompts, answers, cfg=cfg, lora_cfg=lora_cfg,
                        length_multiple=length_multiple)[0]


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg"))
def _sequence_logprobs_many(params, adapters_K, tokens_KxBxT, mask_KxBxT, answer_KxBxT, *, cfg,
                            lora_cfg):
  one = functools.partial(sequence_logprobs, params, cfg=cfg, lora_cfg=lora_cfg)
  return jax.vmap(one)(adapters_K, tokens_KxBxT, mask_KxBxT, answer_KxBxT)


def answer_logprobs(params, adapter, prompts: Sequence[np.ndarray], answers: Sequence[np.ndarray],
                    *, cfg, lora_cfg=None, length_multiple: int = 64, rows_multiple: int = 8) -> np.ndarray:
  """log p(answers[i] | prompts[i]) for each i, in one forward pass: float64 scores[n].

  Sequences are right-padded to a multiple of ``length_multiple`` and their count to a
  multiple of ``rows_multiple`` (few compiled shapes).
  """
  if not prompts:
    return np.zeros(0)
  t, m, a = _padded_rows(prompts, answers, length_multiple, rows_multiple)
  out = _sequence_logprobs_jit(params, to_device(adapter), *to_device((t, m, a)), cfg=cfg,
                               lora_cfg=lora_cfg if adapter is not None else None)
  return np.asarray(jax.device_get(out), np.float64)[:len(prompts)]


def _poe_rows(views: Sequence[View], candidates: Sequence[Grid]
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Prompts and answers of every (candidate, view) pair, candidate-major."""
  prompts = [v.prompt_T for _ in candidates for v in views]
  answers = [answer_tokens(v, c) for c in candidates for v in views]
  return prompts, answers


def poe_scores(params, adapter, views: Sequence[View], candidates: Sequence[Grid], *, cfg,
               lora_cfg=None, length_multiple: int = 64) -> np.ndarray:
  """Product-of-experts score of each candidate (in the task's own frame): the sum over
  ``views`` of its log-probability as that view's answer. float64 scores[n_candidates]."""
  if not candidates:
    return np.zeros(0)
  if not views:
    raise ValueError("poe_scores needs at least one view")
  prompts, answers = _poe_rows(views, candidates)
  per_row = answer_logprobs(params, adapter, prompts, answers, cfg=cfg, lora_cfg=lora_cfg,
                            length_multiple=length_multiple)
  return per_row.reshape(len(candidates), len(views)).sum(axis=1)


def poe_scores_many(params, adapters: Sequence[Any], views_per_task: Sequence[Sequence[View]],
                    candidates_per_task: Sequence[Sequence[Grid]], *, cfg, lora_cfg=None,
                    length_multiple: int = 64, rows_multiple: int = 8,
                    max_rows: Optional[int] = None, num_tasks: Optional[int] = None
                    ) -> list[np.ndarray]:
  """``poe_scores`` of K tasks in one call vmapped over their stacked adapters.

  Each task's (candidate, view) rows are padded to a common count (a multiple of
  ``rows_multiple``) with rows that mark no answer token, so they score 0 and are dropped.
  ``max_rows`` bounds the sequences (tasks x rows) of one forward pass (its attention scores
  are rows x heads x length^2): the rows then go through in equal slices, same scores.
  Every task needs an adapter, or none (the bare model). ``num_tasks`` pads the task axis to
  that many (copies of the first task, discarded): one program for every group of a stage.
  Returns per task scores[n_candidates].
  """
  if len(adapters) != len(views_per_task) or len(adapters) != len(candidates_per_task):
    raise ValueError(f"{len(adapters)} adapters, {len(views_per_task)} view lists, "
                     f"{len(candidates_per_task)} candidate lists")
  results = [np.zeros(0) for _ in adapters]
  live = [k for k, cs in enumerate(candidates_per_task) if cs]
  if not live:
    return results
  for k in live:
    if not views_per_task[k]:
      raise ValueError(f"task {k} has candidates but no views")
  have = [adapters[k] is not None for k in live]
  if any(have) and not all(have):
    raise ValueError("either every task has an adapter or none has")
  pad = pad_count(len(live), num_tasks) if all(have) else 0  # the bare model loops over tasks
  rows = {k: _poe_rows(views_per_task[k], candidates_per_task[k]) for k in live}
  n_rows = bucket(max(len(rows[k][0]) for k in live), rows_multiple)
  per_call = n_rows
  if max_rows:
    per_call = min(n_rows, max(rows_multiple, max_rows // (len(live) + pad) // rows_multiple
                                          * rows_multiple))
    n_rows = bucket(n_rows, per_call)
  length = bucket(max(len(p) + len(a) for k in live for p, a in zip(*rows[k])), length_multiple)
  toks, masks, marks = [], [], []
  for k in live:
    prompts, answers = rows[k]
    extra = n_rows - len(prompts)
    t, m, a = right_pad(prompts + [prompts[0]] * extra,
                        answers + [np.zeros(0, np.int32)] * extra, length)
    toks.append(t)
    masks.append(m)
    marks.append(a)
  stacked = lora.stack([adapters[k] for k in live + live[:1] * pad]) if all(have) else None
  toks, masks, marks = (np.stack(x + x[:1] * pad) for x in (toks, masks, marks))
  slices = []
  for s in range(0, n_rows, per_call):
    t, m, a = toks[:, s:s + per_call], masks[:, s:s + per_call], marks[:, s:s + per_call]
    if stacked is None:  # the bare model: the same function, no adapter axis
      slices.append(np.stack(jax.device_get([_sequence_logprobs_jit(
          params, None, *to_device((t[i], m[i], a[i])), cfg=cfg,
          lora_cfg=None) for i in range(len(live))])))
    else:
      slices.append(jax.device_get(_sequence_logprobs_many(
          params, stacked, *to_device((t, m, a)), cfg=cfg,
          lora_cfg=lora_cfg)))
  out = np.concatenate(slices, axis=1)
  for row, k in enumerate(live):
    n_c, n_v = len(candidates_per_task[k]), len(views_per_task[k])
    results[k] = out[row, :n_c * n_v].astype(np.float64).reshape(n_c, n_v).sum(axis=1)
  return results

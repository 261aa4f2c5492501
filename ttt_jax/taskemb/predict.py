"""Inference in the pair format: views, batched greedy decoding, inverse transforms, voting, PoE.

A view of a test input is (task vector, dihedral id, colour permutation): its prompt is
``BOS IN aug(input) OUT`` and its conditioning ``task_vec + aug_table[dihedral]``. Its answer
is parsed, mapped back by the inverse transform, and voted on with ``ttt_jax.voting`` (each
dihedral is a group). Views of many tasks decode in one batch (conditioning is per row); a
task with its own LoRA or weights decodes in its own batch.

Selection: the paper's hierarchical vote over the views' answers, or a product of experts
(``poe_scores``): every distinct answer is scored by its summed -log p under each dihedral view
of the pair (the ARChitects' selection), which can rank an answer that few views produced.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax import voting
from ttt_jax.arc import augment
from ttt_jax.arc.task import Grid, Pair, Task, grids_equal
from ttt_jax.data import tokens
from ttt_jax.model import decode
from ttt_jax.model.config import ModelConfig
from ttt_jax.taskemb import data, model

ANSWER_MAX = 30 * 31 + 1  # a 30x30 grid, its row ends and EOS


@dataclasses.dataclass(frozen=True)
class View:
  task: int  # index of the task in the call
  test_index: int
  aug: int
  colours: Optional[np.ndarray]  # colour permutation applied to the input (None: identity)
  prompt_T: np.ndarray

  @property
  def name(self) -> str:
    return data.DIHEDRAL[self.aug].name

  def invert(self, grid: Grid) -> Grid:
    if self.colours is not None:
      grid = np.argsort(self.colours)[grid].astype(np.int8)
    return augment.inverse(data.DIHEDRAL[self.aug])(grid)


def views_of(task: Task, task_pos: int, colour_views: int, seed: int, max_prompt: int
             ) -> list[View]:
  """8 dihedral views (x ``1 + colour_views`` colour permutations) of each test input."""
  out = []
  for j, p in enumerate(task.test):
    rng = np.random.default_rng((seed, j))
    perms = [None] + [data.random_colour_perm(rng) for _ in range(colour_views)]
    for perm in perms:
      for aug in range(data.NUM_AUGS):
        q = data.augment_pair(type(p)(p.input, None), aug, perm)
        prompt, _ = data.encode_pair(q.input)
        if len(prompt) <= max_prompt:
          out.append(View(task_pos, j, aug, perm, prompt))
  return out


PROMPT_MIN = 64  # fixed shapes: prompts are left-padded to a power of two at least this long


def _left_pad(prompts: Sequence[np.ndarray], rows: int = 0, bucketed: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded prompts; ``rows`` > len(prompts) repeats the last prompt (answers dropped), and
  ``bucketed`` rounds the length up to a power of two (masked, so the answers do not change)."""
  T = max(len(p) for p in prompts)
  if bucketed:
    T = max(PROMPT_MIN, 1 << (T - 1).bit_length())
  prompts = list(prompts) + [prompts[-1]] * max(0, rows - len(prompts))
  toks = np.full((len(prompts), T), tokens.PAD, np.int32)
  mask = np.zeros((len(prompts), T), bool)
  for i, p in enumerate(prompts):
    toks[i, T - len(p):], mask[i, T - len(p):] = p, True
  return toks, mask


def decode_views(base: dict, adapter: Optional[dict], vec_BxD: np.ndarray, aug_table: jax.Array,
                 views: Sequence[View], *, cfg: ModelConfig, lora_cfg: Any = None,
                 chunk_rows: int = 64, max_answer: int = ANSWER_MAX, fixed_shapes: bool = False
                 ) -> list[Optional[Grid]]:
  """Greedy answers of ``views`` (one conditioning vector per view), None where unparsable.

  ``max_answer`` caps the generated tokens (a 30x30 answer needs 931). ``fixed_shapes``: every
  batch has ``chunk_rows`` rows and a power-of-two prompt length (at least ``PROMPT_MIN``), so a
  few programs compile for any number of views (an accelerator's choice: on a CPU the
  padding rows cost more than a compile saves).
  """
  order = np.argsort([len(v.prompt_T) for v in views], kind="stable")  # similar lengths together
  answers: list[Optional[Grid]] = [None] * len(views)
  for start in range(0, len(views), chunk_rows):
    rows = order[start:start + chunk_rows]
    toks, mask = _left_pad([views[i].prompt_T for i in rows], rows=chunk_rows if fixed_shapes else 0,
                           bucketed=fixed_shapes)
    n_new = min(max_answer, cfg.max_seq_len - toks.shape[1])
    padded = np.concatenate([rows, np.repeat(rows[-1:], toks.shape[0] - len(rows))])
    cond = jnp.asarray(vec_BxD)[padded] + jnp.take(aug_table, jnp.asarray([views[i].aug for i in padded]), axis=0)
    new = np.asarray(decode.generate(base, adapter, toks, mask, cfg=cfg, lora_cfg=lora_cfg, max_new_tokens=n_new,
                                     eos_id=tokens.EOS, pad_id=tokens.PAD, grid_stop=True, cond_BxD=cond))
    for r, i in enumerate(rows):
      g = tokens.decode_answer(new[r])
      answers[int(i)] = None if g is None else views[int(i)].invert(g)
  return answers


def vote(views: Sequence[View], answers: Sequence[Optional[Grid]], num_tests: int, k: int = 2
         ) -> list[list[Grid]]:
  """Per test input, the top-``k`` grids by the paper's hierarchical vote over dihedral groups."""
  out = []
  for j in range(num_tests):
    cands = [(a, v.name) for v, a in zip(views, answers) if v.test_index == j and a is not None]
    out.append(voting.attempts(voting.hierarchical_vote(cands), k) if cands else [])
  return out


def distinct_answers(views: Sequence[View], answers: Sequence[Optional[Grid]], test_index: int
                     ) -> list[Grid]:
  """The distinct parsed answers for one test input, most frequent first (first seen on ties)."""
  grids: list[Grid] = []
  counts: list[int] = []
  for v, a in zip(views, answers):
    if v.test_index != test_index or a is None:
      continue
    k = next((i for i, g in enumerate(grids) if grids_equal(g, a)), None)
    if k is None:
      grids.append(a)
      counts.append(1)
    else:
      counts[k] += 1
  order = sorted(range(len(grids)), key=lambda i: -counts[i])  # stable: first seen on ties
  return [grids[i] for i in order]


SCORE_LENGTHS = (64, 128, 256, 512, 1024, 2048)  # scoring batches padded to these (few compiles)
SCORE_ROWS = 8  # and their rows to a multiple of this


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg"))
def _row_nll_jit(base, lora, vec_BxD, aug_table, batch, *, cfg, lora_cfg):
  return model.row_nll(base, lora, vec_BxD, aug_table, batch, cfg=cfg, lora_cfg=lora_cfg)


def poe_scores(base: dict, adapter: Optional[dict], vec_D: np.ndarray, aug_table: jax.Array,
               test_input: Grid, candidates: Sequence[Grid], *, cfg: ModelConfig, lora_cfg: Any = None,
               augs: Sequence[int] = tuple(range(data.NUM_AUGS)), chunk_rows: int = 64) -> np.ndarray:
  """C x A: -log p(candidate | task vector, dihedral view a) of the whole answer, for each view.

  The product of experts is the row sum (lower is better). Rows are padded to ``SCORE_ROWS``
  and lengths to ``SCORE_LENGTHS``; padding carries no weight, so the scores do not depend
  on it. A pair longer than the largest length (or the model's context) raises ValueError.
  """
  seqs, aug_B = [], []
  for c in candidates:
    for a in augs:
      q = data.augment_pair(Pair(test_input, np.asarray(c, np.int8)), a)
      seqs.append(data.encode_pair(q.input, q.output))
      aug_B.append(a)
  if not seqs:
    return np.zeros((len(candidates), len(augs)), np.float32)
  lengths = tuple(L for L in SCORE_LENGTHS if L < cfg.max_seq_len) + (cfg.max_seq_len - 1,)
  out = []
  for s0 in range(0, len(seqs), chunk_rows):
    chunk, chunk_aug = seqs[s0:s0 + chunk_rows], aug_B[s0:s0 + chunk_rows]
    n = len(chunk)
    rows = -(-n // SCORE_ROWS) * SCORE_ROWS
    length = data.bucket_length(max(len(t) for t, _ in chunk), lengths)
    batch = data.make_batch(chunk + [chunk[-1]] * (rows - n), [0] * rows, chunk_aug + [chunk_aug[-1]] * (rows - n),
                            length)
    vec = jnp.broadcast_to(jnp.asarray(vec_D), (rows, np.shape(vec_D)[-1]))
    out.append(np.asarray(_row_nll_jit(base, adapter, vec, aug_table, batch, cfg=cfg, lora_cfg=lora_cfg))[:n])
  return np.concatenate(out).reshape(len(candidates), len(augs))


def poe_attempts(candidates: Sequence[Grid], scores_CxA: np.ndarray, k: int = 2) -> list[Grid]:
  """The ``k`` candidates with the lowest summed -log p over views (earlier first on ties)."""
  total = np.asarray(scores_CxA, np.float64).sum(axis=-1)
  return [candidates[i] for i in np.argsort(total, kind="stable")[:k]]


def dfs_answers(base: dict, adapter: Optional[dict], vec_D: np.ndarray, aug_table: jax.Array,
                views: Sequence[View], *, cfg: ModelConfig, lora_cfg: Any = None, min_prob: float = 0.1,
                max_answer: int = ANSWER_MAX, max_expansions: int = 2000) -> list[list[Grid]]:
  """Per view, every answer with probability > ``min_prob`` under its conditioning (a
  depth-first search, ``ttt_jax.infer.dfs``), parsed and mapped back; most probable first.

  Greedy decoding returns one answer a view; an answer one unlikely token away from greedy's
  is found here, and a product of experts can then rank it.
  """
  from ttt_jax.infer import dfs  # pylint: disable=g-import-not-at-top
  out = []
  for v in views:
    cond = np.asarray(vec_D, np.float32) + np.asarray(aug_table[v.aug], np.float32)
    found = dfs.dfs_sample(base, adapter, v.prompt_T, cfg=cfg, lora_cfg=lora_cfg, min_prob=min_prob,
                           max_new_tokens=min(max_answer, cfg.max_seq_len - len(v.prompt_T)),
                           max_expansions=max_expansions, eos_id=tokens.EOS, cond_D=cond)
    grids = [tokens.decode_answer(toks) for toks, _ in found]
    out.append([v.invert(g) for g in grids if g is not None])
  return out

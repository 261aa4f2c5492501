"""Test-time self-training: the pieces of one EM round, as functions over plain records.

At test time the missing latent of an ARC task is its test output. A round
  E-step   takes each test input's leading candidate (``ttt_jax.infer.selection`` order) as a
           pseudo-label only when it passes a ``ConfidenceRule`` (vote share, PoE margin);
  M-step   appends the accepted pseudo-labelled pairs to the task's demonstrations, rebuilds
           its leave-one-out data with their own loss weight (``loo.build_ttt_dataset``'s
           ``pair_weights``) and continues training the task's adapter
           (``ttt.train_group(initial=...)``);
  verify   keeps the new adapter only if its leave-one-out accuracy on the task's *real*
           demonstrations did not drop (``loo_exact``: greedy exactness, teacher-forced).
After Ruan et al. 2025 (EM over latent thoughts) and DeepSearch 2025 (train on verified wins;
a task whose top candidate stops changing is cached and searched no more).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from ttt_jax.arc.task import Grid, Pair, Task
from ttt_jax.data import loo, tokens
from ttt_jax.infer import selection


@dataclasses.dataclass(frozen=True)
class ConfidenceRule:
  """When a leading candidate becomes a pseudo-label. Both tests must pass.

  ``min_vote_share``: its votes over all votes cast for the input (greedy and search answers);
  ``min_margin``: its PoE score minus the runner-up's, in nats (0: not required; a candidate
  without a score fails a positive margin; a lone scored candidate passes it).
  """
  min_vote_share: float = 0.5
  min_margin: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.min_vote_share <= 1.0:
      raise ValueError(f"min_vote_share must be in [0, 1], got {self.min_vote_share}")
    if self.min_margin < 0:
      raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")


def pseudo_label(record: dict, rule: ConfidenceRule, method: str = "vote") -> Optional[Grid]:
  """The E-step for one test input: its leading candidate under ``method`` if ``rule`` trusts
  it, else None."""
  order = selection.order(record, method)
  if not order:
    return None
  top = order[0]
  total = sum(c["count"] for c in record.get("candidates", ()))
  votes = next((c["count"] for c in record["candidates"]
                if np.asarray(c["grid"]).shape == np.asarray(top).shape
                and np.array_equal(c["grid"], top)), 0) if total else 0
  if total == 0 or votes / total < rule.min_vote_share:
    return None
  if rule.min_margin > 0:
    s0 = selection.score_of(record, top)
    if s0 is None:
      return None
    rest = [selection.score_of(record, g) for g in order[1:]]
    rest = [s for s in rest if s is not None]
    if rest and s0 - max(rest) < rule.min_margin:
      return None
  return np.asarray(top, np.int8)


def with_pseudo_labels(task: Task, labels: dict[int, Grid]) -> Task:
  """``task`` with each labelled test input appended to its demonstrations (test kept)."""
  extra = tuple(Pair(task.test[j].input, np.asarray(g, np.int8)) for j, g in sorted(labels.items()))
  return task.replace(train=tuple(task.train) + extra)


def m_step_dataset(task: Task, labels: dict[int, Grid], *, weight: float, n_max: int,
                   max_tokens: int, loss_mode: str = "all_outputs", augment: bool = True,
                   seed: int = 0) -> list:
  """The leave-one-out examples of ``task`` plus its pseudo-labelled pairs, each pseudo pair's
  output tokens weighted ``weight`` wherever it appears (demonstration or query)."""
  grown = with_pseudo_labels(task, labels)
  weights = [1.0] * len(task.train) + [float(weight)] * len(labels)
  return loo.build_ttt_dataset(grown, n_max=n_max, max_tokens=max_tokens, loss_mode=loss_mode,
                               augment=augment, seed=seed, mode="ours", pair_weights=weights)


def loo_rows(task: Task, max_tokens: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Prompt and answer tokens of each real demonstration as the query of the others
  (identity view, task order), for those that fit ``max_tokens``."""
  prompts, answers = [], []
  for i, pair in enumerate(task.train):
    others = [p for k, p in enumerate(task.train) if k != i]
    prompt = loo.inference_prompt(others, pair.input)
    answer = np.concatenate([tokens.encode_grid(pair.output), [tokens.EOS]]).astype(np.int32)
    if len(prompt) + len(answer) <= max_tokens:
      prompts.append(prompt)
      answers.append(answer)
  return prompts, answers


def loo_exact(params: Any, adapter: Any, task: Task, *, cfg: Any, lora_cfg: Any = None,
              max_tokens: Optional[int] = None) -> np.ndarray:
  """Per real demonstration (that fits), whether greedy decoding from the other
  demonstrations returns its output exactly: bool[n], one teacher-forced forward pass
  (``scoring.answers_are_greedy``)."""
  from ttt_jax.infer import scoring  # deferred: JAX
  prompts, answers = loo_rows(task, max_tokens or cfg.max_seq_len)
  return scoring.answers_are_greedy(params, adapter, prompts, answers, cfg=cfg, lora_cfg=lora_cfg)


def verified(before: np.ndarray, after: np.ndarray) -> bool:
  """The M-step's adapter is kept only if leave-one-out accuracy did not drop."""
  if before.shape != after.shape:
    raise ValueError(f"leave-one-out results of different lengths: {before.shape} vs {after.shape}")
  return int(np.sum(after)) >= int(np.sum(before))


def top_unchanged(before: Sequence[dict], after: Sequence[dict], method: str = "vote") -> bool:
  """Whether every test input's leading candidate is the same in two rounds' records (the
  task is then cached: no more rounds)."""
  def top(r):
    o = selection.order(r, method)
    return None if not o else np.asarray(o[0])
  for a, b in zip(before, after):
    ta, tb = top(a), top(b)
    if (ta is None) != (tb is None):
      return False
    if ta is not None and not (ta.shape == tb.shape and np.array_equal(ta, tb)):
      return False
  return len(before) == len(after)

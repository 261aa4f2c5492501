"""Augmented views of a test query, and mapping their answers back.

A view presents one test input under an invertible transform, with a subset of
the demonstrations (one left out by default, matching the TTT format) in one of
several orders. The model answers in the transformed frame; ``to_original``
applies the inverse transform so all views vote in the task's own frame.
Pure numpy: building views never needs the model.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Optional, Sequence, Union

import numpy as np

from ttt_jax.arc import augment
from ttt_jax.arc.task import MAX_SIDE, Grid, Pair, Task
from ttt_jax.data import loo, tokens

# Any answer grid up to 30x30: 30 rows of 30 cells and NL, then EOS (931 tokens).
FULL_ANSWER_TOKENS = MAX_SIDE * (MAX_SIDE + 1) + 1

AnswerBudget = Union[str, int]  # "full", "demos", or a number of tokens


@dataclasses.dataclass(frozen=True)
class View:
  task_id: str
  test_index: int
  transform: augment.Transform
  demo_order: tuple[int, ...]  # indices into task.train, in presentation order
  prompt_T: np.ndarray
  answer_tokens: int  # new tokens reserved for the answer (EOS included) when checking the fit

  def to_original(self, grid: Optional[Grid]) -> Optional[Grid]:
    return None if grid is None else augment.inverse(self.transform)(grid)


def answer_budget(task: Task, policy: AnswerBudget = "full") -> int:
  """New tokens an answer of ``task`` may take, EOS included; views reserve it, decoding gives it.

  ``"full"`` (default): any grid up to 30x30 (``FULL_ANSWER_TOKENS``), so a right answer is
  never cut off, whatever its size or the view's orientation. ``"demos"``: the largest
  demonstration output in either orientation (transposes and rotations swap rows and columns),
  plus EOS -- only for CPU smoke runs with short contexts: an answer larger than every
  demonstration output is cut off and so invalid. An int (or a string of digits, as the
  command line gives it): that many tokens.
  """
  if isinstance(policy, str) and policy.isdigit():
    policy = int(policy)
  if policy == "full":
    return FULL_ANSWER_TOKENS
  if policy == "demos":
    return max(max(h * (w + 1), w * (h + 1)) for h, w in (p.output.shape for p in task.train)) + 1
  if isinstance(policy, int) and not isinstance(policy, bool) and policy >= 2:
    return policy
  raise ValueError(f"answer budget must be 'full', 'demos' or an int >= 2, got {policy!r}")


def _subsets(n: int, leave_out: int) -> list[tuple[int, ...]]:
  """Demonstration subsets with ``leave_out`` of the n left out (at least one kept)."""
  keep = max(1, n - leave_out)
  return list(itertools.combinations(range(n), keep))


def _orders(subset: tuple[int, ...], n_orders: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
  orders = [subset]
  for _ in range(8 * n_orders):  # bounded: small subsets have few distinct orders
    if len(orders) >= n_orders:
      break
    cand = tuple(subset[i] for i in rng.permutation(len(subset)))
    if cand not in orders:
      orders.append(cand)
  return orders


def make_views(task: Task, test_index: int = 0, *,
               transforms: Sequence[augment.Transform] = augment.INFERENCE_TRANSFORMS,
               n_orders: int = 2, leave_out: int = 1, max_tokens: int = 8192,
               seed: int = 0, budget: AnswerBudget = "full") -> list[View]:
  """All views of one test input whose prompt plus ``answer_budget(task, budget)`` new tokens
  fit ``max_tokens``; each view records that budget (``answer_tokens``) for the decoder.

  With ``leave_out=1`` each view drops one demonstration (paper); when no view
  fits, one more demonstration is left out, down to a single demonstration.
  Returns an empty list when even that does not fit.
  """
  n = len(task.train)
  query = task.test[test_index].input
  answer_tokens = answer_budget(task, budget)
  prompt_limit = max_tokens - answer_tokens
  rng = loo.task_seed(f"{task.task_id}/{test_index}", seed)
  leave_out = min(leave_out, n - 1)
  while True:
    views = []
    for t in transforms:
      if not t.is_invertible:
        raise ValueError(f"inference views need bijective transforms; {t.name} is not")
      demos = [Pair(t(p.input), t(p.output)) for p in task.train]
      query_t = t(query)
      for subset in _subsets(n, leave_out):
        for order in _orders(subset, n_orders, rng):
          pairs = [demos[i] for i in order]
          if tokens.episode_num_tokens(pairs, query_t) > prompt_limit:
            continue
          views.append(View(task.task_id, test_index, t, order,
                            tokens.encode_episode(pairs, query_t)[0], answer_tokens))
    if views or leave_out >= n - 1:
      return views
    leave_out += 1

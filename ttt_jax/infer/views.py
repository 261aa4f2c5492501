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
  """The subset as given, then distinct random orders until there are ``n_orders`` (fewer when
  the subset has fewer orders: the draws are bounded)."""
  orders = [subset]
  for _ in range(8 * n_orders):  # bounded: small subsets have few distinct orders
    if len(orders) >= n_orders:
      break
    cand = tuple(subset[i] for i in rng.permutation(len(subset)))
    if cand not in orders:
      orders.append(cand)
  return orders


def _reference_orders(subset: tuple[int, ...], n_orders: int, rng: np.random.Generator
                      ) -> list[tuple[int, ...]]:
  """The subset as given, then ``n_orders - 1`` independent random orders, repeats dropped."""
  orders = [subset]
  for _ in range(n_orders - 1):
    cand = tuple(subset[i] for i in rng.permutation(len(subset)))
    if cand not in orders:
      orders.append(cand)
  return orders


Spec = tuple[augment.Transform, tuple[int, ...]]  # a view before encoding: transform, order


def _our_specs(n: int, leave_out: int, transforms: Sequence[augment.Transform], n_orders: int,
               rng: np.random.Generator) -> list[Spec]:
  """Every transform x every subset x ``n_orders`` distinct orders."""
  return [(t, order) for t in transforms for subset in _subsets(n, leave_out)
          for order in _orders(subset, n_orders, rng)]


def _reference_specs(n: int, leave_out: int, transforms: Sequence[augment.Transform],
                     n_orders: int, rng: np.random.Generator) -> list[Spec]:
  """The reference code's views: identity x every subset x its orders, then one view per other
  transform, of an identity view's demonstration order drawn uniformly at random."""
  identity = [(augment.IDENTITY, order) for subset in _subsets(n, leave_out)
              for order in _reference_orders(subset, n_orders, rng)]
  others = [(t, identity[int(rng.integers(len(identity)))][1])
            for t in transforms if not t.is_identity]
  return identity + others


VIEW_SCHEMES = {"ours": _our_specs, "reference": _reference_specs}
# The reference code's transforms: identity, then transpose, both flips, rot90 and rot180.
REFERENCE_TRANSFORMS = (augment.IDENTITY, augment.TRANSPOSE, augment.FLIP_UD, augment.FLIP_LR,
                        augment.ROT90, augment.ROT180)


def make_views(task: Task, test_index: int = 0, *,
               transforms: Optional[Sequence[augment.Transform]] = None,
               n_orders: int = 2, leave_out: int = 1, max_tokens: int = 8192,
               seed: int = 0, budget: AnswerBudget = "full", scheme: str = "ours") -> list[View]:
  """All views of one test input whose prompt plus ``answer_budget(task, budget)`` new tokens
  fit ``max_tokens``; each view records that budget (``answer_tokens``) for the decoder.

  ``scheme="ours"`` (default; ``transforms`` default ``augment.INFERENCE_TRANSFORMS``): every
  transform x every demonstration subset x ``n_orders`` orders, where ``n_orders`` counts the
  distinct orders per subset -- the subset's own order first, then distinct random
  permutations (fewer when the subset has fewer orders).

  ``scheme="reference"`` (the paper's reference code; ``transforms`` default
  ``REFERENCE_TRANSFORMS``, which must include the identity): identity x every subset x
  ``n_orders`` orders, where ``n_orders`` counts the subset's own order plus ``n_orders - 1``
  independent random permutations, repeats dropped (the reference's ``permute_n=2`` is
  ``n_orders=3``); then one view per other transform, built from an identity view drawn at
  random. A view whose prompt repeats an earlier view's (an identity view's, e.g. flip_lr of a
  task symmetric under it) is skipped.

  With ``leave_out=1`` each view drops one demonstration (paper); when no view fits, one
  more demonstration is left out, down to a single demonstration. Returns an empty list when
  even that does not fit. Orders and draws are seeded per (task, test input, ``seed``).
  """
  if scheme not in VIEW_SCHEMES:
    raise ValueError(f"view scheme must be one of {sorted(VIEW_SCHEMES)}, got {scheme!r}")
  if transforms is None:
    transforms = REFERENCE_TRANSFORMS if scheme == "reference" else augment.INFERENCE_TRANSFORMS
  for t in transforms:
    if not t.is_invertible:
      raise ValueError(f"inference views need bijective transforms; {t.name} is not")
  if scheme == "reference" and not any(t.is_identity for t in transforms):
    raise ValueError("the reference view scheme builds its views from identity views")
  n = len(task.train)
  query = task.test[test_index].input
  answer_tokens = answer_budget(task, budget)
  prompt_limit = max_tokens - answer_tokens
  rng = loo.task_seed(f"{task.task_id}/{test_index}", seed)
  leave_out = min(leave_out, n - 1)
  framed: dict[augment.Transform, tuple[list[Pair], Grid]] = {}  # demos and query per frame
  while True:
    views, seen = [], set()
    for t, order in VIEW_SCHEMES[scheme](n, leave_out, transforms, n_orders, rng):
      if t not in framed:
        framed[t] = ([Pair(t(p.input), t(p.output)) for p in task.train], t(query))
      demos, query_t = framed[t]
      pairs = [demos[i] for i in order]
      if tokens.episode_num_tokens(pairs, query_t) > prompt_limit:
        continue
      prompt_T = tokens.encode_episode(pairs, query_t)[0]
      if scheme == "reference":
        if prompt_T.tobytes() in seen:
          continue
        seen.add(prompt_T.tobytes())
      views.append(View(task.task_id, test_index, t, order, prompt_T, answer_tokens))
    if views or leave_out >= n - 1:
      return views
    leave_out += 1

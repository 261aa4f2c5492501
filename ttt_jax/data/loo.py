"""Leave-one-out test-time-training data, with augmentations and loss masks.

For a task with n demonstrations, each demonstration in turn becomes the query
and the others its context (leave-one-out); leave-two-out episodes (one more
demonstration dropped) top the set up to ``n_max``. Every episode is built under
each augmentation (the paper's 23 plus identity), each with a colour permutation
and a demonstration shuffle. Episodes longer than ``max_tokens`` are dropped;
because leave-two-out episodes are shorter, they are also the paper's fallback
when no leave-one-out episode fits. Everything is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from typing import Sequence

import numpy as np

from ttt_jax.arc import augment as aug_lib
from ttt_jax.arc.task import Grid, Pair, Task
from ttt_jax.data import tokens

# Which tokens carry loss. "all_outputs" is the paper's default: outputs of
# demonstrations 2..k and the query; "query": the query output only; "all": every
# predictable token (inputs too).
LOSS_MODES = ("query", "all_outputs", "all")


@dataclasses.dataclass(frozen=True)
class Example:
  """One training sequence; ``loss_mask_T[t]`` marks token t as a target (predicted from < t)."""
  tokens_T: np.ndarray
  loss_mask_T: np.ndarray
  task_id: str = ""
  kind: str = "episode"
  transform: str = "identity"

  def __len__(self) -> int:
    return int(self.tokens_T.shape[0])


def loss_mask(pair_index_T: np.ndarray, num_demos: int, mode: str) -> np.ndarray:
  if mode == "query":
    return pair_index_T == num_demos
  if mode == "all_outputs":
    return pair_index_T >= 1
  if mode == "all":
    mask = np.ones(pair_index_T.shape, bool)
    mask[0] = False
    return mask
  raise ValueError(f"unknown loss mode {mode!r}; expected one of {LOSS_MODES}")


def episode_example(demos: Sequence[Pair], query: Pair, loss_mode: str = "all_outputs",
                    task_id: str = "", kind: str = "episode",
                    transform: str = "identity") -> Example:
  """One in-context episode (demos, then the query with its answer) as a training example."""
  tokens_T, pair_index_T = tokens.encode_episode(demos, query.input, query.output)
  return Example(tokens_T, loss_mask(pair_index_T, len(demos), loss_mode), task_id, kind,
                 transform)


def leave_one_out(n: int) -> list[tuple[int, tuple[int, ...]]]:
  """``(query, context)`` index pairs: each demo once the query, all others the context."""
  if n < 2:
    return []
  return [(q, tuple(i for i in range(n) if i != q)) for q in range(n)]


def leave_two_out(n: int) -> list[tuple[int, tuple[int, ...]]]:
  """``(query, context)`` with one further demonstration left out (needs n >= 3)."""
  if n < 3:
    return []
  return [(q, tuple(i for i in range(n) if i not in (q, d)))
          for q, d in itertools.permutations(range(n), 2)]


def task_seed(task_id: str, seed: int) -> np.random.Generator:
  """A generator that differs per task but is stable across runs and processes."""
  return np.random.default_rng([seed, zlib.crc32(task_id.encode())])


def _num_tokens(pairs: Sequence[Pair], query: int, context: Sequence[int]) -> int:
  return tokens.episode_num_tokens([pairs[i] for i in context], pairs[query].input,
                                   pairs[query].output)


@dataclasses.dataclass(frozen=True)
class _Spec:
  view: int
  query: int
  context: tuple[int, ...]
  kind: str


def build_ttt_dataset(task: Task, *, n_max: int = 250, max_tokens: int = 8192,
                      loss_mode: str = "all_outputs", augment: bool = True,
                      leave_two_out_topup: bool = True, seed: int = 0) -> list[Example]:
  """The task's TTT examples: shuffled, at most ``n_max``, each at most ``max_tokens`` long.

  Only demonstrations are used (never test inputs). Returns an empty list when
  the task has fewer than 2 demonstrations or no episode fits the budget; the
  caller records that and skips TTT for the task.
  """
  if loss_mode not in LOSS_MODES:
    raise ValueError(f"unknown loss mode {loss_mode!r}; expected one of {LOSS_MODES}")
  rng = task_seed(task.task_id, seed)
  n = len(task.train)
  transforms = [aug_lib.IDENTITY]
  if augment:
    transforms += aug_lib.ttt_augmentations(rng)
  views: list[tuple[str, tuple[Pair, ...]]] = []
  for i, t in enumerate(transforms):
    if i > 0:  # every augmented copy also gets its own colour permutation
      t = t.then(aug_lib.random_colour_permutation(task, rng))
    aug = aug_lib.augment_task(task.replace(test=task.train[:1]), t)
    if aug is not None:
      views.append((t.name, aug.train))

  def specs(kind: str, index_sets) -> list[_Spec]:
    out = []
    for v, (_, pairs) in enumerate(views):
      for q, context in index_sets:
        if augment:
          context = tuple(int(c) for c in rng.permutation(context))
        if _num_tokens(pairs, q, context) <= max_tokens:
          out.append(_Spec(v, q, context, kind))
    order = rng.permutation(len(out))
    return [out[i] for i in order]

  chosen = specs("loo", leave_one_out(n))[:n_max]
  if leave_two_out_topup and len(chosen) < n_max:
    chosen += specs("l2o", leave_two_out(n))[: n_max - len(chosen)]
  chosen = [chosen[i] for i in rng.permutation(len(chosen))]
  examples = []
  for s in chosen:
    name, pairs = views[s.view]
    examples.append(episode_example([pairs[i] for i in s.context], pairs[s.query], loss_mode,
                                    task.task_id, s.kind, name))
  return examples


def inference_prompt(demos: Sequence[Pair], query_input: Grid) -> np.ndarray:
  """Prompt tokens for decoding: the episode up to and including ``OUT``."""
  return tokens.encode_episode(demos, query_input)[0]

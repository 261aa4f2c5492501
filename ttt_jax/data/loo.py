"""Leave-one-out test-time-training data, with augmentations and loss masks.

For a task with n demonstrations, each demonstration in turn becomes the query
and the others its context (leave-one-out); leave-two-out episodes (one more
demonstration dropped) top the set up to ``n_max``. Every episode is built under
each augmentation (the paper's 23 plus identity), each with a colour permutation
and a demonstration shuffle. Episodes longer than ``max_tokens`` are dropped;
because leave-two-out episodes are shorter, they are also the paper's fallback
when no leave-one-out episode fits. Everything is deterministic for a seed.

``mode="reference"`` builds the set the way the paper's code does instead (see
``_reference_dataset``): unpermuted and colour-permuted copies of every episode,
zero-demonstration episodes for tasks with one or two demonstrations, duplicates
removed, and its cap (leave-two-out episodes uncapped when no leave-one-out one fits).
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from typing import Iterable, Optional, Sequence

import numpy as np

from ttt_jax.arc import augment as aug_lib
from ttt_jax.arc.task import Grid, Pair, Task
from ttt_jax.data import tokens

# Which tokens carry loss. "all_outputs" is the paper's default: outputs of
# demonstrations 2..k and the query; "query": the query output only; "all": every
# predictable token (inputs too).
LOSS_MODES = ("query", "all_outputs", "all")
# How episodes are chosen: "ours" (the default) or "reference" (the paper's code).
DATA_MODES = ("ours", "reference")


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
  if mode == "all_outputs":  # the query always counts, also with no demonstration before it
    return (pair_index_T >= 1) | (pair_index_T == num_demos)
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


def leave_k_out(n: int, k: int) -> list[tuple[int, tuple[int, ...]]]:
  """``(query, context)``: each demo once the query, ``k - 1`` more left out; the context
  (in index order) is empty when ``n == k``, as the reference code allows."""
  out = []
  for q in range(n):
    others = [i for i in range(n) if i != q]
    for dropped in itertools.combinations(others, k - 1):
      out.append((q, tuple(i for i in others if i not in dropped)))
  return out


def leave_one_out(n: int) -> list[tuple[int, tuple[int, ...]]]:
  """``(query, context)`` index pairs: each demo once the query, all others the context."""
  return leave_k_out(n, 1) if n >= 2 else []


def leave_two_out(n: int) -> list[tuple[int, tuple[int, ...]]]:
  """``(query, context)`` with one further demonstration left out (needs n >= 3)."""
  return leave_k_out(n, 2) if n >= 3 else []


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


@dataclasses.dataclass(frozen=True)
class _Episode:
  """An episode as grids: reference mode deduplicates on them before tokenising."""
  demos: tuple[Pair, ...]
  query: Pair
  transform: aug_lib.Transform
  kind: str
  indices: tuple[int, ...] = ()  # task.train index of each demo, then of the query ("ours")

  def key(self) -> tuple:
    return tuple((g.shape, g.tobytes()) for p in self.demos + (self.query,)
                 for g in (p.input, p.output))


def build_ttt_dataset(task: Task, *, n_max: int = 250, max_tokens: int = 8192,
                      loss_mode: str = "all_outputs", augment: bool = True,
                      leave_two_out_topup: bool = True, seed: int = 0,
                      mode: str = "ours", pair_weights: Optional[Sequence[float]] = None
                      ) -> list[Example]:
  """The task's TTT examples: shuffled, at most ``n_max``, each at most ``max_tokens`` long.

  Only demonstrations are used (never test inputs). Returns an empty list when
  the task has fewer than 2 demonstrations or no episode fits the budget; the
  caller records that and skips TTT for the task. ``mode="reference"`` differs
  (``_reference_dataset``): one demonstration is enough, examples are shorter than
  ``max_tokens``, and more than ``n_max`` come back when only leave-two-out ones fit.

  ``pair_weights`` (one per ``task.train`` pair; "ours" mode only) scales the loss of each
  pair's output tokens wherever the pair appears, as a demonstration or as the query; the
  loss masks are then float32 weights. Self-training (``ttt_jax.selftrain``) appends
  pseudo-labelled test pairs to ``task.train`` and gives them their own weight this way.
  """
  if loss_mode not in LOSS_MODES:
    raise ValueError(f"unknown loss mode {loss_mode!r}; expected one of {LOSS_MODES}")
  if mode not in DATA_MODES:
    raise ValueError(f"unknown TTT data mode {mode!r}; expected one of {DATA_MODES}")
  if pair_weights is not None:
    if mode != "ours":
      raise ValueError(f"task {task.task_id}: pair_weights need data mode 'ours', got {mode!r}")
    if len(pair_weights) != len(task.train):
      raise ValueError(f"task {task.task_id}: {len(pair_weights)} pair weights for "
                       f"{len(task.train)} demonstrations")
  rng = task_seed(task.task_id, seed)
  transforms = [aug_lib.IDENTITY]
  if augment:
    transforms += aug_lib.ttt_augmentations(rng)
  if mode == "reference":
    episodes = _reference_dataset(task, transforms, n_max=n_max, max_tokens=max_tokens,
                                  augment=augment, leave_two_out_topup=leave_two_out_topup,
                                  rng=rng)
  else:
    episodes = _our_dataset(task, transforms, n_max=n_max, max_tokens=max_tokens,
                            augment=augment, leave_two_out_topup=leave_two_out_topup, rng=rng)
  episodes = [episodes[i] for i in rng.permutation(len(episodes))]
  examples = [episode_example(e.demos, e.query, loss_mode, task.task_id, e.kind,
                              e.transform.name) for e in episodes]
  if pair_weights is not None:
    examples = [_weighted(ex, e, pair_weights) for ex, e in zip(examples, episodes)]
  return examples


def _weighted(example: Example, episode: _Episode, pair_weights: Sequence[float]) -> Example:
  """``example`` with each pair's output tokens weighted by that pair's weight."""
  _, pair_index_T = tokens.encode_episode(episode.demos, episode.query.input,
                                          episode.query.output)
  w_P = np.asarray([pair_weights[i] for i in episode.indices] + [1.0], np.float32)
  w_T = w_P[pair_index_T]  # index -1 (inputs, markers) reads the trailing 1.0
  return dataclasses.replace(example, loss_mask_T=example.loss_mask_T.astype(np.float32) * w_T)


def _our_dataset(task: Task, transforms: Sequence[aug_lib.Transform], *, n_max: int,
                 max_tokens: int, augment: bool, leave_two_out_topup: bool,
                 rng: np.random.Generator) -> list[_Episode]:
  """One colour permutation per augmented view of the whole task, each episode once."""
  n = len(task.train)
  views: list[tuple[aug_lib.Transform, tuple[Pair, ...]]] = []
  for i, t in enumerate(transforms):
    if i > 0:  # every augmented copy also gets its own colour permutation
      t = t.then(aug_lib.random_colour_permutation(task, rng))
    aug = aug_lib.augment_task(task.replace(test=task.train[:1]), t)
    if aug is not None:
      views.append((t, aug.train))

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
  out = []
  for s in chosen:
    t, pairs = views[s.view]
    out.append(_Episode(tuple(pairs[i] for i in s.context), pairs[s.query], t, s.kind,
                        tuple(s.context) + (s.query,)))
  return out


def _reference_dataset(task: Task, transforms: Sequence[aug_lib.Transform], *, n_max: int,
                       max_tokens: int, augment: bool, leave_two_out_topup: bool,
                       rng: np.random.Generator) -> list[_Episode]:
  """The paper code's set: leave-one-out episodes (the query alone when n == 1), topped up
  with leave-two-out ones (the query alone when n == 2), each under every transform that keeps
  its own grids within 30x30 plus a colour-permuted, demo-shuffled copy, deduplicated, shorter
  than ``max_tokens``. More than ``n_max`` leave-one-out episodes: a random ``n_max`` of them;
  none: every leave-two-out episode (uncapped, as the reference does)."""
  views = [(t, _transformed_pairs(task.train, t)) for t in transforms]

  def kept(kind: str, index_sets) -> list[_Episode]:  # the reference drops >= max_tokens
    return [e for e in _reference_episodes(views, index_sets, kind, augment, rng)
            if tokens.episode_num_tokens(e.demos, e.query.input, e.query.output) < max_tokens]

  n = len(task.train)
  l1 = kept("loo", leave_k_out(n, 1))
  l2 = kept("l2o", leave_k_out(n, 2)) if leave_two_out_topup else []
  if not l1:
    return l2
  if len(l1) < n_max:
    return l1 + [l2[i] for i in rng.permutation(len(l2))[: n_max - len(l1)]]
  return [l1[i] for i in rng.permutation(len(l1))[:n_max]]


def _transformed_pairs(pairs: Sequence[Pair], t: aug_lib.Transform) -> list[Optional[Pair]]:
  """Each pair under ``t``; None where a grid outgrows 30x30 (only episodes using it drop)."""
  out: list[Optional[Pair]] = []
  for p in pairs:
    i, o = t(p.input), t(p.output)
    out.append(Pair(i, o) if aug_lib.fits(i) and aug_lib.fits(o) else None)
  return out


def _unique(episodes: Iterable[_Episode]) -> list[_Episode]:
  """First occurrence of every distinct episode (same grids, same demonstration order)."""
  seen: dict[tuple, _Episode] = {}
  for e in episodes:
    seen.setdefault(e.key(), e)
  return list(seen.values())


def _reference_episodes(views, index_sets, kind: str, augment: bool,
                        rng: np.random.Generator) -> list[_Episode]:
  """Every episode under every view, deduplicated, and a copy of each with its own colour
  permutation (drawn from the episode's colours; with ``augment`` only) and shuffled demos."""
  plain = _unique(_Episode(tuple(pairs[i] for i in c), pairs[q], t, kind)
                  for t, pairs in views for q, c in index_sets
                  if all(pairs[i] is not None for i in (q,) + c))
  copies = []
  for e in plain:
    t, demos, query = e.transform, e.demos, e.query
    if augment:
      colours = aug_lib.random_colour_permutation(Task("", demos, (query,)), rng)
      demos = tuple(Pair(colours(p.input), colours(p.output)) for p in demos)
      query, t = Pair(colours(query.input), colours(query.output)), t.then(colours)
    copies.append(_Episode(tuple(demos[i] for i in rng.permutation(len(demos))), query, t, kind))
  return _unique(plain + copies)


def inference_prompt(demos: Sequence[Pair], query_input: Grid) -> np.ndarray:
  """Prompt tokens for decoding: the episode up to and including ``OUT``."""
  return tokens.encode_episode(demos, query_input)[0]

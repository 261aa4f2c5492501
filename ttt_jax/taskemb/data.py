"""The pair format: one input -> output pair per sequence, named by (task, augmentation) ids.

A sequence is ``BOS IN input OUT output EOS`` on the compact vocabulary
(``ttt_jax.data.tokens``: the in-context episode with no demonstrations), so grid
positions, answer parsing and grid-stopped decoding all apply unchanged. What the
in-context format says with demonstrations, this format says with a learned task
embedding (mdlARC, TRM): 3-5x shorter sequences and prompts. The augmentation id is the
dihedral transform applied to every grid of the pair (its own embedding); colour
permutations are applied too but not named.

A ``Pool`` is a finite list of tasks, one embedding row each: the ARC-AGI-1 training
tasks (every pair, test pairs included) and generated instances of generator families
(one hidden rule each, many pairs). Sampling is a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ttt_jax.arc import augment
from ttt_jax.arc.task import Grid, Pair, Task
from ttt_jax.data import tokens

# The eight dihedral transforms; an augmentation id is an index into this tuple.
DIHEDRAL = (augment.IDENTITY, augment.ROT90, augment.ROT180, augment.ROT270, augment.FLIP_UD,
            augment.FLIP_LR, augment.TRANSPOSE, augment.TRANSPOSE.then(augment.ROT180))
NUM_AUGS = len(DIHEDRAL)


class PairBatch(NamedTuple):
  """Right-padded pair sequences. ``weights`` marks the loss tokens (output cells, NL, EOS)."""
  tokens: np.ndarray  # BxT int32 (PAD after the sequence)
  mask: np.ndarray  # BxT bool, real tokens
  targets: np.ndarray  # BxT int32, the next token
  weights: np.ndarray  # BxT float32, 1 where targets is an output token
  task: np.ndarray  # B int32, row of the task embedding table
  aug: np.ndarray  # B int32, index into DIHEDRAL


def encode_pair(inp: Grid, out: Optional[Grid] = None) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens_T, is_output_T)``; without ``out`` the sequence ends with OUT (a prompt)."""
  toks, pair_index = tokens.encode_episode([], inp, out)
  return toks, pair_index >= 0


def pair_num_tokens(p: Pair) -> int:
  """Tokens of the pair's sequence under its longest dihedral view (transposes change it)."""
  t = augment.TRANSPOSE
  return max(tokens.episode_num_tokens([], p.input, p.output),
             tokens.episode_num_tokens([], t(p.input), None if p.output is None else t(p.output)))


def make_batch(seqs: Sequence[tuple[np.ndarray, np.ndarray]], task_B: Sequence[int],
               aug_B: Sequence[int], length: int, input_loss: float = 0.0) -> PairBatch:
  """Right-pads encoded pairs to ``length``; loss on output tokens (``input_loss`` on the rest)."""
  B = len(seqs)
  toks = np.full((B, length + 1), tokens.PAD, np.int32)
  is_out = np.zeros((B, length + 1), bool)
  mask = np.zeros((B, length + 1), bool)
  for b, (t, o) in enumerate(seqs):
    if len(t) > length + 1:
      raise ValueError(f"make_batch: a sequence of {len(t)} tokens exceeds length {length} + 1")
    toks[b, :len(t)], is_out[b, :len(t)], mask[b, :len(t)] = t, o, True
  # target t+1 predicted at t: weight where the target is real (an output token: full weight)
  w = np.where(is_out[:, 1:], 1.0, np.where(mask[:, 1:], input_loss, 0.0)).astype(np.float32)
  # inputs are the tokens that have a target (the last one, EOS, is never an input)
  return PairBatch(toks[:, :-1], mask[:, 1:], toks[:, 1:], w, np.asarray(task_B, np.int32),
                   np.asarray(aug_B, np.int32))


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """Smallest bucket holding a sequence of ``n`` tokens as inputs (``n - 1`` positions)."""
  for b in buckets:
    if n - 1 <= b:
      return b
  raise ValueError(f"a sequence of {n} tokens exceeds the largest bucket {buckets[-1]}")


def augment_pair(p: Pair, aug: int, colour_perm: Optional[np.ndarray] = None) -> Pair:
  t = DIHEDRAL[aug]
  i, o = t(p.input), None if p.output is None else t(p.output)
  if colour_perm is not None:
    i = colour_perm[i].astype(np.int8)
    o = None if o is None else colour_perm[o].astype(np.int8)
  return Pair(i, o)


def random_colour_perm(rng: np.random.Generator) -> np.ndarray:
  """A permutation of colours 1..9 with 0 (the usual background) kept, as the paper's."""
  return np.concatenate([[0], 1 + rng.permutation(9)]).astype(np.int8)


@dataclasses.dataclass(frozen=True)
class Pool:
  """Tasks with one embedding row each; ``pairs[i]`` are task i's pairs with outputs."""
  task_ids: tuple[str, ...]
  pairs: tuple[tuple[Pair, ...], ...]

  def __len__(self) -> int:
    return len(self.task_ids)


def pool_from_tasks(tasks: Sequence[Task], max_tokens: int) -> Pool:
  """Every pair with an output and at most ``max_tokens`` tokens in every dihedral view; tasks
  left with none are dropped."""
  ids, pairs = [], []
  for t in tasks:
    ps = tuple(p for p in t.train + t.test if p.output is not None and pair_num_tokens(p) <= max_tokens)
    if ps:
      ids.append(t.task_id)
      pairs.append(ps)
  return Pool(tuple(ids), tuple(pairs))


def generated_tasks(families: Sequence[str], per_family: int, pairs_per_task: int,
                    difficulty: tuple[float, float], seed: int) -> list[Task]:
  """``per_family`` instances (one hidden rule each) of every family, ``pairs_per_task`` pairs each.

  Deterministic in ``seed``; a family that fails to generate is skipped with its reason
  printed (generators raise GenerationError naming it).
  """
  from ttt_jax.arc import generators  # pylint: disable=g-import-not-at-top
  out = []
  for f_i, fam in enumerate(sorted(families)):
    for k in range(per_family):
      rng = np.random.default_rng((seed, f_i, k))
      diff = float(rng.uniform(*difficulty))
      try:
        t = generators.generate(fam, rng, diff, n_train=pairs_per_task - 1)
      except generators.GenerationError as e:
        print(f"generated_tasks: skipped {fam} #{k}: {e}")
        continue
      out.append(Task(f"gen/{fam}/{seed}-{k}", t.train, t.test))
  return out


def sample_batch(pool: Pool, seed: int, step: int, tokens_per_batch: int, buckets: Sequence[int],
                 input_loss: float = 0.0, colour: bool = True) -> PairBatch:
  """Batch ``step`` of the run seeded ``seed``.

  A first draw (uniform task, uniform pair, uniform dihedral, random colour permutation) sets
  the bucket length L; the batch is then ``tokens_per_batch // L`` such draws of that same
  bucket (so at least half of every row is real tokens). Every batch holds the same number of
  slots, and only ``len(buckets)`` shapes compile.
  """
  rng = np.random.default_rng((seed, step))

  def draw():
    ti = int(rng.integers(len(pool)))
    p = pool.pairs[ti][int(rng.integers(len(pool.pairs[ti])))]
    aug = int(rng.integers(NUM_AUGS))
    p = augment_pair(p, aug, random_colour_perm(rng) if colour else None)
    return encode_pair(p.input, p.output), ti, aug

  first = draw()
  length = bucket_length(len(first[0][0]), buckets)
  rows = max(1, tokens_per_batch // length)
  picked = [first]
  for _ in range(50 * rows):
    if len(picked) == rows:
      break
    d = draw()
    if bucket_length(len(d[0][0]), buckets) == length:
      picked.append(d)
  while len(picked) < rows:  # pools of long pairs only: repeat draws to keep the shape
    picked.append(picked[len(picked) % len(picked)])
  return make_batch([d[0] for d in picked], [d[1] for d in picked], [d[2] for d in picked], length,
                    input_loss)

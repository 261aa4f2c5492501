import numpy as np
import pytest

from ttt_jax.arc import io
from ttt_jax.arc.task import Pair
from ttt_jax.data import tokens


@pytest.fixture(scope="module")
def arc1_eval():
  tasks, _ = io.load_tasks("arc1-eval")
  return tasks


def test_grid_round_trip_on_every_arc1_eval_grid(arc1_eval):
  for t in arc1_eval:
    for p in t.train + t.test:
      for g in (p.input, p.output):
        enc = tokens.encode_grid(g)
        assert enc.shape[0] == tokens.grid_num_tokens(g)
        assert np.array_equal(tokens.decode_grid(enc), g)
        assert np.array_equal(tokens.decode_grid(np.r_[enc, tokens.EOS, 3, 4]), g)


def test_episode_round_trip_and_pair_index(arc1_eval):
  for t in arc1_eval[:100]:
    demos, q = list(t.train), t.test[0]
    toks, idx = tokens.encode_episode(demos, q.input, q.output)
    assert toks.shape == idx.shape
    assert len(toks) == tokens.episode_num_tokens(demos, q.input, q.output)
    pairs, query = tokens.decode_episode(toks)
    assert query is None and len(pairs) == len(demos) + 1
    for a, b in zip(pairs, demos + [q]):
      assert np.array_equal(a.input, b.input) and np.array_equal(a.output, b.output)
    # Output tokens of pair i decode to exactly that pair's output (plus its EOS).
    for i, p in enumerate(demos + [q]):
      seg = toks[idx == i]
      assert seg[-1] == tokens.EOS and np.array_equal(tokens.decode_grid(seg), p.output)
    prompt, pidx = tokens.encode_episode(demos, q.input)
    assert prompt[-1] == tokens.OUT and np.array_equal(prompt, toks[: len(prompt)])
    assert (pidx < len(demos)).all()
    _, qin = tokens.decode_episode(prompt)
    assert np.array_equal(qin, q.input)


@pytest.mark.parametrize("bad", [
    [], [tokens.NL], [1, 2], [1, 2, tokens.NL, 3, tokens.NL], [1, tokens.IN, tokens.NL],
    [tokens.EOS], [1, 2, tokens.NL, 3, 4], [1] * 31 + [tokens.NL],
    ([1, tokens.NL] * 31),
])
def test_decode_grid_never_raises_on_malformed(bad):
  assert tokens.decode_grid(bad) is None


def test_vocab_is_consistent():
  assert len(tokens.TOKEN_NAMES) == tokens.VOCAB_SIZE
  specials = {tokens.NL, tokens.IN, tokens.OUT, tokens.BOS, tokens.EOS, tokens.PAD}
  assert len(specials) == 6 and min(specials) == 10 and max(specials) == tokens.VOCAB_SIZE - 1


def test_decode_answer_requires_eos():
  g = np.array([[1, 2], [3, 4]], np.int8)
  enc = tokens.encode_grid(g)
  # A stream cut by the budget at a row end is a grid to decode_grid but not an answer.
  assert tokens.decode_grid(enc) is not None and tokens.decode_answer(enc) is None
  assert tokens.decode_answer(enc[:3]) is None  # cut after the first row: no EOS either
  assert np.array_equal(tokens.decode_answer(np.r_[enc, tokens.EOS]), g)
  assert np.array_equal(tokens.decode_answer(np.r_[enc, tokens.EOS, [tokens.PAD] * 5]), g)
  assert np.array_equal(tokens.decode_answer(np.r_[enc, tokens.EOS, 7, tokens.NL]), g)
  assert tokens.decode_answer(np.r_[enc, tokens.PAD, tokens.EOS]) is None  # PAD before EOS
  assert tokens.decode_answer(np.r_[enc[:4], tokens.EOS]) is None  # ragged rows
  assert tokens.decode_answer([tokens.EOS]) is None and tokens.decode_answer([]) is None

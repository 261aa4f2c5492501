import numpy as np
import pytest

from ttt_jax.arc import io
from ttt_jax.arc.task import Pair
from ttt_jax.data import text_format as tf


def test_numpy_print_style():
  g = np.array([[0, 0, 1], [1, 0, 0]], np.int8)
  assert tf.grid_to_text(g) == "[[0 0 1]\n [1 0 0]]"
  assert tf.grid_to_text(g) == str(g.astype(np.int64))


def test_round_trip_on_arc1_eval_grids_including_30_wide():
  tasks, _ = io.load_tasks("arc1-eval")
  widths = set()
  for t in tasks:
    for p in t.train + t.test:
      for g in (p.input, p.output):
        widths.add(g.shape[1])
        assert np.array_equal(tf.text_to_grid(tf.grid_to_text(g)), g)
        assert np.array_equal(tf.text_to_grid(tf.grid_to_text(g) + "#junk"), g)
  assert 30 in widths


@pytest.mark.parametrize("bad", ["", "[[1 2]\n [3]]", "[[1 a]]", "[[10 1]]", "[1 2]", "hello",
                                 "[[]]", "[[1 2]] [[3]]", None, "[[" + " ".join(["1"] * 31) + "]]",
                                 "[[-1 2]]"])
def test_malformed_text_gives_none(bad):
  assert tf.text_to_grid(bad) is None


def test_episode_text_layout():
  demos = [Pair(np.array([[1]], np.int8), np.array([[2]], np.int8))]
  prompt, target = tf.episode_text(demos, np.array([[3]], np.int8), np.array([[4]], np.int8))
  assert prompt.endswith("[[1]] -> [[2]]#\n[[3]] -> ")
  assert target == "[[4]]#"
  msgs = tf.episode_messages(demos, np.array([[3]], np.int8))
  assert [m["role"] for m in msgs] == ["system", "user"]

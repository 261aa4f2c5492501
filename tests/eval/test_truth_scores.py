"""ttt_jax.eval.truth_scores (experiments.answer_logprob): a test input with no view within the
context is skipped and counted."""

from __future__ import annotations

import jax
import numpy as np

from experiments.configs import pipeline as pipeline_config
from ttt_jax.arc.task import Pair, Task
from ttt_jax.eval import truth_scores
from ttt_jax.model import config, transformer

CFG = config.get_config("tiny", dtype="float32")


def test_an_input_without_views_is_skipped_and_the_rest_scored_as_alone():
  rng = np.random.default_rng(0)
  g = lambda h, w: rng.integers(0, 10, size=(h, w)).astype(np.int8)
  demos = tuple(Pair(x, x[::-1].copy()) for x in (g(2, 2), g(2, 3)))
  small, big = Pair(g(2, 2), g(2, 2)), Pair(g(20, 20), g(2, 2))
  infer = pipeline_config.get_config().infer
  infer.answer_budget = "demos"  # the answer room of the largest demonstration output
  params = transformer.init_params(CFG, jax.random.key(0))
  both = truth_scores.score_task(params, CFG, Task("t", demos, (small, big)), infer, 200, 2)
  alone = truth_scores.score_task(params, CFG, Task("t", demos, (small,)), infer, 200, 2)
  assert both[3] == 1 and alone[3] == 0  # the 20x20 input has no view within 200 tokens
  assert both[2] == alone[2] > 0
  np.testing.assert_allclose(both[:2], alone[:2], rtol=1e-5)
  assert both[0] < 0

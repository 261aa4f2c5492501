"""Log-probability of a task's true test outputs under a base model and a TTT adapter.

Teacher-forced product-of-experts scores over the pipeline's views (``ttt_jax.infer.scoring``),
for ``experiments/answer_logprob.py``: how much TTT moved the model when pass@2 is 0 either way.
The truth is only read to measure, never to choose an answer.
"""

from __future__ import annotations

from ttt_jax import pipeline
from ttt_jax.data import tokens
from ttt_jax.infer import scoring


def score_task(params, mcfg, task, infer, context: int, n_views: int, adapter=None, lcfg=None,
               max_rows: int = 32) -> tuple[float, float, int, int]:
  """(base log p, TTT log p, answer tokens scored, test inputs skipped) of one task's true outputs.

  A test input none of whose views fits ``context`` is skipped and counted, as the pipeline
  skips it, rather than failing the run.
  """
  vs = [pipeline.spread(pipeline.views_for_test_input(task, j, infer, context), n_views)
        for j in range(len(task.test))]
  truths = [[task.test[j].output] if vs[j] else [] for j in range(len(task.test))]
  b = scoring.poe_scores_many(params, [None] * len(vs), vs, truths, cfg=mcfg, max_rows=max_rows)
  a = b
  if adapter is not None:
    a = scoring.poe_scores_many(params, [adapter] * len(vs), vs, truths, cfg=mcfg, lora_cfg=lcfg,
                                max_rows=max_rows)
  size = sum(len(v) * (len(tokens.encode_grid(task.test[j].output)) + 1) for j, v in enumerate(vs) if v)
  return (sum(float(x.sum()) for x in b), sum(float(x.sum()) for x in a), size,
          sum(1 for v in vs if not v))

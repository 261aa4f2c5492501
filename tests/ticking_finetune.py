"""``python -m experiments.finetune`` on a ticking clock, for tests of scripts that train.

Run as ``python tests/ticking_finetune.py FLAGS...``: the fine-tuning binary, with its budget
clock (``ttt_jax.train.finetune.time``) replaced by one that advances one second per reading,
so a wall-time budget stops the run at the same step on any machine, however loaded.
"""

import runpy
import sys


class TickClock:
  """Stands in for the ``time`` module in ``finetune``: each reading is one second after the
  last."""

  def __init__(self):
    self.now = 0.0

  def monotonic(self):
    self.now += 1.0
    return self.now


if __name__ == "__main__":
  from ttt_jax.train import finetune  # pylint: disable=g-import-not-at-top
  finetune.time = TickClock()
  sys.argv = ["experiments.finetune"] + sys.argv[1:]
  runpy.run_module("experiments.finetune", run_name="__main__", alter_sys=True)

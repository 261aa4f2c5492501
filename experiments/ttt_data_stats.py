r"""How many TTT examples tasks get, by number of demonstrations, in each data mode.

  python -m experiments.ttt_data_stats
  python -m experiments.ttt_data_stats --tasks=dev80 --noaugment --n_max=250 --max_tokens=8192

Prints, per mode (``ours``, ``reference``: ``ttt_jax.data.loo``) and per number of
demonstrations, the number of tasks and their mean number of examples: the quantity
that decides how many TTT steps a task gets (steps = examples x epochs / batch size).
"""

from __future__ import annotations

import collections
from typing import Sequence

from absl import app, flags

from ttt_jax.arc import io
from ttt_jax.arc.task import Task
from ttt_jax.data import loo

_TASKS = flags.DEFINE_string("tasks", "arc1-eval", "Any ttt_jax.arc.io.load_tasks spec.")
_MODES = flags.DEFINE_list("modes", list(loo.DATA_MODES), "Data modes to compare.")
_AUGMENT = flags.DEFINE_bool("augment", True, "Build the sets with augmentations.")
_N_MAX = flags.DEFINE_integer("n_max", 250, "Examples per task.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 8192, "Longest example.")
_SEED = flags.DEFINE_integer("seed", 0, "Data seed.")


def mean_examples_by_num_demos(tasks: Sequence[Task], **build_kw) -> dict[int, tuple[int, float]]:
  """``{num_demos: (num_tasks, mean examples per task)}`` for ``loo.build_ttt_dataset(**build_kw)``."""
  sizes = collections.defaultdict(list)
  for t in tasks:
    sizes[len(t.train)].append(len(loo.build_ttt_dataset(t, **build_kw)))
  return {n: (len(v), sum(v) / len(v)) for n, v in sorted(sizes.items())}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  tasks, _ = io.load_tasks(_TASKS.value)
  print(f"{_TASKS.value}: {len(tasks)} tasks, augment={_AUGMENT.value}, n_max={_N_MAX.value}, "
        f"max_tokens={_MAX_TOKENS.value}, seed={_SEED.value}")
  print("| mode | demonstrations | tasks | mean examples |\n|---|---|---|---|")
  for mode in _MODES.value:
    stats = mean_examples_by_num_demos(tasks, mode=mode, augment=_AUGMENT.value, n_max=_N_MAX.value,
                                       max_tokens=_MAX_TOKENS.value, seed=_SEED.value)
    for n, (count, mean) in stats.items():
      print(f"| {mode} | {n} | {count} | {mean:.1f} |")


if __name__ == "__main__":
  app.run(main)

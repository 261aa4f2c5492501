r"""Throughput, diversity and validity of the task generators (one process, one core).

  python -m experiments.generator_stats
  python -m experiments.generator_stats --num_tasks=50 --family_subset=upscale,tile_grid

Per family: tasks/s (one task = 3-4 demonstrations + 1 test pair, difficulties
cycling over 0, 0.5, 1), the unique-input ratio at difficulty 0.5 (distinct input
grids / all input grids over ``num_tasks`` tasks), and the valid rate (tasks that
were produced, with every grid passing ``check_grid`` and the canonical pairs passing
the family verifier). Prints a Markdown table and a summary.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Optional, Sequence

from absl import app, flags
import numpy as np

from ttt_jax.arc import generators
from ttt_jax.arc.task import check_grid

_NUM_TASKS = flags.DEFINE_integer("num_tasks", 150, "Tasks per family for each measurement.")
_FAMILIES = flags.DEFINE_list("family_subset", None, "Families to measure (default: all).")
_SEED = flags.DEFINE_integer("first_seed", 0, "First seed.")


def family_stats(name: str, num_tasks: int, seed: int = 0) -> dict:
  fam = generators.FAMILIES[name]
  difficulties = (0.0, 0.5, 1.0)
  start = time.process_time()
  for i in range(num_tasks):
    generators.generate(name, seed + i, difficulties[i % 3])
  elapsed = time.process_time() - start

  inputs, valid = set(), 0
  total_inputs = 0
  for i in range(num_tasks):
    try:
      task = generators.generate(name, seed + 10**6 + i, 0.5)
      for p in task.train + task.test:
        check_grid(p.input), check_grid(p.output)
      rule, pairs = fam.sample(np.random.default_rng(seed + i), 0.5, 3)
      ok = all(fam.verify(a, b, rule) is None for a, b in pairs)
    except (generators.GenerationError, ValueError):
      continue
    valid += ok
    for p in task.train + task.test:
      inputs.add(p.input.tobytes() + bytes(p.input.shape))
      total_inputs += 1
  return {"family": name, "theme": fam.theme, "tasks_per_s": num_tasks / elapsed,
          "unique_input_ratio": len(inputs) / max(1, total_inputs),
          "valid_rate": valid / num_tasks}


def run(families: Optional[Sequence[str]] = None, num_tasks: int = 150, seed: int = 0
        ) -> tuple[list[dict], dict]:
  names = list(families) if families else sorted(generators.FAMILIES)
  rows = [family_stats(n, num_tasks, seed) for n in names]
  rates = [r["tasks_per_s"] for r in rows]
  slowest = min(rows, key=lambda r: r["tasks_per_s"])
  summary = {
      "families": len(rows),
      "median_tasks_per_s": statistics.median(rates),
      "slowest_family": slowest["family"], "slowest_tasks_per_s": slowest["tasks_per_s"],
      "min_unique_input_ratio": min(r["unique_input_ratio"] for r in rows),
      "mean_unique_input_ratio": float(np.mean([r["unique_input_ratio"] for r in rows])),
      "valid_rate": float(np.mean([r["valid_rate"] for r in rows])),
  }
  return rows, summary


def format_markdown(rows: Sequence[dict]) -> str:
  lines = ["| family | theme | tasks/s | unique inputs @0.5 | valid |", "|---|---|---:|---:|---:|"]
  lines += [f"| {r['family']} | {r['theme']} | {r['tasks_per_s']:.0f} | "
            f"{r['unique_input_ratio']:.3f} | {100 * r['valid_rate']:.0f}% |" for r in rows]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  rows, s = run(_FAMILIES.value, _NUM_TASKS.value, _SEED.value)
  print(format_markdown(rows))
  print(f"\n{s['families']} families, {_NUM_TASKS.value} tasks each, one core "
        f"({platform.processor() or platform.machine()}, CPU time):")
  print(f"  median {s['median_tasks_per_s']:.0f} tasks/s; slowest {s['slowest_family']} "
        f"{s['slowest_tasks_per_s']:.0f} tasks/s")
  print(f"  unique-input ratio at difficulty 0.5: min {s['min_unique_input_ratio']:.3f}, "
        f"mean {s['mean_unique_input_ratio']:.3f}")
  print(f"  valid rate: {100 * s['valid_rate']:.1f}%")


if __name__ == "__main__":
  app.run(main)

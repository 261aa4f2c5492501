"""Named task splits and difficulty levels of the ARC-AGI-1 evaluation set.

The CSVs ship inside the package (``ttt_jax/arc/data``) so that runs never depend
on files outside the installed code. Tune only on ARC training tasks and
``dev80``; ``arc1-eval-heldout`` (the other 320) is for final reporting only.
"""

from __future__ import annotations

import csv
import functools
import pathlib

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
LEVELS = ("easy", "medium", "hard", "expert")


@functools.lru_cache(maxsize=None)
def _read_levels(filename: str) -> dict[str, str]:
  with open(DATA_DIR / filename, newline="") as f:
    rows = list(csv.DictReader(f))
  return {r["task_id"]: r["level"] for r in rows}


def eval_levels() -> dict[str, str]:
  """Difficulty level (easy/medium/hard/expert) of each of the 400 ARC-AGI-1 evaluation tasks."""
  return dict(_read_levels("arc1_eval_levels.csv"))


def dev80_ids() -> list[str]:
  """The 80-task dev subset of ARC-AGI-1 evaluation (20 per level), in file order."""
  return list(_read_levels("arc1_dev80.csv"))


def heldout_ids() -> list[str]:
  """The 320 ARC-AGI-1 evaluation tasks outside dev-80: final reporting only."""
  dev = set(dev80_ids())
  return [t for t in eval_levels() if t not in dev]


SUBSETS = {
    "dev80": dev80_ids,
    "arc1-eval-heldout": heldout_ids,
}

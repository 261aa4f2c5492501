"""The paper's text format, for models with an HF tokenizer.

A grid is written as numpy prints an integer array (``[[0 0 1]\\n [1 0 0]]``),
a demonstration as ``input -> output#``. The instruction and demonstrations
form the system message, the query input plus `` -> `` the user message, and the
answer grid plus ``#`` the target. Parsing model output never raises.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from ttt_jax.arc.task import MAX_SIDE, Grid, Pair

INSTRUCTION = ("Figure out the underlying transformation in the following examples "
               "and apply it to the test case.")
ARROW = " -> "
END = "#"
_ROW = re.compile(r"\[([0-9 ]*)\]")


def grid_to_text(grid: Grid) -> str:
  """numpy's printing of the grid, never wrapped or abbreviated."""
  return np.array2string(np.asarray(grid, dtype=np.int64), separator=" ",
                         max_line_width=1_000_000, threshold=1_000_000)


def text_to_grid(text: str) -> Optional[Grid]:
  """Parses ``[[0 1]\\n [1 0]]`` (anything after a ``#`` ignored); None when malformed."""
  if not isinstance(text, str):
    return None
  body = text.split(END, 1)[0].strip()
  if not (body.startswith("[[") and body.endswith("]]")):
    return None
  inner = body[1:-1]
  rows = _ROW.findall(inner)
  if not rows or _ROW.sub("", inner).strip() != "":
    return None
  try:
    cells = [[int(c) for c in r.split()] for r in rows]
  except ValueError:
    return None
  h, w = len(cells), len(cells[0])
  if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE) or any(len(r) != w for r in cells):
    return None
  grid = np.asarray(cells, dtype=np.int64)
  if grid.min() < 0 or grid.max() > 9:
    return None
  return grid.astype(np.int8)


def demonstration_text(pair: Pair) -> str:
  return f"{grid_to_text(pair.input)}{ARROW}{grid_to_text(pair.output)}{END}"


def episode_messages(demos: Sequence[Pair], query_input: Grid,
                     query_output: Optional[Grid] = None) -> list[dict[str, str]]:
  """Chat messages (system, user, and assistant when the answer is known)."""
  system = INSTRUCTION + "\n" + "\n".join(demonstration_text(p) for p in demos)
  messages = [{"role": "system", "content": system},
              {"role": "user", "content": grid_to_text(query_input) + ARROW}]
  if query_output is not None:
    messages.append({"role": "assistant", "content": grid_to_text(query_output) + END})
  return messages


def episode_text(demos: Sequence[Pair], query_input: Grid,
                 query_output: Optional[Grid] = None) -> tuple[str, str]:
  """``(prompt, target)`` as plain text, for tokenizers without a chat template."""
  messages = episode_messages(demos, query_input, query_output)
  prompt = messages[0]["content"] + "\n" + messages[1]["content"]
  target = messages[2]["content"] if query_output is not None else ""
  return prompt, target

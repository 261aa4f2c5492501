r"""Writes a standalone HTML gallery of generated tasks, a few per family, to eyeball.

  python -m experiments.gallery --out=/tmp/gallery.html
  python -m experiments.gallery --out=/tmp/g.html --per_family=5 --difficulty=1.0 \
      --families=fill_enclosed,gravity_objects

Grids are inline SVG in the ARC palette (no external assets). Each task shows its
demonstrations and its test pair; the family's docstring states the hidden rule.
"""

from __future__ import annotations

import html
from typing import Optional, Sequence

from absl import app, flags

from ttt_jax.arc import generators
from ttt_jax.arc.task import Task
from ttt_jax.eval.report import grid_svg

_OUT = flags.DEFINE_string("out", "gallery.html", "Path of the HTML file to write.")
_PER_FAMILY = flags.DEFINE_integer("per_family", 3, "Tasks shown per family.")
_DIFFICULTY = flags.DEFINE_float(
    "difficulty", None, "Difficulty of every task; default spreads 0..1 over each family's tasks.")
_FAMILIES = flags.DEFINE_list("families", None, "Families to show (default: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Task k of a family uses seed + k.")

_CSS = """
body{font-family:sans-serif;margin:1em;background:#fafafa}
section.family{border-top:2px solid #ccc;margin-top:1em}
.doc{color:#444;font-size:.9em;margin:.2em 0 .5em} .theme{color:#888;font-size:.7em}
.task{display:flex;flex-wrap:wrap;align-items:center;gap:.6em;margin:.4em 0;padding:.4em;
      background:#fff;border:1px solid #e4e4e4}
.pair{display:flex;align-items:center;gap:.2em;padding:.2em;border:1px solid #eee}
.pair.test{border:2px solid #0074D9} .arrow{color:#888} .id{font-size:.7em;color:#999;width:100%}
svg.grid{display:block}
"""


def _task_html(task: Task, difficulty: float) -> str:
  pairs = [(p, "train") for p in task.train] + [(p, "test") for p in task.test]
  body = "".join(
      f'<div class="pair {kind}">{grid_svg(p.input)}<span class="arrow">&rarr;</span>'
      f'{grid_svg(p.output)}</div>' for p, kind in pairs)
  return (f'<div class="task"><div class="id">{html.escape(task.task_id)} '
          f'(difficulty {difficulty:.2f})</div>{body}</div>')


def render_gallery(families: Optional[Sequence[str]] = None, per_family: int = 3,
                   seed: int = 0, difficulty: Optional[float] = None) -> str:
  """The gallery as one HTML string; families grouped by theme."""
  names = list(families) if families else sorted(
      generators.FAMILIES, key=lambda n: (generators.FAMILIES[n].theme, n))
  sections = []
  for name in names:
    fam = generators.FAMILIES[name]
    tasks = []
    for k in range(per_family):
      d = difficulty if difficulty is not None else (k / max(1, per_family - 1))
      tasks.append(_task_html(generators.generate(name, seed + k, d), d))
    sections.append(
        f'<section class="family" id="{html.escape(name)}"><h2>{html.escape(name)} '
        f'<span class="theme">{html.escape(fam.theme)}</span></h2>'
        f'<p class="doc">{html.escape(fam.doc)}</p>{"".join(tasks)}</section>')
  index = " ".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in names)
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ttt_jax generators</title>"
          f"<style>{_CSS}</style></head><body><h1>Generated task families ({len(names)})</h1>"
          f"<p>{index}</p>{''.join(sections)}</body></html>")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  page = render_gallery(_FAMILIES.value, _PER_FAMILY.value, _SEED.value, _DIFFICULTY.value)
  with open(_OUT.value, "w") as f:
    f.write(page)
  print(f"wrote {_OUT.value} ({len(page) // 1024} KiB)")


if __name__ == "__main__":
  app.run(main)

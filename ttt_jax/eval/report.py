"""A standalone HTML report: grids as inline SVG in the standard ARC palette.

One file, no external assets, so it can be copied off a TPU VM and opened
anywhere. Per task: demonstrations, each test input, both attempts (marked
right or wrong when the truth is known), the truth, and the top vote counts;
on top, a pass@2 table per difficulty level.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Optional, Sequence

import numpy as np

from ttt_jax.arc.task import Grid, Task, grids_equal

# The palette of the ARC testing interface (colours 0..9).
PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")


@dataclasses.dataclass
class TestInputReport:
  input: Grid
  attempts: Sequence[Grid]
  truth: Optional[Grid] = None
  # Leading candidates (in the order the attempts were chosen from) with their vote counts,
  # and their product-of-experts score when they were scored: (grid, votes[, score]).
  votes: Sequence[tuple] = ()
  num_candidates: int = 0
  num_invalid: int = 0
  # Self-training history: (caption, grid) per figure, e.g. a round's pseudo-label and its
  # first attempt after training on it (``history_figures``).
  rounds: Sequence[tuple[str, Optional[Grid]]] = ()


@dataclasses.dataclass
class TaskReport:
  task: Task
  tests: Sequence[TestInputReport]
  level: Optional[str] = None
  correct: Optional[bool] = None
  note: str = ""


def grid_svg(grid: Grid, cell: int = 12) -> str:
  """An inline SVG of a grid; cells scale down so big grids stay a sensible size."""
  grid = np.asarray(grid)
  h, w = grid.shape
  cell = max(4, min(cell, 240 // max(h, w)))
  rects = [f'<rect x="{c * cell}" y="{r * cell}" width="{cell}" height="{cell}" '
           f'fill="{PALETTE[int(grid[r, c]) % 10]}"/>' for r in range(h) for c in range(w)]
  return (f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="{w * cell}" '
          f'height="{h * cell}" viewBox="0 0 {w * cell} {h * cell}" '
          f'data-shape="{h}x{w}"><g stroke="#555" stroke-width="0.5">{"".join(rects)}</g></svg>')


def curve_svg(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, width: int = 480,
              height: int = 200, title: str = "") -> str:
  """Line chart of ``(label, [(x, y), ...])`` series as inline SVG (e.g. a training loss curve
  over steps); axes span the data, labelled at their ends. Empty string without points."""
  pts = [(float(x), float(y)) for _, s in series for x, y in s]
  if not pts:
    return ""
  x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
  y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
  x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)
  left, right, top, bottom = 48, 10, 20, 28
  sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)
  sy = lambda y: top + (y1 - y) / (y1 - y0) * (height - top - bottom)
  colours = ("#0074D9", "#FF4136", "#2ECC40", "#FF851B")
  parts = [f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" font-size="11">',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" '
           f'height="{height - top - bottom}" fill="none" stroke="#ccc"/>']
  if title:
    parts.append(f'<text x="{left}" y="13">{html.escape(title)}</text>')
  parts += [f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{y1:.3g}</text>',
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{y0:.3g}</text>',
            f'<text x="{left}" y="{height - 8}">{x0:.4g}</text>',
            f'<text x="{width - right}" y="{height - 8}" text-anchor="end">{x1:.4g}</text>']
  for i, (label, s) in enumerate(series):
    if not s:
      continue
    c = colours[i % len(colours)]
    line = " ".join(f"{sx(float(x)):.1f},{sy(float(y)):.1f}" for x, y in s)
    parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{line}"/>')
    parts.append(f'<text x="{width - right - 4}" y="{top + 14 + 13 * i}" text-anchor="end" '
                 f'fill="{c}">{html.escape(label)}</text>')
  parts.append("</svg>")
  return "".join(parts)


def _figure(grid: Optional[Grid], caption: str, css: str = "") -> str:
  body = grid_svg(grid) if grid is not None else '<div class="none">none</div>'
  return f'<figure class="{css}">{body}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _score_text(score: Optional[float]) -> str:
  return "not scored" if score is None else f"{score:.2f}"


def _task_html(r: TaskReport) -> str:
  status = {True: ("right", "pass@2: right"), False: ("wrong", "pass@2: wrong"),
            None: ("unknown", "no truth")}[r.correct]
  parts = [f'<section class="task {status[0]}" id="{html.escape(r.task.task_id)}">',
           f'<h2>{html.escape(r.task.task_id)} <span class="badge">{status[1]}</span>'
           + (f' <span class="level">{html.escape(r.level)}</span>' if r.level else "")
           + "</h2>"]
  if r.note:
    parts.append(f'<p class="note">{html.escape(r.note)}</p>')
  parts.append('<div class="row"><h3>demonstrations</h3>')
  for i, p in enumerate(r.task.train):
    parts.append(f'<div class="pair">{_figure(p.input, f"in {i}")}'
                 f'<span class="arrow">&rarr;</span>{_figure(p.output, f"out {i}")}</div>')
  parts.append("</div>")
  for j, t in enumerate(r.tests):
    parts.append(f'<div class="row"><h3>test {j}</h3>{_figure(t.input, "input")}')
    for a, grid in enumerate(t.attempts):
      css = "" if t.truth is None else ("ok" if grids_equal(grid, t.truth) else "bad")
      parts.append(_figure(grid, f"attempt {a + 1}", css))
    if not t.attempts:
      parts.append(_figure(None, "no attempt", "bad"))
    if t.truth is not None:
      parts.append(_figure(t.truth, "truth", "truth"))
    if t.votes:
      scored = any(len(v) > 2 and v[2] is not None for v in t.votes)
      rows = "".join(
          f"<tr><td>{grid_svg(v[0], 6)}</td><td>{v[1]}</td>"
          + (f"<td>{_score_text(v[2] if len(v) > 2 else None)}</td>" if scored else "") + "</tr>"
          for v in t.votes)
      head = "<th>candidate</th><th>votes</th>" + ("<th>PoE log-prob</th>" if scored else "")
      parts.append(f'<table class="votes"><tr>{head}</tr>{rows}</table>')
    parts.append(f'<p class="counts">{t.num_candidates} candidates, {t.num_invalid} invalid</p>')
    parts.append("</div>")
    if t.rounds:
      parts.append(f'<div class="row"><h3>test {j}: self-training rounds</h3>')
      for caption, grid in t.rounds:
        css = ("" if t.truth is None or grid is None
               else ("ok" if grids_equal(grid, t.truth) else "bad"))
        parts.append(_figure(grid, caption, css))
      parts.append("</div>")
  parts.append("</section>")
  return "\n".join(parts)


_ROUND_STATUS = {"no_label": "no confident candidate", "no_data": "no training example fits"}


def history_figures(rounds: Sequence[dict]) -> list[tuple[str, Optional[Grid]]]:
  """Report figures for a record's self-training history (``selftrain.round_entry`` dicts):
  each round's pseudo-label and its first attempt afterwards; a round that did not predict
  shows its decision alone."""
  figs: list[tuple[str, Optional[Grid]]] = []
  for e in rounds:
    r, status = e["round"], e.get("status")
    if e.get("pseudo_label") is not None:
      figs.append((f"round {r} label ({status})", np.asarray(e["pseudo_label"])))
    if e.get("attempts"):
      tag = "before self-training" if r == 0 else "attempt 1"
      figs.append((f"round {r}: {tag}", np.asarray(e["attempts"][0])))
    elif r > 0 and e.get("pseudo_label") is None:
      figs.append((f"round {r}: {_ROUND_STATUS.get(status, status)}", None))
  return figs


def level_table(reports: Sequence[TaskReport]) -> list[tuple[str, int, int]]:
  """``(level, solved, total)`` rows for tasks with known truth, plus an ``all`` row."""
  rows: dict[str, list[int]] = {}
  for r in reports:
    if r.correct is None:
      continue
    for key in (r.level or "unknown", "all"):
      rows.setdefault(key, [0, 0])
      rows[key][0] += int(r.correct)
      rows[key][1] += 1
  order = ["easy", "medium", "hard", "expert", "unknown", "all"]
  return [(k, *rows[k]) for k in order if k in rows]


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
section.task{background:#fff;border:1px solid #ddd;border-left:6px solid #999;margin:1em 0;padding:.6em 1em}
section.right{border-left-color:#2ECC40} section.wrong{border-left-color:#FF4136}
.row{display:flex;flex-wrap:wrap;align-items:center;gap:.8em;margin:.4em 0}
.row h3{width:100%;margin:.3em 0;font-size:.95em;color:#555}
.pair{display:flex;align-items:center;gap:.3em;border:1px dashed #ccc;padding:.3em}
figure{margin:0;text-align:center} figcaption{font-size:.75em;color:#666}
figure.ok svg{outline:3px solid #2ECC40} figure.bad svg{outline:3px solid #FF4136}
figure.truth svg{outline:3px dashed #0074D9}
.badge{font-size:.7em;padding:.1em .5em;border-radius:.6em;background:#eee}
.level{font-size:.7em;color:#777} table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.2em .5em;font-size:.85em} .none{color:#999;font-style:italic}
"""


def render_html(reports: Sequence[TaskReport], title: str = "ttt_jax report",
                extra: Sequence[tuple[str, str]] = (), figures: Sequence[str] = ()) -> str:
  """The whole report as one HTML string; ``extra`` adds (label, value) summary lines and
  ``figures`` inline SVG (``curve_svg``) under them."""
  table = "".join(f"<tr><td>{html.escape(k)}</td><td>{s}</td><td>{n}</td>"
                  f"<td>{100 * s / max(n, 1):.1f}%</td></tr>" for k, s, n in level_table(reports))
  info = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in extra)
  figs = "".join(f"<div class='figure'>{f}</div>" for f in figures if f)
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
          f"<ul class='info'>{info}</ul>{figs}"
          f"<table class='summary'><tr><th>level</th><th>solved</th><th>tasks</th><th>pass@2</th></tr>"
          f"{table}</table>" + "\n".join(_task_html(r) for r in reports) + "</body></html>")


def write_html(path: str, reports: Sequence[TaskReport], **kwargs) -> str:
  with open(path, "w") as f:
    f.write(render_html(reports, **kwargs))
  return path

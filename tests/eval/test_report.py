import re
import shutil
import subprocess

import numpy as np
import pytest

from ttt_jax.arc import io
from ttt_jax.eval import report


def _reports():
  tasks, _ = io.load_tasks("dev80:3")
  out = []
  for i, t in enumerate(tasks):
    truth = t.test[0].output
    attempts = [truth, t.test[0].input] if i == 0 else [t.test[0].input]
    tests = [report.TestInputReport(t.test[0].input, attempts, truth, votes=[(truth, 5)],
                                    num_candidates=12, num_invalid=1)]
    out.append(report.TaskReport(t, tests, level="easy", correct=(i == 0), note="<b>x</b>"))
  return out


def test_grid_svg_draws_every_cell_in_palette_colours():
  g = np.arange(12).reshape(3, 4) % 10
  svg = report.grid_svg(g)
  fills = re.findall(r'fill="(#[0-9A-Fa-f]{6})"', svg)
  assert len(fills) == 12 and fills[:10] == list(report.PALETTE)


def test_report_content_and_escaping(tmp_path):
  reps = _reports()
  path = report.write_html(str(tmp_path / "r.html"), reps, extra=[("pass@2", "1/3")])
  text = open(path).read()
  assert text.startswith("<!DOCTYPE html>") and text.count('<section class="task') == 3
  assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text
  assert report.level_table(reps) == [("easy", 1, 3), ("all", 1, 3)]
  assert 'class="ok"' in text and 'class="bad"' in text and "truth" in text


def _chromium():
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(name):
      return shutil.which(name)
  return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (CI installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
  path = report.write_html(str(tmp_path / "r.html"), _reports())
  shot = tmp_path / "shot.png"
  cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
         f"--screenshot={shot}", f"file://{path}"]
  subprocess.run(cmd, check=True, capture_output=True, timeout=120)
  data = shot.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  # The page is not blank: decode the PNG and find ARC palette colours in it.
  import zlib, struct
  w, h = struct.unpack(">II", data[16:24])
  assert w == 1200 and h == 1600
  chunks, pos = [], 8
  while pos < len(data):
    n = struct.unpack(">I", data[pos:pos + 4])[0]
    if data[pos + 4:pos + 8] == b"IDAT":
      chunks.append(data[pos + 8:pos + 8 + n])
    pos += 12 + n
  raw = zlib.decompress(b"".join(chunks))
  assert len(set(raw[::97])) > 5  # many distinct byte values: something was drawn


def test_curve_svg_maps_points_into_the_plot_and_lands_in_the_page():
  svg = report.curve_svg([("train", [(1, 2.8), (250, 1.1), (500, 0.7)]), ("eval", [(200, 0.85)])],
                         width=300, height=100, title="loss")
  lines = re.findall(r'points="([^"]*)"', svg)
  assert len(lines) == 2
  xs_ys = [tuple(map(float, p.split(","))) for p in lines[0].split()]
  # First point at the left edge and top (largest loss), last at the right edge and bottom.
  assert xs_ys[0] == (48.0, 20.0) and xs_ys[-1] == (290.0, 72.0)
  assert report.curve_svg([("empty", [])]) == ""
  page = report.render_html([], figures=[svg, ""])
  assert page.count("<svg class=\"curve\"") == 1 and "loss" in page


def test_history_figures_show_each_rounds_label_and_answer():
  one, two = [[1]], [[2]]
  rounds = [{"round": 0, "attempts": [one, two]},
            {"round": 1, "status": "accepted", "pseudo_label": one, "attempts": [two]},
            {"round": 2, "status": "rejected", "pseudo_label": two},
            {"round": 3, "status": "no_label"}]
  figs = report.history_figures(rounds)
  assert [c for c, _ in figs] == ["round 0: before self-training", "round 1 label (accepted)",
                                  "round 1: attempt 1", "round 2 label (rejected)",
                                  "round 3: no confident candidate"]
  assert [None if g is None else g.tolist() for _, g in figs] == [one, one, two, two, None]
  assert report.history_figures([]) == []

"""The GPU window's one call, rehearsed on CPU: a tiny model and pool, a ticking clock, a fake
$OUT. Checks the phases run in order within their deadlines, each phase's results are secured
before the next starts, and what comes back fits the return limits."""

from __future__ import annotations

import json
import os

from experiments import gpu_window


class Ticks:
  """One second per reading: the same schedule on any machine."""

  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    self.t += 1.0
    return self.t


def test_window_runs_every_phase_on_its_deadline_and_returns_within_limits(tmp_path):
  out = str(tmp_path / "OUT")
  win = gpu_window.Window(out, clock=Ticks())
  res = gpu_window.run_window(win, rehearsal=True, train_end_s=400, eval_end_s=2000, end_s=2500,
                              ttt_steps=(2, 3), tokens_per_batch=512, tasks="fresh:train:2",
                              bench=("full", "nonexistent"))
  ph = res["phases"]
  assert [ph[p]["status"] for p in ("check", "train", "eval", "bench")] == ["done"] * 4, ph
  assert ph["check"]["attention_impl"] == "xla"  # no GPU here
  # *_s below are readings of the Ticks clock (one per call), not wall time: the schedule is the
  # same on any machine
  assert ph["train"]["ended_s"] <= 400 + 60  # stopped on its budget (plus the export)
  assert ph["train"]["step"] >= 1 and ph["train"]["tokens_seen"] > 0
  for name, deadline in (("check", 400), ("train", 400), ("eval", 2000)):
    assert ph[name]["started_s"] < deadline
  assert {"none", "embed_2", "embed_3"} <= set(ph["eval"])  # one arm per TTT step count
  assert ph["eval"]["none"]["tasks"] + ph["eval"]["none"]["unfinished"] == 2
  assert ph["bench"]["full"]["status"] == "done", ph["bench"]["full"]  # the smoke preset, one process
  assert ph["bench"]["nonexistent"]["status"].startswith("failed")  # recorded; the phase goes on
  assert "nonexistent" in ph["bench"]["not_run"] and res["next_window"] == ph["bench"]["not_run"]
  assert res["limits_broken"] == []
  files = {p for p, _, _ in gpu_window.returned_files(out)}
  assert files == {"window.json", "log.txt", "BENCHMARKS.md", "ckpt/params.safetensors",
                   "ckpt/opt.safetensors", "ckpt/state.json"}
  assert "Full fine-tuning step" in open(os.path.join(out, "BENCHMARKS.md")).read()
  assert json.load(open(os.path.join(out, "window.json")))["phases"]["bench"]["status"] == "done"
  from ttt_jax.taskemb import checkpoint
  assert checkpoint.load_state(os.path.join(out, "ckpt"))["step"] == ph["train"]["step"]


def test_a_phase_past_its_deadline_is_skipped_and_recorded(tmp_path):
  win = gpu_window.Window(str(tmp_path / "OUT"), clock=Ticks())
  assert win.phase("late", lambda: {"x": 1}, deadline_s=0) is None
  failed = win.phase("bad", lambda: 1 / 0, deadline_s=100)
  assert failed["status"].startswith("failed: ZeroDivisionError")
  saved = json.load(open(tmp_path / "OUT" / "window.json"))
  assert saved["phases"]["late"]["status"].startswith("skipped")
  assert saved["phases"]["bad"]["status"].startswith("failed")


def test_limits_are_checked(tmp_path):
  deep = tmp_path / "a" / "b" / "c"
  deep.mkdir(parents=True)
  (deep / "x").write_bytes(b"1")
  for i in range(8):
    (tmp_path / f"f{i}").write_bytes(b"1")
  bad = gpu_window.check_limits(str(tmp_path))
  assert any("9 files" in b for b in bad) and any("folders deep" in b for b in bad)


def test_the_binary_parses_its_flags():
  import subprocess
  import sys
  r = subprocess.run([sys.executable, "-m", "experiments.gpu_window", "--helpshort"], capture_output=True,
                     text=True, timeout=120)
  out = r.stdout + r.stderr  # absl prints the help and exits 1
  assert "Traceback" not in out and "--window_out" in out and "window_rehearsal" in out, out[-2000:]

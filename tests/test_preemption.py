"""A pipeline run killed (SIGKILL) mid-TTT and again mid-prediction, restarted each time with
the same out_dir, ends with exactly the files of an uninterrupted run."""

from __future__ import annotations

import glob
import os
import time

import pytest

from tests import pipeline_runs


def _run_until(out_dir: str, pattern: str, log_name: str, timeout: float = 180) -> int:
  """Starts the pipeline, SIGKILLs it once a file matches ``pattern``; returns how many did."""
  proc = pipeline_runs.start(out_dir, log_name)
  try:
    deadline = time.monotonic() + timeout
    while not glob.glob(os.path.join(out_dir, pattern)):
      assert proc.poll() is None, (f"{log_name} ended (rc {proc.returncode}) before writing "
                                   f"{pattern}:\n{pipeline_runs.log_tail(log_name)}")
      assert time.monotonic() < deadline, f"{log_name}: no {pattern} in {timeout}s"
      time.sleep(0.05)
  finally:
    proc.kill()  # SIGKILL: no cleanup handler runs, as on a preempted VM
    proc.wait()
  return len(glob.glob(os.path.join(out_dir, pattern)))


@pytest.mark.slow
def test_killed_and_restarted_run_equals_uninterrupted_run():
  ref = pipeline_runs.reference()
  out = os.path.join(pipeline_runs.scratch(), "preempted")
  n_ref = len(glob.glob(os.path.join(ref, "adapters", "*.json")))

  # Killed during TTT: some adapters are saved, nothing is predicted.
  n_adapters = _run_until(out, os.path.join("adapters", "*.json"), "kill_ttt.log")
  assert not os.path.exists(os.path.join(out, "submission.json"))
  # Killed again during prediction: TTT is finished, some test inputs are predicted.
  _run_until(out, os.path.join("predictions", "parts", "*.json"), "kill_predict.log")
  assert len(glob.glob(os.path.join(out, "adapters", "*.json"))) == n_ref
  assert not os.path.exists(os.path.join(out, "submission.json"))
  pipeline_runs.run(out, "resume.log")

  log = pipeline_runs.log_tail("kill_predict.log", 100_000)
  if n_adapters < n_ref:  # the first restart trained what the kill left undone
    assert "TTT group" in log, log[-2000:]
  assert "TTT group" not in pipeline_runs.log_tail("resume.log", 100_000)
  pipeline_runs.assert_same_outputs(out, ref)

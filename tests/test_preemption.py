"""Preemption: a pipeline run killed (SIGKILL) mid-TTT and again mid-prediction, restarted each
time with the same out_dir, ends with exactly the files of an uninterrupted run; a TTT group
half-saved when killed is retrained whole."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest

from tests import pipeline_runs
from ttt_jax.arc import io
from ttt_jax.data import batching
from ttt_jax.model import config, lora, transformer
from ttt_jax.train import checkpoint, optim, ttt


def _run_until(out_dir: str, pattern: str, log_name: str) -> int:
  """Starts the pipeline, SIGKILLs it once a file matches ``pattern``; returns how many did.
  The run is finite, so a run that never writes ``pattern`` ends and fails the test."""
  proc = pipeline_runs.start(out_dir, log_name)
  try:
    while not glob.glob(os.path.join(out_dir, pattern)):
      assert proc.poll() is None, (f"{log_name} ended (rc {proc.returncode}) before writing "
                                   f"{pattern}:\n{pipeline_runs.log_tail(log_name)}")
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


def test_half_saved_ttt_group_is_retrained_whole_to_the_same_adapters(tmp_path):
  """A kill between two saves of one group: the rerun trains that group again (same members,
  same padded length) and the missing adapter equals the one an uninterrupted run saved."""
  mcfg = config.get_config("tiny", dtype="float32", max_seq_len=1024)
  params = transformer.init_params(mcfg, jax.random.key(0))
  lcfg = lora.LoraConfig(rank=4, alpha=16.0, targets=("q", "v"))
  tcfg = ttt.TTTConfig(batch_size=2, epochs=1, n_max=4, max_tokens=512, group_size=2,
                       min_bucket=128)
  kw = dict(mcfg=mcfg, lcfg=lcfg, ocfg=optim.ttt_optim_config("tiny"), tcfg=tcfg)
  tasks, _ = io.load_tasks("dev80-small:3")
  full = str(tmp_path / "full")
  ttt.run_ttt(tasks, params, out_dir=full, **kw)
  cut = str(tmp_path / "cut")
  shutil.copytree(full, cut)
  adapter_dir = os.path.join(cut, "adapters")
  metas = {t.task_id: json.load(open(checkpoint.adapter_paths(adapter_dir, t.task_id)[1]))
           for t in tasks}
  ids = [t.task_id for t in tasks]
  groups = batching.group_by_length([metas[t]["input_length"] for t in ids], 2,
                                    batching.default_buckets(512, 128))
  pair = next(g for g in groups if len(g) == 2)  # a group of two real tasks
  victim, kept = ids[pair[0]], [t for t in ids if t != ids[pair[0]]]
  os.remove(checkpoint.adapter_paths(adapter_dir, victim)[1])  # JSON gone: not finished
  meta = dict(metas[kept[0]])
  del meta["input_length"]  # an adapter saved before lengths were recorded: rebuilt
  with open(checkpoint.adapter_paths(adapter_dir, kept[0])[1], "w") as f:
    json.dump(meta, f)
  summary = ttt.run_ttt(tasks, params, out_dir=cut, **kw)
  assert summary["trained"] == [victim] and sorted(summary["skipped_done"]) == sorted(kept)
  a, _ = checkpoint.load_adapter(adapter_dir, victim)
  b, _ = checkpoint.load_adapter(os.path.join(full, "adapters"), victim)
  jax.tree.map(np.testing.assert_array_equal, a, b)

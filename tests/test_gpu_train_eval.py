"""launch/gpu_train_eval.sh (linted in test_launch.py): its guards, and the whole detached
train -> evaluate -> collect sequence of a GPU session, on the CPU with a tiny model and a
54-second budget counted on a ticking clock (``ticking_finetune.py``), so where the probe and
the budget stop the training does not depend on this machine's speed."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest

from ttt_jax.train import finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "gpu_train_eval.sh")

TINY_TRAIN = " ".join([
    "--config.model_overrides.dim=32", "--config.model_overrides.n_layers=1",
    "--config.model_overrides.n_heads=2", "--config.model_overrides.n_kv_heads=1",
    "--config.model_overrides.head_dim=16", "--config.model_overrides.ffn_dim=64",
    "--config.model_overrides.max_seq_len=1024", "--config.model_overrides.dtype=float32",
    "--config.model_overrides.remat=False", "--config.max_tokens=512", "--config.min_bucket=128",
    "--config.batch_tokens=2048", "--config.batch_size=4", "--config.data.sort_window=32",
    "--config.data.feed_workers=1", "--config.data.num_eval_tasks=2", "--config.eval_every=40",
    "--config.checkpoint_every=10", "--config.log_every=10", "--config.async_checkpoint=False"])
TINY_EVAL = " ".join([
    "--config.ttt.n_max=4", "--config.ttt.epochs=1", "--config.lora.rank=4",
    "--config.ttt.max_tokens=1024", "--config.infer.max_tokens=1024",
    "--config.infer.answer_budget=demos", "--config.infer.n_orders=1"])


def ticking_python(directory) -> str:
  """An interpreter for the script that runs ``-m experiments.finetune`` on the ticking clock
  and everything else as ``sys.executable`` would."""
  path = os.path.join(directory, "python")
  with open(path, "w") as f:
    f.write(f"""#!/usr/bin/env bash
if [[ "${{1:-}}" == -m && "${{2:-}}" == experiments.finetune ]]; then
  shift 2
  exec {sys.executable} {os.path.join(ROOT, "tests", "ticking_finetune.py")} "$@"
fi
exec {sys.executable} "$@"
""")
  os.chmod(path, 0o755)
  return path


def env(**extra) -> dict:
  e = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  e.update(JAX_PLATFORMS="cpu", TTT_JAX_PYTHON=sys.executable, PYTHONPATH=ROOT,
           TRAIN_MINUTES="0.9", PROBE_MINUTES="0.45", PLAN_OVERHEAD_S="5", TRAIN_FLAGS=TINY_TRAIN,
           EVAL_TASKS="dev80:2", EVAL_FLAGS=TINY_EVAL)
  e.update(extra)
  return e


def script(*args, timeout=60, **extra) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", SCRIPT, *args], env=env(**extra), capture_output=True,
                        text=True, timeout=timeout)


def test_usage_and_refusing_an_unfinished_model(tmp_path):
  r = script("no-such-command", str(tmp_path))
  assert r.returncode == 2 and "start-train OUT" in r.stderr
  assert script("eval-ttt", str(tmp_path)).returncode == 1  # no model yet
  (tmp_path / "model").mkdir()
  (tmp_path / "model" / "meta.json").write_text(json.dumps({"status": "partial"}))
  r = script("start-eval", str(tmp_path))
  assert r.returncode == 1 and "unfinished training" in r.stderr
  r = script("status", str(tmp_path))
  assert r.returncode == 0 and "train: not started" in r.stdout and "eval: not started" in r.stdout


def load(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow
def test_detached_training_and_both_evaluations_end_to_end(tmp_path):
  out, dest = str(tmp_path / "run"), str(tmp_path / "back")
  # returns at once: the training runs detached, its budget on the ticking clock
  r = script("start-train", out, timeout=30, TTT_JAX_PYTHON=ticking_python(str(tmp_path)))
  assert r.returncode == 0 and "started train" in r.stdout, r.stderr
  assert "train: running" in script("status", out).stdout
  r = script("wait", out, "train", "300", timeout=330)
  assert r.returncode == 0, r.stdout + r.stderr + open(f"{out}/logs/train.log").read()[-3000:]

  # the probe measured the pace, the run was planned from it and stopped on its budget
  log = open(f"{out}/logs/train.log").read()
  planned = int(open(f"{out}/planned_steps").read())
  assert f"planned {planned} steps" in log
  meta, cfg = load(f"{out}/model/meta.json"), load(f"{out}/model/config.json")
  assert cfg["dim"] == 32 and cfg["grid_positions"] and cfg["name"] == "arc-gpu"
  probe_steps = int(log.split("finetune time_budget at step ")[1].split(":")[0])
  assert 0 < probe_steps < planned and meta["max_minutes"] == 0.9
  # The plan is plan_steps over the probe's records (same overhead), and the final run, resumed
  # from the probe with its clock carried over, trains exactly the planned steps.
  records = finetune.records_by_step(f"{out}/metrics.jsonl")
  probe_log = tmp_path / "probe_metrics.jsonl"
  probe_log.write_text("".join(json.dumps(records[s]) + "\n" for s in sorted(records)
                               if s <= probe_steps))
  assert planned == finetune.plan_steps(str(probe_log), 0.9, overhead_s=5.0)
  assert (meta["status"], meta["steps"], meta["planned_steps"]) == ("done", planned, planned)
  ticks = [records[s]["elapsed_s"] for s in sorted(records)]  # ticking-clock readings
  assert all(b > a for a, b in zip(ticks, ticks[1:]))  # one budget clock over the resume
  assert ticks[-1] <= 60 * 0.9  # within the budget, as planned
  assert meta["held_out_families"] and meta["loss_curve"]

  r = script("start-eval", out, timeout=30)
  assert r.returncode == 0, r.stderr
  r = script("wait", out, "eval", "400", timeout=430)
  assert r.returncode == 0, r.stdout + r.stderr
  for name in ("eval_no_ttt", "eval_ttt"):
    scores = load(f"{out}/{name}/scores.json")
    assert scores["num_tasks"] == scores["num_scored"] == 2 and 0 <= scores["solved"] <= 2
    assert len(scores["tasks"]) == 2
    assert set(load(f"{out}/{name}/timings.json")) >= {"load", "ttt", "predict", "total"}
    assert len(load(f"{out}/{name}/submission.json")) == 2
    assert f"{name}: pass@2" in r.stdout
  # TTT ran in the TTT arm only: its adapters exist there and nowhere in the other arm.
  assert glob.glob(f"{out}/eval_ttt/adapters/*.safetensors")
  assert not glob.glob(f"{out}/eval_no_ttt/adapters/*")
  phases = [line.split("\t") for line in open(f"{out}/logs/phase_times.tsv")]
  assert [(p[0], p[3].strip()) for p in phases] == [("train", "0"), ("eval", "0")]

  r = script("collect", out, dest)
  assert r.returncode == 0, r.stderr
  files = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
  assert sorted(os.path.relpath(f, dest) for f in files) == [
      "model/config.json", "model/meta.json", "model/params.safetensors", "results.tar.gz",
      "status.txt"]
  assert all(os.path.getsize(f) < 16 * 2**20 for f in files)  # the device's limits
  with tarfile.open(f"{dest}/results.tar.gz") as tar:
    names = tar.getnames()
  assert {"metrics.jsonl", "eval_ttt/scores.json", "eval_no_ttt/submission.json",
          "logs/train.log"} <= set(names)
  assert "no training is running" in script("stop-train", out).stdout


def test_a_failed_training_fails_the_run_and_is_reported(tmp_path):
  r = script("all", str(tmp_path), timeout=120, PRESET="no_such_preset", PROBE_MINUTES="0")
  assert r.returncode != 0
  assert "train: failed" in r.stdout and "eval: not started" in r.stdout
  assert "unknown finetune preset" in r.stderr
  phase, _, _, rc = (tmp_path / "logs" / "phase_times.tsv").read_text().split("\t")
  assert phase == "train" and rc.strip() != "0"

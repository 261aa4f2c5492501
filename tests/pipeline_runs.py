"""``experiments/pipeline.py`` run in subprocesses on a tiny model, for the multi-host and
preemption tests: one uninterrupted single-process reference run (made once per session) and
a comparison of everything a run writes except timings."""

from __future__ import annotations

import atexit
import functools
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = "dev80-small:4"
TIMEOUT_S = 240
# Everything run_pipeline writes, compared byte for byte (report.html without its timing lines).
OUTPUTS = ("submission.json", "candidates.json", "scores.json", "errors.json", "report.html")


@functools.lru_cache(maxsize=None)
def scratch() -> str:
  d = tempfile.mkdtemp(prefix="ttt_jax_runs_")
  atexit.register(shutil.rmtree, d, True)
  return d


@functools.lru_cache(maxsize=None)
def model_dir() -> str:
  """A tiny random model directory (float32, 1024 context)."""
  import jax  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import config, store, transformer  # pylint: disable=g-import-not-at-top
  d = os.path.join(scratch(), "model")
  cfg = config.get_config("tiny", dtype="float32", max_seq_len=1024)
  store.save_model(d, transformer.init_params(cfg, jax.random.key(0)), cfg, dtype="float32")
  return d


def command(out_dir: str) -> list[str]:
  """The pipeline binary on 4 small tasks; groups of 2 so that two processes both get work."""
  return [sys.executable, "-m", "experiments.pipeline", f"--config.tasks={TASKS}",
          f"--config.model_dir={model_dir()}", f"--config.out_dir={out_dir}",
          "--config.lora.rank=4", "--config.ttt.n_max=4", "--config.ttt.epochs=1",
          "--config.ttt.max_tokens=512", "--config.ttt.group_size=2",
          "--config.infer.max_tokens=512", "--config.infer.n_orders=1",
          "--config.infer.answer_budget=demos",
          "--config.infer.group_size=2"]


def env(process_id: Optional[int] = None, num_processes: int = 1,
        coordinator: Optional[str] = None) -> dict[str, str]:
  """A CPU-only environment: one device per process, no cluster variables inherited."""
  e = {k: v for k, v in os.environ.items()
       if not k.startswith(("JAX_", "SLURM_", "TPU_", "MEGASCALE_")) and k != "XLA_FLAGS"}
  e.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  if coordinator is not None:
    e.update(JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES=str(num_processes),
             JAX_PROCESS_ID=str(process_id))
  return e


def start(out_dir: str, log_name: str, **env_kw) -> subprocess.Popen:
  log = open(os.path.join(scratch(), log_name), "w")  # pylint: disable=consider-using-with
  return subprocess.Popen(command(out_dir), cwd=ROOT, env=env(**env_kw), stdout=log,
                          stderr=subprocess.STDOUT)


def log_tail(log_name: str, n: int = 3000) -> str:
  with open(os.path.join(scratch(), log_name)) as f:
    return f.read()[-n:]


def wait(proc: subprocess.Popen, log_name: str, timeout: float = TIMEOUT_S) -> None:
  try:
    rc = proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise AssertionError(f"{log_name}: no result in {timeout}s\n{log_tail(log_name)}")
  assert rc == 0, f"{log_name} exited with {rc}:\n{log_tail(log_name)}"


def run(out_dir: str, log_name: str) -> None:
  wait(start(out_dir, log_name), log_name)


@functools.lru_cache(maxsize=None)
def reference() -> str:
  """Output directory of one uninterrupted single-process run."""
  out = os.path.join(scratch(), "reference")
  run(out, "reference.log")
  return out


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _adapter_meta(path: str) -> dict:
  with open(path) as f:
    meta = json.load(f)
  meta.pop("group_seconds", None)  # wall time of the group's training
  return meta


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if path.endswith("report.html"):
    data = re.sub(rb"<li>time: [^<]*</li>", b"", data)
  return data


def assert_same_outputs(out: str, ref: str) -> None:
  """Final files, per-task predictions and adapters equal the reference run's."""
  for name in OUTPUTS:
    assert _read(os.path.join(out, name)) == _read(os.path.join(ref, name)), name
  names = lambda d, pat: sorted(os.path.relpath(p, d) for p in glob.glob(os.path.join(d, pat)))
  for pat in ("predictions/*.json", "adapters/*.safetensors", "adapters/*.json"):
    assert names(out, pat) == names(ref, pat), pat
    assert names(ref, pat), pat
    for rel in names(ref, pat):
      if rel.startswith("adapters/") and rel.endswith(".json"):
        assert _adapter_meta(os.path.join(out, rel)) == _adapter_meta(os.path.join(ref, rel)), rel
      else:
        assert _read(os.path.join(out, rel)) == _read(os.path.join(ref, rel)), rel
  assert not glob.glob(os.path.join(out, "predictions", "parts", "*.json")), "unmerged parts"

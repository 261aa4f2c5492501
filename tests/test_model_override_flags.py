"""``--config.model_overrides.FIELD=...`` on a real binary: a field the preset does not set (dim)
and bool fields reach the exported model's config.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_finetune_binary_applies_command_line_model_overrides(tmp_path):
  out = str(tmp_path / "run")
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  cmd = [sys.executable, "-m", "experiments.finetune",
         "--config=experiments/configs/finetune.py:quick", f"--config.out_dir={out}",
         "--config.steps=2", "--config.batch_size=2", "--config.max_tokens=512",
         "--config.min_bucket=128", "--config.data.sources=generators:1",
         "--config.data.eval_tasks=", "--config.checkpoint_every=2",
         "--config.async_checkpoint=False",
         "--config.model_overrides.dim=96", "--config.model_overrides.grid_positions=True",
         "--config.model_overrides.tie_embeddings=true"]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(out, "model", "config.json")) as f:
    cfg = json.load(f)
  assert cfg["dim"] == 96 and cfg["grid_positions"] is True and cfg["tie_embeddings"] is True
  # the rest is the tiny preset plus the quick preset's own overrides, as without flags
  assert (cfg["n_layers"], cfg["head_dim"], cfg["max_seq_len"], cfg["dtype"], cfg["remat"],
          cfg["name"]) == (2, 16, 1024, "float32", False, "tiny")


def test_auto_attention_is_cudnn_on_a_gpu_and_flash_elsewhere(monkeypatch):
  """The paper preset's ``attention_impl="auto"`` never reaches ModelConfig: reading the
  section resolves it for the backend (a GPU is stood in for by ``default_backend``)."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments.configs import pipeline as pipeline_config  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import config, overrides  # pylint: disable=g-import-not-at-top
  over = overrides.set_overrides(pipeline_config.get_config("paper").model_overrides)
  assert jax.default_backend() == "cpu" and over["attention_impl"] == "flash"
  config.get_config("tiny").replace(**over)  # a valid ModelConfig
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert overrides.set_overrides({"attention_impl": "auto"}) == {"attention_impl": "cudnn"}
  assert overrides.set_overrides({"attention_impl": "xla", "dim": None}) == {
      "attention_impl": "xla"}

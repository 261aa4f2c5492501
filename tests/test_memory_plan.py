"""The memory plan: the shapes it reads from a pipeline config, its figures against what the
CPU actually allocates when the planned program runs, and the binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from experiments.configs import pipeline as pipeline_config
from ttt_jax.model import config
from ttt_jax.pipeline import memory_plan


def test_paper_preset_shapes():
  cfg = pipeline_config.get_config("paper")
  s = memory_plan.from_pipeline_config(cfg, config.get_config("llama-3.2-1b"))
  assert (s.ttt_tasks, s.ttt_batch, s.ttt_tokens) == (cfg.ttt.group_size, cfg.ttt.batch_size, 8192)
  assert s.prompt_tokens + s.answer_tokens == 8192 and s.answer_tokens == 931
  assert s.infer_tasks == cfg.infer.group_size and s.decode_rows % 8 == 0
  with pytest.raises(ValueError, match="leaves no room"):  # tiny: 512 tokens, a 931-token answer
    memory_plan.from_pipeline_config(cfg, config.get_config("tiny"))


def test_cudnn_is_modelled_by_flash_on_a_host_without_it():
  cfg, note = memory_plan.host_model_config(config.get_config("tiny", attention_impl="cudnn"))
  assert cfg.attention_impl == "flash" and "flash" in note


# Runs the planned TTT step for real in a fresh process: the growth of the resident set's
# high-water mark (reset just before the run: Linux's clear_refs) is what the CPU allocated for
# its temporaries and outputs.
_PROBE = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp
    from ttt_jax.model import config, lora
    from ttt_jax.pipeline import memory_plan
    from ttt_jax.train.optim import OptimConfig
    mcfg = config.ModelConfig(vocab_size=16, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64,
                              ffn_dim=512, max_seq_len=2048, dtype="float32", name="probe")
    shapes = memory_plan.Shapes(ttt_tasks=2, ttt_batch=2, ttt_tokens=1024, infer_tasks=1, decode_rows=1,
                                prompt_tokens=8, answer_tokens=8, score_rows=1, score_tokens=16)
    prog = memory_plan.program("ttt", mcfg, lora.LoraConfig(rank=8, alpha=16.0), OptimConfig(), shapes)
    plan = memory_plan.compiled_memory(prog)
    compiled = prog.fn.lower(*prog.args).compile()
    args = jax.block_until_ready(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), prog.args))
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(field + ":"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark restarts at the current resident set
    before = status("VmRSS")
    jax.block_until_ready(compiled(*args))
    after = status("VmHWM")
    print(json.dumps({"growth": after - before, "planned": plan.temp_bytes + plan.output_bytes}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
def test_plan_matches_what_the_cpu_allocates():
  r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=True)
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got["planned"] > 200e6  # large enough that the allocator's own noise does not matter
  assert 0.8 < got["growth"] / got["planned"] < 1.25, got


def test_binary_prints_the_table_and_fails_a_size_that_does_not_fit(tmp_path):
  out = tmp_path / "plan.md"
  r = subprocess.run([sys.executable, "-m", "experiments.memory_plan", "--model=tiny",
                      "--config=experiments/configs/pipeline.py", "--config.infer.answer_budget=64",
                      "--stages=dfs,scoring", "--require_fit=0.000001", f"--out={out}"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 1, r.stderr[-2000:]
  rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and "---" not in ln]
  assert len(rows) == 3 and "DFS step" in rows[1] and "scoring" in rows[2]
  assert rows[1].endswith("| yes | yes |")  # a few MB fit both GPUs
  assert out.read_text().count("| DFS step") == 1
  r = subprocess.run([sys.executable, "-m", "experiments.memory_plan", "--model=nonexistent"],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "neither a preset" in r.stderr

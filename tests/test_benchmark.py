"""The benchmark binary's CPU smoke (structure, not speed) and the fairness of its HF comparison."""

from __future__ import annotations

import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark as bm
from experiments.bench import decode as bench_decode
from experiments.bench import harness, hf_torch, models
from experiments.configs import benchmark as bench_config
from ttt_jax.model import config as config_lib
from ttt_jax.model import lora as lora_lib
from ttt_jax.model import transformer

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  cfg = bench_config.get_config("smoke")
  cfg.benchmarks_md = str(out / "BENCHMARKS.md")
  cfg.json_out = str(out / "bench.json")
  rows = bm.run_benchmarks(cfg, command="python -m experiments.benchmark --config=...:smoke")
  return cfg, rows, (out / "BENCHMARKS.md").read_text(), json.loads((out / "bench.json").read_text())


def _positive(x) -> bool:
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_smoke_has_all_four_measurements_with_positive_ratios(smoke):
  cfg, rows, _, _ = smoke
  by = {m: [r for r in rows if r["measurement"] == m] for m in bm.MEASUREMENTS}
  assert len(by["lora"]) == len(cfg.lora.seq_lens)
  assert [r["k"] for r in by["multitask"]] == list(cfg.multitask.ks)
  assert len(by["full"]) == len(cfg.full.seq_lens) and len(by["decode"]) == len(cfg.decode.batch_sizes)
  for r in by["lora"] + by["multitask"] + by["decode"]:
    assert _positive(r["speedup"]), r
  for r in by["full"]:
    assert _positive(r["ours_tok_s"]) and r["ours_mfu"] is None  # no peak FLOP/s for a CPU
  for r in by["decode"]:
    assert r["roofline_tok_s"] is None and _positive(r["ours_decode_tok_s"])


def test_smoke_compares_equal_models(smoke):
  """Both sides hold the same weights: equal counts, equal step-0 loss, equal greedy tokens."""
  _, rows, _, _ = smoke
  for r in rows:
    if r["measurement"] == "lora":
      assert (r["params"], r["trainable"]) == (r["hf_params"], r["hf_trainable"])
      assert abs(r["ours_loss0"] - r["hf_loss0"]) < 1e-3 * r["hf_loss0"]
    if r["measurement"] == "decode":
      assert r["token_agreement"] >= 0.95  # float32, same weights: near-ties aside, the same argmax


def test_smoke_report_has_provenance_and_tables(smoke):
  cfg, rows, md, js = smoke
  assert md.startswith("# Benchmarks")
  assert f"## {cfg.label}" in md and "CPU smoke (not a performance figure)" in md
  for line in ("- device: ", "- date: ", "- versions: jax ", "torch ", "- command: `python -m experiments.benchmark"):
    assert line in md, line
  for title in ("### 1. LoRA", "### 2. Full", "### 3. Many tasks", "### 4. Augmented decoding"):
    assert title in md, title
  assert "n/a (no peak" in md and "n/a (no bandwidth" in md
  assert len(js["rows"]) == len(rows) and js["env"]["device_kind"] == jax.devices()[0].device_kind
  cfg2 = bench_config.get_config("smoke")
  cfg2.benchmarks_md, cfg2.json_out = cfg.benchmarks_md, ""
  bm.write_reports(rows, js["env"], cfg2, "second")
  md2 = open(cfg.benchmarks_md).read()
  assert md2.startswith(md) and md2.count("# Benchmarks\n") == 1 and md2.count(f"## {cfg.label}") == 2


def test_hf_peft_model_from_our_weights_gives_our_logits():
  """Apples to apples: HF Llama + peft, loaded with our params and a non-zero adapter, equals our forward.

  Tied head and llama3 RoPE as in Llama-3.2-1B; the untied head (arc-small, tiny) is covered by the
  smoke's equal step-0 losses and greedy tokens.
  """
  cfg = config_lib.get_config("tiny", dtype="float32", rope_theta=500_000.0, tie_embeddings=True,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
  lcfg = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
  toks, mask = bench_decode.decode_prompts(cfg.vocab_size, 3, 40, 10, seed=0)  # left padded
  positions = np.asarray(transformer.positions_from_mask(jnp.asarray(mask)))
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: x + 0.1 * (x.ndim == 1), params)  # norms away from 1
  adapter = bench_decode.trained_like_adapter(cfg, lcfg, jax.random.key(1))
  model = hf_torch.build_hf_model(cfg, params, lcfg=lcfg, adapter=adapter)
  assert hf_torch.hf_param_counts(model) == (transformer.count_params(params), lora_lib.count_params(adapter))
  fwd = jax.jit(lambda p, a, cfg=cfg: transformer.forward(p, a, toks, positions, mask, cfg=cfg, lora_cfg=lcfg))
  ours, ours_base = fwd(params, adapter), fwd(params, jax.tree.map(jnp.zeros_like, adapter))
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(toks).long(), attention_mask=torch.tensor(mask).long(),
                position_ids=torch.tensor(positions)).logits.numpy()
  err = np.abs(np.asarray(ours) - ref)[mask].max()  # pad queries differ by design
  assert err < 1e-4, err
  assert np.abs(np.asarray(ours_base) - ref)[mask].max() > 10 * err  # the adapter mattered


def test_gpu_preset_models_have_hf_equal_parameter_counts():
  """At full size (shapes only: ours by eval_shape, HF + peft on the meta device) both sides match."""
  import peft  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  cfg = bench_config.get_config("gpu")
  lcfg = models.lora_config(cfg)
  for name in sorted(set(cfg.lora.models) | {cfg.multitask.model}):
    mcfg = models.model_config(name, cfg, param_dtype=cfg.lora_base_param_dtype)
    params = jax.eval_shape(lambda k, mcfg=mcfg: transformer.init_params(mcfg, k), jax.random.key(0))
    adapter = jax.eval_shape(lambda k, mcfg=mcfg: lora_lib.init_lora(mcfg, lcfg, k), jax.random.key(0))
    with torch.device("meta"):
      model = peft.get_peft_model(transformers.LlamaForCausalLM(hf_torch.hf_llama_config(mcfg)),
                                  hf_torch.peft_lora_config(lcfg))
    assert hf_torch.hf_param_counts(model) == (transformer.count_params(params), lora_lib.count_params(adapter)), name


def test_decode_roofline_counts_weights_adapter_and_live_cache():
  mcfg = config_lib.get_config("tiny", dtype="float32")
  params = jax.eval_shape(lambda k: transformer.init_params(mcfg, k), jax.random.key(0))
  lens = np.array([10, 20])
  tok_s, bytes_step = bench_decode.decode_roofline_tok_s(params, None, mcfg, lens, new_tokens=5, bandwidth=1e9)
  weights = 4 * (transformer.count_params(params) - mcfg.vocab_size * mcfg.dim)  # untied: embedding not read
  kv = 2 * mcfg.n_layers * mcfg.kv_dim * 4 * 2 * (15 + 2)  # 2 sequences, mean context 15 + (5-1)/2
  assert bytes_step == weights + kv
  assert tok_s == pytest.approx(2 * 1e9 / bytes_step)
  assert bench_decode.decode_roofline_tok_s(params, None, mcfg, lens, 5, None)[0] is None


def test_device_tables():
  dev = lambda kind: types.SimpleNamespace(device_kind=kind)
  assert harness.hbm_bandwidth_per_device(dev("NVIDIA H100 80GB HBM3")) == 3.35e12
  assert harness.hbm_bandwidth_per_device(dev("NVIDIA H100 PCIe")) == 2.0e12
  assert harness.hbm_bandwidth_per_device(dev("NVIDIA H200")) == 4.8e12
  assert harness.hbm_bandwidth_per_device(dev("cpu")) is None


def test_bad_config_is_rejected():
  cfg = bench_config.get_config("smoke")
  cfg.profile_dir, cfg.profile_what = "/tmp/x", "everything"
  with pytest.raises(ValueError, match="profile_what"):
    bm.run_benchmarks(cfg)
  cfg.profile_dir, cfg.only = "", "lora,train"
  with pytest.raises(ValueError, match="only: unknown"):
    bm.run_benchmarks(cfg)
  with pytest.raises(ValueError, match="unknown benchmark preset"):
    bench_config.get_config("tpu")


def test_median_seconds_skips_warmup_and_takes_the_median():
  calls = []
  # A scripted clock: the timed calls take 5, 1 and 3 units; warm-up calls read no clock at all.
  ticks = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])
  median, first = harness.median_seconds(lambda: calls.append(1) or len(calls), lambda x: x,
                                     warmup=2, iters=3, clock=lambda: next(ticks))
  assert len(calls) == 5 and first == 1 and median == 3.0


def test_smoke_pipeline_measures_cold_and_warm_tasks_per_minute(smoke):
  cfg, rows, md, _ = smoke
  runs = [r for r in rows if r["measurement"] == "pipeline"]
  assert [r["run"] for r in runs] == ["cold"] + ["warm"] * (cfg.pipeline.repeats - 1)
  for r in runs:
    assert r["n_tasks"] == 1 and r["scored"] == 1 and r["views"] > 0
    assert _positive(r["ttt_tasks_min"]) and _positive(r["predict_tasks_min"])
    assert r["ttt_tasks_min"] == pytest.approx(60 * r["n_tasks"] / r["ttt_s"])
  assert "### 5. Whole pipeline" in md and "`dev80-small:1` (1 task)" in md


def test_profiled_traces_only_the_chosen_measurement(tmp_path):
  cfg = types.SimpleNamespace(profile_dir=str(tmp_path), profile_what="decode")
  for what in ("decode", "lora"):
    with harness.profiled(cfg, what, what):
      jax.block_until_ready(jnp.ones(3) + 1)
  traced = {p.parts[len(tmp_path.parts)] for p in tmp_path.rglob("*.xplane.pb")}
  assert traced == {"decode"}

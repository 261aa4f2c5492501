"""Benchmark config. Presets: ``benchmark.py:gpu`` (the issue's sizes, bf16, one H100/H200),
``benchmark.py:window`` (one size each, for a short lent window) and ``benchmark.py:smoke`` (tiny model, float32, a few seconds on CPU; what CI runs).

Every measurement can be switched off (``--config.lora.enabled=False``) or resized from the command
line, e.g. ``--config.lora.seq_lens=2048,4096 --config.decode.batch_sizes=48``; the fused attention
is ``--config.model_overrides.attention_impl=cudnn``.
"""

from ml_collections import config_dict

from experiments.configs import pipeline as pipeline_config
from ttt_jax.model import overrides


def get_config(preset: str = "gpu") -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.preset = preset
  c.label = "GPU run"  # goes into the BENCHMARKS.md section title
  c.seed = 0
  c.warmup = 1  # untimed calls before timing (the first one compiles)
  c.iters = 5  # timed calls; the median is reported
  c.only = ""  # e.g. "lora,decode": run just these measurements (else every enabled one)
  c.hf = True  # also time HF transformers + peft (torch) on the same device
  # Applied to every model preset: bf16 activations; the frozen base of LoRA runs in bf16 too
  # (``lora_base_param_dtype``), full fine-tuning keeps float32 master weights (mixed precision).
  c.model_overrides = overrides.override_fields(dtype="bfloat16")  # any ModelConfig field but rope_scaling
  c.lora_base_param_dtype = "bfloat16"
  c.lora_cfg = overrides.lora_section()  # the adapters every measurement uses (the common defaults)
  # 0: look the device up in the tables of experiments/benchmark.py (CPU has none: columns say n/a).
  c.peak_flops = 0.0  # dense bf16 FLOP/s of one device
  c.hbm_bandwidth = 0.0  # bytes/s of one device
  c.benchmarks_md = "BENCHMARKS.md"  # section appended here ("" to skip)
  c.json_out = "runs/benchmark/benchmarks.json"  # rows of this run ("" to skip)
  c.profile_dir = ""  # when set, jax.profiler.trace around the timed region of `profile_what`
  c.profile_what = "lora"  # lora | full | multitask | decode | pipeline
  c.compiler_options = config_dict.ConfigDict()  # XLA options for the jitted train steps (smoke: fast compiles)

  # 1. The TTT step: one LoRA AdamW update, ours vs HF + peft.
  c.lora = config_dict.ConfigDict(dict(enabled=True, models=("llama-3.2-1b", "arc-small"), batch_size=2,
                                       seq_lens=(2048, 4096, 8192), remat=True))
  # 2. Full fine-tuning step (ours): tokens/s and MFU.
  c.full = config_dict.ConfigDict(dict(enabled=True, models=("llama-3.2-1b", "arc-small"), batch_size=2,
                                       seq_lens=(2048, 4096, 8192), remat=True))
  # 3. K adapters in one vmapped step vs the same K tasks one after another (ours).
  c.multitask = config_dict.ConfigDict(dict(enabled=True, model="arc-small", batch_size=2, seq_len=2048,
                                            ks=(8, 16, 32), remat=True))
  # 4. Augmented decoding of one task's views (greedy, with its adapter), ours vs HF generate.
  c.decode = config_dict.ConfigDict(dict(enabled=True, models=("llama-3.2-1b", "arc-small"),
                                         batch_sizes=(24, 48), prompt_len=2048, prompt_len_spread=64,
                                         new_tokens=300, param_dtype="bfloat16", with_lora=True,
                                         chunk=0))  # decode steps per compiled loop; 0: decode.default_chunk
  # 5. The whole pipeline (experiments/configs/pipeline.py, default: the embedded model on a small task
  # set): TTT and prediction tasks per minute, a cold run (compiling) then warm ones.
  c.pipeline = config_dict.ConfigDict(dict(enabled=True, repeats=2, config=pipeline_config.get_config("")))

  if preset == "smoke":
    c.label = "CPU smoke (not a performance figure)"
    c.warmup = 1
    c.iters = 3
    c.model_overrides = overrides.override_fields(dtype="float32", max_seq_len=512)
    c.lora_base_param_dtype = "float32"
    c.lora_cfg.rank = 8
    c.lora.models = ("tiny",)
    c.lora.seq_lens = (64,)
    c.lora.remat = False
    c.full.models = ("tiny",)
    c.full.seq_lens = (128,)
    c.full.remat = False
    c.multitask.remat = False
    c.multitask.model = "tiny"
    c.multitask.seq_len = 64
    c.multitask.ks = (2,)
    c.decode.models = ("tiny",)
    c.decode.batch_sizes = (4,)
    c.decode.prompt_len = 48
    c.decode.prompt_len_spread = 8
    c.decode.new_tokens = 16
    c.decode.param_dtype = "float32"
    c.pipeline.config.tasks = "dev80-small:1"  # a smoke: one task, few views, short answers
    c.pipeline.config.ttt.epochs, c.pipeline.config.ttt.n_max = 1, 8
    c.pipeline.config.infer.n_orders, c.pipeline.config.infer.answer_budget = 1, "demos"
    c.pipeline.config.ttt.n_max = 4
    c.pipeline.config.infer.n_orders = 1
    c.pipeline.config.infer.answer_budget = "demos"  # the documented CPU smoke cap
    # Halves CPU compile time of the train steps; the smoke proves the code paths, not speed.
    c.compiler_options = config_dict.ConfigDict(dict(xla_backend_optimization_level=0,
                                                     xla_llvm_disable_expensive_passes=True))
    c.benchmarks_md = "runs/benchmark_smoke/BENCHMARKS.md"  # not the committed file
    c.json_out = "runs/benchmark_smoke/benchmarks.json"
  elif preset == "window":
    # One size per measurement, each sized to finish in about a minute of a lent GPU window
    # (experiments/gpu_window.py runs them one per process, on a deadline).
    c.label = "GPU window"
    c.iters = 3
    c.lora.models = ("llama-3.2-1b",)
    c.lora.seq_lens = (2048,)
    c.full.models = ("llama-3.2-1b",)
    c.full.seq_lens = (2048,)
    c.multitask.ks = (16,)
    c.multitask.seq_len = 1024
    c.decode.models = ("llama-3.2-1b",)
    c.decode.batch_sizes = (24,)
    c.decode.new_tokens = 128
    c.json_out = ""
  elif preset != "gpu":
    raise ValueError(f"unknown benchmark preset {preset!r}; known: gpu, window, smoke")
  return c

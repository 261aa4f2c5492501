"""Initial fine-tuning config. Presets: ``finetune.py`` (arc-small, full FT), ``finetune.py:quick``
(tiny model, a couple of CPU minutes), ``finetune.py:cpu`` (the embedded default model's recipe:
arc-cpu, about 90 minutes on 2 CPU cores, held-out generator families), ``finetune.py:lora``
(LoRA instead of full fine-tuning), ``finetune.py:gpu`` (the GPU recipe: a 7.7M-parameter
arc-cpu-design model, bf16, length-sorted batches fed by worker processes, a 15-minute wall-time
budget; ``launch/gpu_train_eval.sh`` runs it, docs/training.md "GPU recipe" says why).

Override anything from the command line, e.g. ``--config.steps=500 --config.optim.learning_rate=1e-4``.
"""

from ml_collections import config_dict

from ttt_jax.model import overrides

# Held out of the cpu preset's fine-tuning; each has a related family that is trained on
# (crop_largest_object, gravity_cells, tile_with_flips, overlay_and/or, recolour_by_size,
# hollow_rectangles), so the held-out tasks are new but not alien.
HELD_OUT_FAMILIES = ("crop_smallest_object", "draw_bounding_box", "gravity_objects",
                     "mirror_concat", "overlay_xor", "recolour_largest")


def get_config(preset: str = "") -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.model = "arc-small"  # preset of ttt_jax.model.config
  # Every ModelConfig field but rope_scaling, unset (None) unless given, e.g.
  # --config.model_overrides.dim=256 --config.model_overrides.remat=True (ttt_jax.model.overrides).
  c.model_overrides = overrides.override_fields()
  # The base model to start from (every binary's name for it): a previous run's out_dir/params, a
  # ttt_jax.model.store directory, an HF Llama directory or an orbax tree; "" = the preset, random.
  c.model_dir = ""
  c.lora = overrides.lora_section(enabled=False)  # + rank, alpha, targets (the common defaults)
  # The paper's initial fine-tuning: lr 2.5e-5, batch 32, cosine with 2k warmup, up to 16k steps.
  c.optim = config_dict.ConfigDict(dict(
      learning_rate=2.5e-5, warmup_steps=2000, warmup_frac=0.0, final_lr_frac=0.0,
      weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, clip_norm=1.0, accum_steps=1))
  c.steps = 16_000
  c.batch_size = 32
  c.max_tokens = 8192  # examples longer than this lose leading demonstrations (or are skipped)
  c.min_bucket = 256  # padded lengths are powers of two from here up to max_tokens
  # > 0: batches of data.sort_window length-sorted examples, each at most this many padded
  # tokens (batch_tokens // bucket rows) instead of batch_size examples in stream order.
  c.batch_tokens = 0
  c.max_minutes = 0.0  # > 0: stop after the step that crosses this much wall time (all resumes)
  c.seed = 0
  c.data = config_dict.ConfigDict(dict(
      # Weighted sources of the task stream: "generators" (procedural families) and any
      # ttt_jax.arc.io.load_tasks name (under a random paper augmentation per draw).
      sources="generators:1,arc1-train:1",
      loss_mode="all_outputs",
      eval_tasks="dev80",  # held-out loss on these tasks' test pairs ("" to disable)
      num_eval_tasks=32,
      # Generator families never generated for fine-tuning: fresh tasks of them measure
      # generalisation to task types the model has never seen (experiments/generated_tasks.py).
      exclude_families=(),
      sort_window=0,  # examples planned together when batch_tokens > 0
      feed_workers=0))  # processes making examples (ttt_jax.train.feed); -1: all cores but two
  c.out_dir = "runs/finetune"
  c.log_every = 10
  c.tensorboard = True  # also out_dir/tensorboard event files, if tensorboardX is installed
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.async_checkpoint = True
  c.export_on_checkpoint = False  # also write out_dir/model (meta status "partial") at each one
  c.peak_flops_per_device = 0.0  # 0: look up by device kind (MFU not logged on CPU)
  c.mesh = config_dict.ConfigDict(dict(data=-1, fsdp=1, model=1))

  if preset == "quick":  # tiny model on CPU in about two minutes
    c.model = "tiny"
    c.model_overrides = overrides.override_fields(max_seq_len=1024, dtype="float32")
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 20
    c.steps = 100
    c.batch_size = 8
    c.max_tokens = 1024
    c.min_bucket = 128
    c.data.num_eval_tasks = 16
    c.out_dir = "runs/finetune_quick"
    c.eval_every = 50
    c.checkpoint_every = 50
  elif preset == "cpu":  # the embedded default model: ~90 min on 2 cores (docs/training.md)
    c.model = "arc-cpu"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.final_lr_frac = 0.05
    c.steps = 500
    c.batch_size = 8
    c.max_tokens = 1024
    c.min_bucket = 256
    c.data.exclude_families = HELD_OUT_FAMILIES
    c.data.num_eval_tasks = 16
    c.out_dir = "runs/finetune_cpu"
    c.log_every = 10
    c.eval_every = 200
    c.checkpoint_every = 50
    c.async_checkpoint = False
  elif preset == "gpu":  # one H100/H200 for ~15 minutes (docs/training.md, "GPU recipe")
    c.model = "arc-cpu"  # the default model's design (grid positions, compact vocabulary) ...
    c.model_overrides = overrides.override_fields(  # ... at 7.7M parameters: 15.3 MB in bf16
        dim=384, n_layers=6, n_heads=6, n_kv_heads=2, head_dim=64, ffn_dim=768,
        max_seq_len=8192, dtype="bfloat16", remat=True, name="arc-gpu")
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 1000
    c.optim.final_lr_frac = 0.05
    c.steps = 32_000  # estimate (40% MFU); launch/gpu_train_eval.sh re-plans from the pace
    c.max_minutes = 15.0
    c.batch_size = 32  # held-out eval batches
    c.batch_tokens = 65_536
    c.max_tokens = 4096
    c.min_bucket = 256
    c.data.exclude_families = HELD_OUT_FAMILIES
    c.data.sort_window = 1024
    c.data.feed_workers = -1
    c.data.num_eval_tasks = 32
    c.out_dir = "runs/finetune_gpu"
    c.log_every = 200
    c.eval_every = 2000
    c.checkpoint_every = 3000  # about every 1.5-3.5 minutes at the estimated pace
    c.export_on_checkpoint = True
  elif preset == "lora":
    c.lora.enabled = True
    c.optim.learning_rate = 1e-4
  elif preset:
    raise ValueError(f"unknown finetune preset {preset!r}; known: quick, cpu, gpu, lora")
  return c

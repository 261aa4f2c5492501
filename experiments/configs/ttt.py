"""Per-task test-time training config. Presets: ``ttt.py`` (paper defaults), ``ttt.py:quick``
(tiny model, 4 dev tasks, CPU smoke run), ``ttt.py:shared`` (one adapter for all tasks, the
paper's ablation).

The learning rate defaults to the paper's choice for the model (5e-5 for models of 0.5B-5B parameters, like its 1B/3B, else 1e-4; by shape, not name);
``--config.optim.learning_rate=...`` overrides it. ``--config.optim.clip_norm=0`` turns gradient
clipping off (None does too, from Python), as the reference code trains; ``ttt.data_mode``
"reference" builds the TTT set the way the reference code does (``ttt_jax.data.loo``).
"""

from ml_collections import config_dict

from ttt_jax.model import overrides


def get_config(preset: str = "") -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.model = "arc-small"
  c.model_overrides = overrides.override_fields()  # --config.model_overrides.FIELD=... (any ModelConfig field)
  c.model_dir = ""  # the base model (finetune's out_dir/params, a model or HF dir); "" = random (smoke only)
  c.tasks = "dev80"  # any ttt_jax.arc.io.load_tasks spec; "name:N" keeps the first N
  c.out_dir = "runs/ttt"
  c.overwrite = False  # retrain tasks whose adapters already exist
  c.lora = overrides.lora_section()  # rank, alpha, targets (ttt_jax.model.config.LORA_DEFAULTS)
  c.optim = config_dict.ConfigDict(dict(
      learning_rate=config_dict.placeholder(float), warmup_frac=0.1, weight_decay=0.01,
      clip_norm=config_dict.FieldReference(1.0, field_type=float),  # None or 0: no clipping
      accum_steps=1, final_lr_frac=0.0))
  c.ttt = config_dict.ConfigDict(dict(
      batch_size=2, epochs=2, n_max=250, max_tokens=8192, loss_mode="all_outputs", augment=True,
      group_size=8, min_bucket=256, seed=0, shared_adapter=False, log_every=20,
      data_mode="ours"))  # "ours" | "reference"
  c.mesh = config_dict.ConfigDict(dict(data=-1, fsdp=1, model=1))

  if preset == "quick":
    c.model = "tiny"
    c.model_overrides = overrides.override_fields(max_seq_len=1024, dtype="float32")
    c.tasks = "dev80:4"
    c.out_dir = "runs/ttt_quick"
    c.lora.rank = 8
    c.ttt.n_max = 8
    c.ttt.max_tokens = 1024
    c.ttt.min_bucket = 128
    c.ttt.group_size = 4
  elif preset == "shared":
    c.ttt.shared_adapter = True
    c.out_dir = "runs/ttt_shared"
  elif preset:
    raise ValueError(f"unknown ttt preset {preset!r}; known: quick, shared")
  return c

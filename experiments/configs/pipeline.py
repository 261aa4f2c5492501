"""End-to-end pipeline config (TTT -> augmented prediction -> vote -> score).

Presets, chosen after ``:`` in ``--config=experiments/configs/pipeline.py:PRESET``:
  (none)   the embedded default: the model shipped in ttt_jax/assets/default_model on a small
           dev-80 task set, sized to finish in a few minutes on a 2-core CPU;
  paper    the paper's TTT and inference settings (rank 128, alpha 16, 2 epochs, batch 2,
           250 examples, 8192 tokens, 2 demonstration orders) on all of dev-80;
  no_ttt   the fine-tuned model with augmented inference and voting only.
Override anything from the command line, e.g. ``--config.tasks=arc1-eval --config.ttt.epochs=1``.
"""

from ml_collections import config_dict


def get_config(preset: str = "") -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.tasks = "dev80-small"  # any ttt_jax.arc.io.load_tasks spec ("name:N" keeps N tasks)
  c.solutions = ""  # Kaggle solutions file, when tasks is a challenges file
  c.model_dir = ""  # a ttt_jax.model.store directory; "" = the embedded default model
  c.model_overrides = config_dict.ConfigDict()
  c.out_dir = "runs/pipeline"
  c.adapters_dir = ""  # with ttt.enabled=False: use adapters saved here (experiments/ttt.py)
  c.seed = 0
  c.ttt = config_dict.ConfigDict(dict(
      enabled=True, lora_rank=32, lora_alpha=16.0,
      lora_targets=("q", "v", "o", "gate", "up", "down"),
      learning_rate=config_dict.placeholder(float),  # None: the paper's choice for the model
      epochs=2, batch_size=2, n_max=24, max_tokens=2048, loss_mode="all_outputs",
      augment=True, group_size=4, min_bucket=128, shared_adapter=False,
      clip_norm=config_dict.FieldReference(1.0, field_type=float),  # None or 0: no clipping
      data_mode="ours"))  # "reference": the TTT set as the paper's code builds it
  c.infer = config_dict.ConfigDict(dict(
      n_orders=2, leave_out=1, max_tokens=2048, group_size=4, seed=0, vote="hierarchical"))

  if preset == "paper":
    c.tasks = "dev80"
    c.ttt.lora_rank, c.ttt.n_max, c.ttt.max_tokens = 128, 250, 8192
    c.ttt.group_size, c.ttt.min_bucket = 8, 256
    c.infer.max_tokens, c.infer.group_size = 8192, 8
  elif preset == "no_ttt":
    c.ttt.enabled = False
  elif preset:
    raise ValueError(f"unknown pipeline preset {preset!r}; known: paper, no_ttt")
  return c

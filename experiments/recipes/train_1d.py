"""Issue 13 ablation: the cpu recipe with 1-D positions only (grid_positions off)."""
from absl import logging
from experiments.configs import finetune as F
from ttt_jax.train import finetune
logging.set_verbosity(logging.INFO)
c = F.get_config("cpu")
c.model_overrides.grid_positions = False
c.model_overrides.name = "arc-cpu-1d"
c.out_dir = "runs/finetune_cpu_1d"
print(finetune.run_finetune(c))

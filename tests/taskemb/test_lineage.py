"""The committed task-embedding checkpoint is one the cpu preset resumes: same pool (so every
task-table row still names its task), same shapes, a whole optimizer state."""

from __future__ import annotations

import jax
import numpy as np

from experiments.configs import taskemb
from ttt_jax.taskemb import checkpoint, model, pretrain


def test_the_committed_lineage_matches_the_cpu_preset():
  c = taskemb.get_config("cpu").to_dict()
  cfg = pretrain.PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
  state = checkpoint.load_state(cfg.init_from)
  pool = pretrain.build_pool(cfg)
  assert state["pool_digest"] == pretrain.pool_digest(pool), "generator or pool code changed the pool"
  assert state["pool_task_ids"] == list(pool.task_ids)
  params, mcfg, _ = pretrain.load_trained(cfg.init_from)
  fresh = jax.eval_shape(lambda: model.init_params(mcfg, len(pool), jax.random.key(0)))
  jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), b.shape), params, fresh)
  opt = checkpoint.load_opt_state(cfg.init_from,
                                  pretrain.optim.make_direction(pretrain.optim_config(cfg)).init(params))
  assert opt is not None
  assert state["tokens_seen"] > 0 and state["step"] > 0 and state["hours"]


def test_the_eval_binary_parses_its_flags():
  import subprocess
  import sys
  r = subprocess.run([sys.executable, "-m", "experiments.taskemb_eval", "--helpshort"], capture_output=True,
                     text=True, timeout=120)
  out = r.stdout + r.stderr
  assert "Traceback" not in out and "--attention_impl" in out and "fixed_shapes" in out, out[-2000:]

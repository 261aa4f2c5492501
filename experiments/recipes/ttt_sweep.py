"""Issue 13 (run from the repository root with PYTHONPATH=.): TTT settings for the arc-cpu model, tuned on fresh tasks of TRAINING families
(runs/tune_tasks), measured by the teacher-forced log-prob of the true outputs
(experiments/answer_logprob.py). Usage: python runs/ttt_sweep.py NAME key=value ..."""
import sys
from absl import logging
from experiments.configs import pipeline as pc
from ttt_jax import pipeline
from ttt_jax.arc import io
from ttt_jax.model import store
from ttt_jax.train import checkpoint, ttt
logging.set_verbosity(logging.INFO)
name, sets = sys.argv[1], sys.argv[2:]
cfg = pc.get_config()
for kv in sets:
  k, v = kv.split("=")
  sec, key = k.split(".")
  cur = cfg[sec][key]
  cfg[sec][key] = type(cur)(v) if cur is not None and not isinstance(cur, bool) else (v == "True" if isinstance(cur, bool) else float(v))
import os
tasks, _ = io.load_tasks(os.environ.get("TASKS", "runs/tune_tasks"))
params, mcfg = checkpoint.load_base_model(store.DEFAULT_MODEL_DIR, "", {})
lcfg, ocfg, tcfg = pipeline.ttt_configs(cfg, mcfg)
print(name, ocfg, tcfg, flush=True)
ttt.run_ttt(tasks, params, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg, out_dir=os.environ.get("OUT", "runs/ttt_sweep") + f"/{name}")

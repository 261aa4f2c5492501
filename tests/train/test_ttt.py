from __future__ import annotations

import os

import jax
import numpy as np

from ttt_jax.arc.task import Pair, Task
from ttt_jax.model import lora
from ttt_jax.parallel import mesh as mesh_lib
from ttt_jax.train import checkpoint, ttt
from ttt_jax.train.optim import ttt_optim_config

from train_helpers import tiny_model, tiny_params

CFG, LCFG, _ = tiny_model()
# eps=1e-3: grouped and one-by-one training sum in another order; with Adam's default eps=1e-8
# a near-zero gradient turns that rounding noise into a difference of ~lr. With eps far above
# the noise an update differs by at most lr * noise / eps (~1e-4 * lr), so TRAJ_TOL
# (1e-3 * lr) holds on any machine while a wrong task or step count differs by ~lr.
OCFG = ttt_optim_config("tiny", learning_rate=1e-2, eps=1e-3)
TRAJ_TOL = dict(rtol=1e-4, atol=1e-3 * OCFG.learning_rate)
TCFG = ttt.TTTConfig(batch_size=2, epochs=1, n_max=6, max_tokens=128, min_bucket=128, augment=False,
                     log_every=0)


def make_task(i: int, n_pairs: int) -> Task:
  rng = np.random.default_rng(i)
  pairs = []
  for _ in range(n_pairs + 1):
    g = rng.integers(0, 10, size=(2, 3)).astype(np.int8)
    pairs.append(Pair(g, g[::-1].copy()))
  return Task(f"t{i}", tuple(pairs[:n_pairs]), tuple(pairs[n_pairs:]))


TASKS = [make_task(0, 3), make_task(1, 2), make_task(2, 4), make_task(3, 1)]  # t3: no LOO data


def test_grouped_ttt_equals_one_task_at_a_time_and_reruns_skip(tmp_path):
  params = tiny_params(CFG)
  mesh = mesh_lib.make_mesh()
  grouped = ttt.run_ttt(TASKS, params, mcfg=CFG, lcfg=LCFG, ocfg=OCFG,
                        tcfg=TCFG.replace(group_size=3), out_dir=str(tmp_path / "g"), mesh=mesh)
  assert sorted(grouped["trained"]) == ["t0", "t1", "t2"] and grouped["no_data"] == ["t3"]
  single = ttt.run_ttt(TASKS[:3], params, mcfg=CFG, lcfg=LCFG, ocfg=OCFG,
                       tcfg=TCFG.replace(group_size=1), out_dir=str(tmp_path / "s"), mesh=mesh)
  assert sorted(single["trained"]) == ["t0", "t1", "t2"]
  for t in ("t0", "t1", "t2"):
    a, meta_a = checkpoint.load_adapter(str(tmp_path / "g" / "adapters"), t)
    b, meta_b = checkpoint.load_adapter(str(tmp_path / "s" / "adapters"), t)
    assert meta_a["steps"] == meta_b["steps"] == {"t0": 3, "t1": 1, "t2": 3}[t]
    assert meta_a["group_size"] == 3
    if meta_a["steps"] > 1:
      assert meta_a["final_loss"] < meta_a["first_loss"]
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **TRAJ_TOL), a, b)
    init = ttt.init_adapter(CFG, LCFG, t, TCFG.seed)
    moved = np.max(np.abs(a["layers"]["attn"]["q"]["b"] - init["layers"]["attn"]["q"]["b"]))
    assert moved > 100 * TRAJ_TOL["atol"], moved  # so the comparison above has teeth
  # a rerun skips tasks already done (including the one without data)
  again = ttt.run_ttt(TASKS, params, mcfg=CFG, lcfg=LCFG, ocfg=OCFG,
                      tcfg=TCFG.replace(group_size=3), out_dir=str(tmp_path / "g"), mesh=mesh)
  assert again["trained"] == [] and sorted(again["skipped_done"]) == ["t0", "t1", "t2", "t3"]


def test_shared_adapter_mode(tmp_path):
  out = ttt.run_ttt(TASKS[:3], tiny_params(CFG), mcfg=CFG, lcfg=LCFG, ocfg=OCFG,
                    tcfg=TCFG.replace(shared_adapter=True), out_dir=str(tmp_path))
  assert sorted(out["trained"]) == ["t0", "t1", "t2"]
  a0, m0 = checkpoint.load_adapter(str(tmp_path / "adapters"), "t0")
  a2, m2 = checkpoint.load_adapter(str(tmp_path / "adapters"), "t2")
  assert m0["shared"] and m0["steps"] == m2["steps"] and m0["num_examples"] > 5
  jax.tree.map(np.testing.assert_array_equal, a0, a2)


def test_ttt_from_config_on_a_saved_model(tmp_path):
  import json
  from experiments.configs import ttt as ttt_config
  from ttt_jax.arc.task import task_to_json
  from ttt_jax.model import store
  store.save_model(str(tmp_path / "model"), tiny_params(CFG), CFG, dtype="float32")
  os.makedirs(tmp_path / "tasks")
  for t in TASKS[:2]:
    with open(tmp_path / "tasks" / f"{t.task_id}.json", "w") as f:
      json.dump(task_to_json(t), f)
  c = ttt_config.get_config("quick")
  c.model_dir = str(tmp_path / "model")
  c.tasks = str(tmp_path / "tasks")
  c.out_dir = str(tmp_path / "out")
  c.lora.rank = LCFG.rank
  c.ttt.update(dict(n_max=4, max_tokens=128, augment=False, epochs=1, group_size=2,
                    data_mode="reference"))
  c.optim.clip_norm = None  # the reference's settings reach the run (None is not dropped)
  summary = ttt.run_ttt_from_config(c)
  assert sorted(summary["trained"]) == ["t0", "t1"]
  adapter, meta = checkpoint.load_adapter(c.out_dir + "/adapters", "t0")
  assert meta["optim"]["learning_rate"] == 1e-4 and meta["lora"] == lora.to_fields(LCFG.replace(alpha=16.0))
  assert meta["optim"]["clip_norm"] is None and meta["ttt"]["data_mode"] == "reference"
  assert adapter["layers"]["attn"]["q"]["a"].shape == (CFG.n_layers, CFG.dim, LCFG.rank)


def test_reference_data_mode_trains_one_demonstration_tasks(tmp_path):
  """Ours has no data for a task with one demonstration; the reference trains on the
  demonstration alone (no context): one episode without augmentation."""
  out = ttt.run_ttt(TASKS[3:], tiny_params(CFG), mcfg=CFG, lcfg=LCFG, ocfg=OCFG,
                    tcfg=TCFG.replace(data_mode="reference"), out_dir=str(tmp_path))
  assert out["trained"] == ["t3"]
  _, meta = checkpoint.load_adapter(str(tmp_path / "adapters"), "t3")
  assert meta["num_examples"] == 1 and meta["steps"] == 1 and np.isfinite(meta["first_loss"])

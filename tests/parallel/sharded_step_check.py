"""Run as a script with 8 forced CPU devices (see test_sharding.py): sharded == unsharded steps."""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import functools  # pylint: disable=g-import-not-at-top

import jax
import numpy as np

from ttt_jax.data import batching
from ttt_jax.model import config, lora, transformer
from ttt_jax.parallel import mesh as mesh_lib
from ttt_jax.parallel import sharding
from ttt_jax.train import steps
from ttt_jax.train.optim import OptimConfig


def examples(rng, n):
  out = []
  for _ in range(n):
    t = int(rng.integers(10, 30))
    toks = rng.integers(0, 10, size=t).astype(np.int32)
    out.append(type("Ex", (), {"tokens_T": toks, "loss_mask_T": np.arange(t) >= t // 3}))
  return out


LR = 1e-2
# Sharded and unsharded programs sum gradients in another order. Adam divides each gradient by
# its own RMS, so with the default eps=1e-8 an element whose gradient is ~1e-9 turns that
# rounding noise into an update difference of ~lr: ill-posed. With eps=1e-3, far above the
# noise (~1e-7 * |g|max), an update differs by at most lr * noise / eps (~1e-4 * lr per step),
# so 1e-3 * lr holds on any reduction order; a wrong shard or a missing reduction shows up as
# ~lr, and the first step's loss is compared at float32 precision.
OCFG = OptimConfig(learning_rate=LR, eps=1e-3)
ATOL = 1e-3 * LR


def close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                        rtol=1e-4, atol=ATOL), a, b)


def main():
  assert jax.device_count() == 8, jax.devices()
  cfg = config.get_config("tiny").replace(dtype="float32")
  lcfg = lora.LoraConfig(rank=4, alpha=8.0)
  apply_fn = functools.partial(transformer.forward, cfg=cfg, lora_cfg=lcfg)
  ocfg = OCFG
  rng = np.random.default_rng(0)
  mesh = mesh_lib.make_mesh(data=2, fsdp=2, model=2)

  # Full fine-tuning step: parameters by the rules, batch split over data x fsdp.
  batch = batching.pad_examples(examples(rng, 8), 32)
  init = lambda: steps.init_state(transformer.init_params(cfg, jax.random.key(0)), ocfg, 10)
  ref_state = init()
  step = steps.make_train_step(apply_fn, ocfg, lora=False)
  ref_fn = jax.jit(step)
  st_sharded, st_shardings = sharding.sharded_init(init, mesh)
  specs = {sharding.path_str(p): s.spec for p, s in
           jax.tree_util.tree_flatten_with_path(st_shardings.trainable)[0]}
  assert any(len([a for a in spec if a is not None]) >= 2 for spec in specs.values()), specs
  b_shardings = sharding.batch_sharding(mesh, batch)
  sh_fn = jax.jit(step, in_shardings=(st_shardings, None, b_shardings),
                  out_shardings=(st_shardings, None), donate_argnums=(0,))
  sb = sharding.global_batch(batch, mesh)
  assert sb.tokens.sharding.spec == b_shardings.tokens.spec
  for _ in range(3):
    ref_state, ref_m = ref_fn(ref_state, None, batch)
    st_sharded, m = sh_fn(st_sharded, None, sb)
  np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=1e-5)
  close(st_sharded, ref_state)
  leaf = st_sharded.trainable["layers"]["mlp"]["up"]["kernel"]
  assert len(leaf.sharding.device_set) == 8 and not leaf.sharding.is_fully_replicated

  # Many-task LoRA step: the task axis split over data x fsdp, base sharded by the rules.
  params = transformer.init_params(cfg, jax.random.key(0))
  tasks = [examples(rng, n) for n in (3, 5, 2, 4)]
  plan = batching.plan_task_group(tasks, batch_size=2, epochs=1, seeds=[1, 2, 3, 4],
                                  buckets=(32,))
  adapters = lora.stack([lora.init_lora(cfg, lcfg, jax.random.key(10 + k)) for k in range(4)])
  init_k = lambda: steps.init_multitask_state(adapters, ocfg, plan.steps_K)
  ref_k = init_k()
  multi = steps.make_multitask_step(apply_fn, ocfg)
  sk, sk_shardings = sharding.sharded_init(init_k, mesh, task_axis=True)
  p_shardings = sharding.tree_shardings(params, mesh)
  sp = sharding.shard(params, p_shardings)
  kb_shardings = sharding.batch_sharding(mesh, plan.batch(0))
  sh_multi = jax.jit(multi, in_shardings=(sk_shardings, p_shardings, kb_shardings),
                     out_shardings=(sk_shardings, None), donate_argnums=(0,))
  ref_multi = jax.jit(multi)
  for s in range(plan.num_steps):
    ref_k, ref_m = ref_multi(ref_k, params, plan.batch(s))
    sk, m = sh_multi(sk, sp, sharding.shard(plan.batch(s), kb_shardings))
  np.testing.assert_allclose(np.asarray(m["loss"]), np.asarray(ref_m["loss"]), rtol=1e-5)
  close(sk, ref_k)
  a = jax.tree.leaves(sk.trainable)[0]
  assert a.sharding.spec[0] == ("data", "fsdp"), a.sharding.spec

  # The TTT driver on the mesh: 3 tasks fill K=4 task shards; same adapters as on one device.
  from ttt_jax.arc.task import Pair, Task  # pylint: disable=g-import-not-at-top
  from ttt_jax.train import checkpoint, ttt  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  tasks = []
  for i in range(3):
    g = [rng.integers(0, 10, size=(2, 2)).astype(np.int8) for _ in range(3 + i)]
    pairs = tuple(Pair(x, x.T.copy()) for x in g)
    tasks.append(Task(f"t{i}", pairs[:-1], pairs[-1:]))
  tcfg = ttt.TTTConfig(n_max=4, max_tokens=64, min_bucket=64, epochs=1, augment=False,
                       group_size=1, log_every=0)
  out = {}
  for name, m in (("mesh", mesh_lib.make_mesh(data=4, fsdp=1, model=2)),
                  ("one", mesh_lib.make_mesh(devices=jax.devices()[:1]))):
    d = tempfile.mkdtemp()
    summary = ttt.run_ttt(tasks, params, mcfg=cfg, lcfg=lcfg, ocfg=ocfg,
                          tcfg=tcfg.replace(group_size=3), out_dir=d, mesh=m)
    assert sorted(summary["trained"]) == ["t0", "t1", "t2"], summary
    out[name] = [checkpoint.load_adapter(d + "/adapters", t.task_id) for t in tasks]
  for (a, ma), (b, mb) in zip(out["mesh"], out["one"]):
    assert ma["group_size"] == 4 and mb["group_size"] == 3 and ma["steps"] == mb["steps"]
    close(a, b)
  print("SHARDED_OK")


if __name__ == "__main__":
  main()

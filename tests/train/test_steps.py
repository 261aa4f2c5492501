from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data import batching
from ttt_jax.train import steps
from ttt_jax.train.optim import OptimConfig

from conftest import random_examples, tiny_adapter, tiny_model, tiny_params

CFG, LCFG, APPLY = tiny_model()

OCFG = OptimConfig(learning_rate=1e-2, warmup_frac=0.1, weight_decay=0.01, clip_norm=1.0)
# Compiled once for the module: every LoRA test below uses [2, 32] batches.
SINGLE = steps.jit_train_step(APPLY, OCFG, lora=True)
# Adam divides by sqrt(v): coordinates with tiny gradients turn float rounding differences
# (other reduction orders) into update differences of up to ~1e-3 * lr per step.
PARAM_TOL = dict(rtol=1e-4, atol=5e-3 * OCFG.learning_rate)


def _trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


def test_zero_weight_step_leaves_state_identical():
  base = tiny_params(CFG)
  state = steps.init_state(tiny_adapter(CFG, LCFG), OCFG, 10)
  batch = batching.pad_examples(random_examples(np.random.default_rng(0), 2), 32)
  state, _ = SINGLE(state, base, batch)  # one real step so moments are non-zero
  before = jax.tree.map(np.array, state)
  empty = batch._replace(weights=np.zeros_like(batch.weights))
  after, m = SINGLE(state, base, empty)  # (state is donated: compare with the host copy)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), y), after, before)
  assert int(after.step) == 1 and float(m["lr"]) == 0.0


def test_gradient_accumulation_matches_full_batch():
  params = tiny_params(CFG)
  batch = batching.pad_examples(random_examples(np.random.default_rng(1), 4), 32)
  outs = []
  for accum in (1, 2):
    cfg = OCFG.replace(accum_steps=accum)
    step = jax.jit(steps.make_train_step(APPLY, cfg, lora=False))
    state = steps.init_state(params, cfg, 5)
    for _ in range(2):
      state, m = step(state, None, batch)
    outs.append((state.trainable, float(m["loss"])))
  for p, loss in outs[1:]:
    _trees_close(p, outs[0][0], **PARAM_TOL)
    np.testing.assert_allclose(loss, outs[0][1], rtol=1e-5)


def test_lora_step_trains_only_the_adapter():
  base = tiny_params(CFG)
  base_copy = jax.tree.map(np.asarray, base)
  adapter = tiny_adapter(CFG, LCFG)
  state = steps.init_state(adapter, OCFG, 20)
  # optimizer state is two Adam moments of the adapter (plus counters), nothing of the base
  size = lambda t: sum(np.size(x) for x in jax.tree.leaves(t))
  assert size(state.opt_state) <= 2 * size(adapter) + 4
  step = SINGLE
  batch = batching.pad_examples(random_examples(np.random.default_rng(2), 2), 32)
  losses = []
  for _ in range(15):
    state, m = step(state, base, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < losses[0]
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), y), base, base_copy)


def test_vmapped_tasks_equal_one_by_one():
  rng = np.random.default_rng(3)
  base = tiny_params(CFG)
  tasks = [random_examples(rng, n) for n in (5, 2, 3)]
  seeds = [10, 11, 12]
  plan = batching.plan_task_group(tasks, batch_size=2, epochs=2, seeds=seeds, buckets=(32,),
                                  num_tasks=4)  # one all-padding task rides along
  adapters = [tiny_adapter(CFG, LCFG, 100 + k, b_scale=0.01) for k in range(4)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *adapters)
  state_K = steps.init_multitask_state(stacked, OCFG, plan.steps_K)
  multi = steps.jit_multitask_step(APPLY, OCFG)
  for s in range(plan.num_steps):
    state_K, m = multi(state_K, base, plan.batch(s))
    if s + 1 == plan.steps_K[1]:
      task1_done = jax.tree.map(lambda x: np.array(x[1]), state_K)
  assert m["loss"].shape == (4,)
  # task 1 finished early: its zero-weight steps left adapter, moments and counter bit-identical
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x[1]), y), state_K, task1_done)

  single = SINGLE
  for k in range(3):
    alone = batching.plan_task_group([tasks[k]], batch_size=2, epochs=2, seeds=[seeds[k]],
                                     buckets=(32,))
    state = steps.init_state(adapters[k], OCFG, alone.steps_K[0])
    for s in range(alone.num_steps):
      state, _ = single(state, base, jax.tree.map(lambda x: x[0], alone.batch(s)))
    mine = jax.tree.map(lambda x: x[k], state_K)
    _trees_close(mine, state, **PARAM_TOL)
    assert int(mine.step) == plan.steps_K[k]
  # the padding task never moved
  pad = jax.tree.map(lambda x: x[3], state_K)
  _trees_close(pad.trainable, adapters[3], rtol=0, atol=0)
  assert int(pad.step) == 0

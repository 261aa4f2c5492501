from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data import batching
from ttt_jax.train import steps
from ttt_jax.train.optim import OptimConfig

from train_helpers import random_examples, tiny_adapter, tiny_model, tiny_params

CFG, LCFG, APPLY = tiny_model()

OCFG = OptimConfig(learning_rate=1e-2, warmup_frac=0.1, weight_decay=0.01, clip_norm=1.0)
# Compiled once for the module: every LoRA test below uses [2, 32] batches.
SINGLE = steps.jit_train_step(APPLY, OCFG, lora=True)

# Two programs that sum in another order (vmap vs one by one, micro-batches vs one batch) agree
# on the loss and gradients to float32 rounding; that is compared tightly (GRAD_RTOL, relative
# to the largest gradient). Adam then divides each gradient by its own RMS: with the default
# eps=1e-8 an element whose gradient is ~1e-9 moves by ~lr * sign(noise), so a multi-step
# trajectory is ill-conditioned. TRAJ_OCFG uses eps=1e-3, far above the rounding noise
# (~1e-7 * |g|max): an update then differs by at most lr * noise / eps, ~1e-4 * lr per step,
# so TRAJ_TOL (1e-3 * lr over a few steps) holds on any reduction order, while a wrong task,
# mask or step count moves parameters by ~lr (each test checks they moved 100x the tolerance).
TRAJ_OCFG = OCFG.replace(eps=1e-3)
TRAJ_TOL = dict(rtol=1e-4, atol=1e-3 * OCFG.learning_rate)
GRAD_RTOL = 1e-5


def _grads_close(g, want):
  """Gradients equal to float32 rounding: atol relative to the largest gradient."""
  scale = max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(want))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                        rtol=GRAD_RTOL, atol=GRAD_RTOL * scale),
               g, want)


def _moved(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


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
  # first step: loss and gradients, tight
  loss1, g1, _ = steps._grads(APPLY, params, None, batch, False, 1)
  loss2, g2, _ = steps._grads(APPLY, params, None, batch, False, 2)
  np.testing.assert_allclose(float(loss2), float(loss1), rtol=1e-6)
  _grads_close(g2, g1)
  # a short trajectory under the well-conditioned optimizer
  outs = []
  for accum in (1, 2):
    cfg = TRAJ_OCFG.replace(accum_steps=accum)
    step = jax.jit(steps.make_train_step(APPLY, cfg, lora=False))
    state = steps.init_state(params, cfg, 5)
    for _ in range(2):
      state, m = step(state, None, batch)
    outs.append((state.trainable, float(m["loss"])))
  assert _moved(outs[0][0], params) > 100 * TRAJ_TOL["atol"]
  _trees_close(outs[1][0], outs[0][0], **TRAJ_TOL)
  np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=1e-5)


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
  start = [jax.tree.map(np.array, a) for a in adapters]  # host copies (steps donate their state)

  # first step: the vmapped loss and gradients equal each task's own, tightly
  first_K = plan.batch(0)
  grads_of = lambda ad, b: steps._grads(APPLY, ad, base, b, True, 1)[:2]
  loss_K, g_K = jax.jit(jax.vmap(grads_of))(stacked, first_K)
  for k in range(3):
    loss, g = jax.jit(grads_of)(adapters[k], jax.tree.map(lambda x: x[k], first_K))
    np.testing.assert_allclose(float(loss_K[k]), float(loss), rtol=1e-6)
    _grads_close(jax.tree.map(lambda x: x[k], g_K), g)

  # the whole run, under the well-conditioned optimizer
  state_K = steps.init_multitask_state(stacked, TRAJ_OCFG, plan.steps_K)
  multi = steps.jit_multitask_step(APPLY, TRAJ_OCFG)
  for s in range(plan.num_steps):
    state_K, m = multi(state_K, base, plan.batch(s))
    if s + 1 == plan.steps_K[1]:
      task1_done = jax.tree.map(lambda x: np.array(x[1]), state_K)
  assert m["loss"].shape == (4,)
  # task 1 finished early: its zero-weight steps left adapter, moments and counter bit-identical
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x[1]), y), state_K, task1_done)

  single = steps.jit_train_step(APPLY, TRAJ_OCFG, lora=True)
  for k in range(3):
    alone = batching.plan_task_group([tasks[k]], batch_size=2, epochs=2, seeds=[seeds[k]],
                                     buckets=(32,))
    state = steps.init_state(adapters[k], TRAJ_OCFG, alone.steps_K[0])
    for s in range(alone.num_steps):
      state, _ = single(state, base, jax.tree.map(lambda x: x[0], alone.batch(s)))
    mine = jax.tree.map(lambda x: x[k], state_K)
    assert _moved(mine.trainable, start[k]) > 100 * TRAJ_TOL["atol"]
    _trees_close(mine, state, **TRAJ_TOL)
    assert int(mine.step) == plan.steps_K[k]
  # the padding task never moved
  pad = jax.tree.map(lambda x: x[3], state_K)
  _trees_close(pad.trainable, adapters[3], rtol=0, atol=0)
  assert int(pad.step) == 0

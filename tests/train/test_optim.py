from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttt_jax.train import optim


def test_schedule_shape():
  cfg = optim.OptimConfig(learning_rate=1e-3, warmup_frac=0.1)
  lrs = np.array([float(optim.warmup_cosine(s, 100, cfg)) for s in range(100)])
  np.testing.assert_allclose(lrs[:10], 1e-3 * np.arange(1, 11) / 10, rtol=1e-6)
  assert np.all(np.diff(lrs[10:]) <= 1e-12)  # cosine decays monotonically
  assert lrs[-1] < 1e-3 * 0.01 and lrs[-1] >= 0
  # per-task totals are traced arrays: vmapping over them gives each task its own schedule
  per_task = jax.vmap(lambda t: optim.warmup_cosine(5, t, cfg))(jnp.array([10, 100]))
  np.testing.assert_allclose(per_task, [float(optim.warmup_cosine(5, 10, cfg)),
                                        float(optim.warmup_cosine(5, 100, cfg))])


def test_absolute_warmup_and_floor():
  cfg = optim.OptimConfig(learning_rate=2.0, warmup_steps=4, final_lr_frac=0.1)
  np.testing.assert_allclose(float(optim.warmup_cosine(3, 50, cfg)), 2.0)
  np.testing.assert_allclose(float(optim.warmup_cosine(1000, 50, cfg)), 0.2, rtol=1e-6)


def test_ttt_defaults():
  assert optim.ttt_optim_config("llama-3.2-1b").learning_rate == 5e-5
  assert optim.ttt_optim_config("llama-3.2-3b").learning_rate == 5e-5
  assert optim.ttt_optim_config("llama-3-8b").learning_rate == 1e-4
  for small in ("tiny", "arc-cpu", "arc-small"):
    assert optim.ttt_optim_config(small).learning_rate == 1e-4
  # The rule reads the shape, not the name: no substring of a name changes it.
  from ttt_jax.model import config  # pylint: disable=g-import-not-at-top
  assert optim.ttt_optim_config(config.get_config("tiny").replace(name="run-11b-3b")).learning_rate == 1e-4
  assert optim.ttt_optim_config(config.get_config("llama-3.2-1b").replace(name="mine")).learning_rate == 5e-5
  c = optim.ttt_optim_config("tiny", learning_rate=3e-4, weight_decay=0.0)
  assert (c.learning_rate, c.weight_decay, c.warmup_frac) == (3e-4, 0.0, 0.1)


def test_direction_times_lr_is_adamw():
  cfg = optim.OptimConfig(learning_rate=1e-2, weight_decay=0.1, clip_norm=None)
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones((2,))}
  ours = optim.make_optax(cfg, total_steps=20)
  ref = optax.adamw(lambda c: optim.warmup_cosine(c, 20, cfg), weight_decay=0.1,
                    mask=optim.decay_mask)
  s1, s2, p1, p2 = ours.init(params), ref.init(params), params, params
  for i in range(5):
    g = jax.tree.map(lambda x: jnp.sin(x * (i + 1)), p1)
    u1, s1 = ours.update(g, s1, p1)
    u2, s2 = ref.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p1, p2)
  # decay on matrices only
  assert optim.decay_mask(params) == {"w": True, "b": False}


def test_clip_norm_none_is_plain_adamw_and_differs_from_clipping():
  """The reference code does not clip. Adam is invariant to one uniform rescale, so a clipped
  and an unclipped run differ only once clipped (large) and unclipped (small) gradients mix in
  the moments: a large gradient then a small one."""
  params = {"w": jnp.ones((4, 3))}
  grads = [jax.tree.map(lambda p: s * jnp.cos(p * (i + 2) + jnp.arange(3.0)), params)
           for i, s in enumerate((1e3, 1e-2, 1e-2))]

  def run(tx):
    p, state = params, tx.init(params)
    for g in grads:
      u, state = tx.update(g, state, p)
      p = optax.apply_updates(p, u)
    return p["w"]

  none = optim.ttt_optim_config("tiny", clip_norm=None, learning_rate=1e-2)
  assert optim.ttt_optim_config("tiny", clip_norm=0).clip_norm is None  # the command line's None
  clipped = optim.ttt_optim_config("tiny", learning_rate=1e-2)
  assert clipped.clip_norm == 1.0
  unclipped = run(optim.make_optax(none, total_steps=10))
  plain = run(optax.adamw(lambda c: optim.warmup_cosine(c, 10, none), b1=none.b1, b2=none.b2,
                          eps=none.eps, weight_decay=none.weight_decay, mask=optim.decay_mask))
  np.testing.assert_allclose(unclipped, plain, rtol=1e-6)
  moved = np.abs(unclipped - 1.0).max()
  assert np.abs(run(optim.make_optax(clipped, total_steps=10)) - unclipped).max() > 0.02 * moved

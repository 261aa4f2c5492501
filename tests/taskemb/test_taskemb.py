"""The pair format, the task-embedding model, its TTT and its pretraining loop (tiny configs)."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.arc.task import Pair, Task
from ttt_jax.data import tokens
from ttt_jax.model import config, decode, transformer
from ttt_jax.model import lora as lora_lib
from ttt_jax.taskemb import checkpoint, data, model, predict, pretrain, ttt

MCFG = config.get_config("tiny").replace(dtype="float32")


def _grid(rng, h, w):
  return rng.integers(0, 10, size=(h, w)).astype(np.int8)


def _task(seed: int, n: int = 3, name: str = "t") -> Task:
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(n + 1):
    g = _grid(rng, int(rng.integers(2, 5)), int(rng.integers(2, 5)))
    pairs.append(Pair(g, g[:, ::-1].copy()))
  return Task(f"{name}{seed}", tuple(pairs[:n]), tuple(pairs[n:]))


def test_pair_sequence_is_an_episode_without_demonstrations_and_loss_is_on_the_output():
  rng = np.random.default_rng(0)
  i, o = _grid(rng, 2, 3), _grid(rng, 3, 2)
  toks, is_out = data.encode_pair(i, o)
  demos, query = tokens.decode_episode(toks[:-(int(is_out.sum()))])
  assert demos == [] and np.array_equal(query, i)
  assert np.array_equal(tokens.decode_answer(toks[is_out]), o)
  b = data.make_batch([(toks, is_out)], [5], [3], length=len(toks) + 4)
  # weights mark exactly the targets that are output tokens (cells, row ends, EOS)
  assert np.array_equal(b.targets[0][b.weights[0] > 0], toks[is_out])
  assert b.mask[0].sum() == len(toks) - 1 and b.task.tolist() == [5] and b.aug.tolist() == [3]


def test_every_view_inverts_to_the_original_grid():
  rng = np.random.default_rng(1)
  g = _grid(rng, 3, 5)
  for aug in range(data.NUM_AUGS):
    for perm in (None, data.random_colour_perm(rng)):
      v = predict.View(0, 0, aug, perm, np.zeros(1, np.int32))
      seen = data.augment_pair(Pair(g, None), aug, perm).input
      assert np.array_equal(v.invert(seen), g), (aug, perm)
  assert len({data.DIHEDRAL[a](g).tobytes() + bytes(data.DIHEDRAL[a](g).shape) for a in range(8)}) == 8


def test_batches_are_a_pure_function_of_seed_and_step_and_fill_their_bucket():
  pool = data.pool_from_tasks([_task(s) for s in range(6)], max_tokens=65)
  a = data.sample_batch(pool, 3, 7, 256, (16, 32, 64))
  b = data.sample_batch(pool, 3, 7, 256, (16, 32, 64))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  for step in range(10):
    x = data.sample_batch(pool, 3, step, 256, (16, 32, 64))
    L = x.tokens.shape[1]
    assert x.tokens.shape[0] == 256 // L
    lengths = x.mask.sum(1)
    assert np.all(lengths <= L) and np.all(lengths > {16: 0, 32: 16, 64: 32}[L] - 1)


def test_kv_cache_decoding_with_a_task_vector_equals_the_full_forward_pass():
  params = model.init_params(MCFG, 5, jax.random.key(0))
  prompt, _ = data.encode_pair(_grid(np.random.default_rng(2), 3, 3))
  cond = params["task"][2][None] + params["aug"][4][None]
  new = decode.generate(params["base"], None, prompt[None], np.ones((1, len(prompt)), bool), cfg=MCFG,
                        max_new_tokens=12, eos_id=tokens.EOS, pad_id=tokens.PAD, cond_BxD=cond)
  seq = np.concatenate([prompt, np.asarray(new[0])])
  full = model.logits(params["base"], None, params["task"][2][None], params["aug"],
                      jnp.asarray(seq[None]), jnp.ones((1, len(seq)), bool), jnp.asarray([4]), cfg=MCFG)
  greedy = np.argmax(np.asarray(full[0, len(prompt) - 1:-1]), axis=-1)
  n = int(np.argmax(np.asarray(new[0]) == tokens.EOS)) + 1 if tokens.EOS in np.asarray(new[0]) else 12
  np.testing.assert_array_equal(greedy[:n], np.asarray(new[0])[:n])
  # the conditioning matters: another task vector gives other logits
  other = model.logits(params["base"], None, params["task"][3][None], params["aug"], jnp.asarray(seq[None]),
                       jnp.ones((1, len(seq)), bool), jnp.asarray([4]), cfg=MCFG)
  assert not np.allclose(np.asarray(full), np.asarray(other), atol=1e-4)


@pytest.mark.parametrize("mode", ["embed", "lora", "full"])
def test_grouped_ttt_equals_one_task_at_a_time(mode):
  params = model.init_params(MCFG, 4, jax.random.key(1))
  tasks = [_task(10), _task(11, n=2), _task(12, n=4)]
  # eps far above float32 rounding noise: a trajectory is then well conditioned (see
  # tests/train/test_steps.py); 1e-3 * lr over a few steps holds on any reduction order
  tcfg = ttt.TTTConfig(mode=mode, steps=3, rows=2, learning_rate=1e-2, base_learning_rate=1e-2,
                       buckets=(32, 64), adam_eps=1e-3, lora=lora_lib.LoraConfig(rank=2, alpha=4.0))
  together, losses = ttt.train_group(params, MCFG, tasks, tcfg, num_slots=4)
  for k, t in enumerate(tasks):
    pairs = ttt.demo_pairs(t, 513)
    # the group pads to its longest bucket; alone, the task must see the same length
    alone, loss = ttt.train_group(params, MCFG, [t], tcfg, task_indices=[k])
    if ttt.group_length([pairs], tcfg.buckets) != ttt.group_length(
        [ttt.demo_pairs(x, 513) for x in tasks], tcfg.buckets):
      continue  # other padding: another (equally right) computation
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                         atol=1e-5), together[k], alone[0])
    np.testing.assert_allclose(losses[k], loss[0], rtol=1e-4)
  start = ttt.initial_vector(params)
  assert float(jnp.max(jnp.abs(together[0]["task"] - start))) > 1e-3  # it trained


def test_ttt_reduces_the_loss_on_the_demonstrations():
  params = model.init_params(MCFG, 4, jax.random.key(2))
  t = _task(20)
  tcfg = ttt.TTTConfig(mode="full", steps=1, rows=4, buckets=(32, 64), base_learning_rate=3e-3)
  _, first = ttt.train_group(params, MCFG, [t], tcfg)
  _, later = ttt.train_group(params, MCFG, [t], tcfg.replace(steps=25))
  assert later[0] < first[0]


def test_pretraining_resumes_to_the_same_state_and_counts_tokens(tmp_path):
  pool = data.pool_from_tasks([_task(s) for s in range(5)], max_tokens=65)
  cfg = pretrain.PretrainConfig(out_dir=str(tmp_path / "a"), model="tiny", buckets=(64,),
                                tokens_per_batch=128, steps=6, log_every=0, warmup_steps=2)
  logs = []
  whole = pretrain.run(cfg, pool=pool, log=logs.append)
  part = pretrain.run(cfg.replace(out_dir=str(tmp_path / "b"), steps=3), pool=pool, log=logs.append)
  rest = pretrain.run(cfg.replace(out_dir=str(tmp_path / "b")), pool=pool, log=logs.append)
  assert whole["step"] == rest["step"] == 6 and part["step"] == 3
  assert whole["tokens_seen"] == rest["tokens_seen"] > part["tokens_seen"] > 0
  assert len(rest["runs"]) == 2 and rest["runs"][0]["steps"] == 3
  a = checkpoint.load_params(str(tmp_path / "a" / "checkpoint"))
  b = checkpoint.load_params(str(tmp_path / "b" / "checkpoint"))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
  # a checkpoint continues into a new out_dir (the committed lineage), and a changed pool is refused
  state_path = tmp_path / "a" / "checkpoint" / checkpoint.STATE_JSON  # a hand-written note, kept onwards
  state_path.write_text(json.dumps(dict(json.loads(state_path.read_text()), notes=["a hand-written note"])))
  more = pretrain.run(cfg.replace(out_dir=str(tmp_path / "c"), init_from=str(tmp_path / "a" / "checkpoint"),
                                  steps=8), pool=pool, log=logs.append)
  assert more["step"] == 8 and len(more["runs"]) == 2 and more["notes"] == ["a hand-written note"]
  with pytest.raises(ValueError, match="pool"):
    pretrain.run(cfg.replace(out_dir=str(tmp_path / "d"), init_from=str(tmp_path / "a" / "checkpoint")),
                 pool=data.pool_from_tasks([_task(s) for s in range(4)], max_tokens=65), log=logs.append)
  # an out_dir left behind with an older checkpoint than init_from is refused, not resumed (a fork)
  with pytest.raises(ValueError, match="older than init_from"):
    pretrain.run(cfg.replace(out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "c" / "checkpoint"), steps=9),
                 pool=pool, log=logs.append)


def test_ablation_arms_drop_the_task_table_or_switch_grid_positions(tmp_path):
  pool = data.pool_from_tasks([_task(s) for s in range(5)], max_tokens=65)
  cfg = pretrain.PretrainConfig(out_dir=str(tmp_path / "none"), model="tiny", buckets=(64,),
                                tokens_per_batch=128, steps=3, log_every=0, warmup_steps=1,
                                task_embedding=False, grid_positions=True)
  pretrain.run(cfg, pool=pool, log=lambda s: None)
  params, mcfg, _ = pretrain.load_trained(str(tmp_path / "none" / "checkpoint"))
  assert mcfg.grid_positions and "row_embed" in params["base"]
  assert not np.any(np.asarray(params["task"]))  # never read, never trained: still zero
  fresh = model.init_params(mcfg, len(pool), jax.random.key(0))
  assert not np.allclose(params["base"]["embed"], fresh["base"]["embed"])  # the rest trained
  # with the table, the same batch's loss depends on the task rows; without, it does not
  batch = data.sample_batch(pool, 0, 0, 128, (64,), 0.0)
  shuffled = batch._replace(task=np.roll(batch.task, 1))
  no_table = [float(model.pool_loss(fresh, b, cfg=mcfg, task_embedding=False)[0]) for b in (batch, shuffled)]
  table = [float(model.pool_loss(fresh, b, cfg=mcfg)[0]) for b in (batch, shuffled)]
  assert no_table[0] == no_table[1] and table[0] != table[1]
  with pytest.raises(ValueError, match="task_embedding=False"):  # an arm does not resume as another
    pretrain.run(cfg.replace(task_embedding=True, grid_positions=None, steps=4), pool=pool, log=lambda s: None)


def test_evaluate_runs_ttt_decodes_and_scores(tmp_path):
  from ttt_jax.taskemb import evaluate
  params = model.init_params(MCFG, 4, jax.random.key(3))
  tasks = [_task(30), _task(31)]
  for tc in (None, ttt.TTTConfig(mode="lora", steps=2, rows=2, buckets=(32, 64), lora=lora_lib.LoraConfig(rank=2, alpha=4.0))):
    res = evaluate.evaluate(params, MCFG, tasks, evaluate.EvalConfig(ttt=tc, group_size=2, max_answer=24),
                            log=lambda s: None)
    assert res["tasks"] == 2 and res["mode"] == ("none" if tc is None else "lora")
    for r in res["records"]:
      assert r["views"] == 8 and 0 <= r["parsed"] <= 8 and np.isfinite(r["test_nll"])
      assert 0.0 <= r["test_token_acc"] <= 1.0 and r["candidates"] <= r["parsed"]
      assert r["candidate_right"] or not r["pass2"]
    # the product of experts picks among the same answers: same parses and candidates
    poe = evaluate.evaluate(params, MCFG, tasks, evaluate.EvalConfig(ttt=tc, group_size=2, max_answer=24,
                                                                      select="poe"), log=lambda s: None)
    assert poe["select"] == "poe" and poe["candidate_right"] == res["candidate_right"]
    assert poe["pass2_vote"] == res["pass2"] == res["pass2_vote"]
    assert [r["candidates"] for r in poe["records"]] == [r["candidates"] for r in res["records"]]
    if tc is None:  # fixed decode and metric shapes (padded rows and lengths) give the same records
      fixed = evaluate.evaluate(params, MCFG, tasks, evaluate.EvalConfig(group_size=2, max_answer=24,
                                                                         fixed_shapes=True), log=lambda s: None)
      for a, b in zip(res["records"], fixed["records"]):
        assert (a["parsed"], a["pass2"], a["views"]) == (b["parsed"], b["pass2"], b["views"])
        np.testing.assert_allclose(b["test_nll"], a["test_nll"], rtol=1e-5)
        np.testing.assert_allclose(b["test_token_acc"], a["test_token_acc"], rtol=1e-6)


def test_fixed_shape_decoding_gives_the_same_tokens_as_exact_shapes():
  params = model.init_params(MCFG, 3, jax.random.key(4))
  rng = np.random.default_rng(5)
  prompts = [data.encode_pair(_grid(rng, h, w))[0] for h, w in ((2, 3), (4, 4), (3, 2))]
  cond = params["task"][jnp.asarray([0, 1, 2])] + params["aug"][jnp.asarray([0, 3, 5])]
  kw = dict(cfg=MCFG, max_new_tokens=10, eos_id=tokens.EOS, pad_id=tokens.PAD, grid_stop=True)
  toks, mask = predict._left_pad(prompts)
  exact = decode.generate(params["base"], None, toks, mask, cond_BxD=cond, **kw)
  toks, mask = predict._left_pad(prompts, rows=5, bucketed=True)
  assert toks.shape == (5, predict.PROMPT_MIN) and (toks[3:] == toks[2]).all()
  assert predict._left_pad([np.ones(65, np.int32)], bucketed=True)[0].shape == (1, 128)
  padded = decode.generate(params["base"], None, toks, mask, cond_BxD=jnp.concatenate([cond, cond[2:], cond[2:]]),
                           **kw)
  np.testing.assert_array_equal(np.asarray(padded)[:3], np.asarray(exact))


def test_joint_ttt_of_one_task_with_a_frozen_base_equals_task_vector_ttt():
  params = model.init_params(MCFG, 4, jax.random.key(7))
  t = _task(50)
  kw = dict(steps=3, rows=2, learning_rate=1e-2, buckets=(32, 64), adam_eps=1e-3)
  alone, _ = ttt.train_group(params, MCFG, [t], ttt.TTTConfig(mode="embed", **kw))
  base, joint, _ = ttt.train_joint(params, MCFG, [t], ttt.TTTConfig(mode="joint", base_learning_rate=0.0, **kw))
  np.testing.assert_allclose(np.asarray(joint[0]["task"]), np.asarray(alone[0]["task"]), rtol=1e-4, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), base, params["base"])
  assert float(jnp.max(jnp.abs(joint[0]["task"] - ttt.initial_vector(params)))) > 1e-3


def test_joint_ttt_shares_the_base_and_gives_each_task_its_vector_and_evaluates():
  from ttt_jax.taskemb import evaluate
  params = model.init_params(MCFG, 4, jax.random.key(8))
  tasks = [_task(60), _task(61, n=2)]
  tcfg = ttt.TTTConfig(mode="joint", steps=2, rows=2, buckets=(32, 64), base_learning_rate=1e-3)
  base, states, loss = ttt.train_joint(params, MCFG, tasks, tcfg)
  assert np.isfinite(loss) and len(states) == 2
  assert float(jnp.max(jnp.abs(states[0]["task"] - states[1]["task"]))) > 0  # one vector per task
  assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(params["base"])))
  with pytest.raises(ValueError, match="train_joint"):
    ttt.train_group(params, MCFG, tasks, tcfg)
  res = evaluate.evaluate(params, MCFG, tasks, evaluate.EvalConfig(ttt=tcfg, group_size=2, max_answer=24),
                          log=lambda s: None)
  assert res["mode"] == "joint" and res["tasks"] == 2 and all(np.isfinite(r["test_nll"]) for r in res["records"])


def test_poe_scores_equal_each_views_unpadded_answer_nll_with_and_without_lora():
  params = model.init_params(MCFG, 2, jax.random.key(11))
  rng = np.random.default_rng(12)
  inp = _grid(rng, 3, 4)
  cands = [_grid(rng, 3, 4), _grid(rng, 2, 2), _grid(rng, 5, 3)]
  lcfg = lora_lib.LoraConfig(rank=2, alpha=4.0)
  lora = jax.tree.map(lambda x: 0.05 * jnp.ones_like(x),
                      lora_lib.init_lora(MCFG, lcfg, jax.random.key(0)))
  vec = np.asarray(params["task"][1])
  # Jitted only for speed: one program per (unpadded) sequence length, no padding anywhere.
  loss_sums = jax.jit(model.loss_sums, static_argnames=("cfg", "lora_cfg"))
  for adapter, lc in ((None, None), (lora, lcfg)):
    got = predict.poe_scores(params["base"], adapter, vec, params["aug"], inp, cands, cfg=MCFG, lora_cfg=lc,
                             chunk_rows=5)  # chunks of 5 rows padded to 8: padding must not matter
    assert got.shape == (3, data.NUM_AUGS)
    for c, cand in enumerate(cands):
      for a in range(data.NUM_AUGS):
        q = data.augment_pair(Pair(inp, cand), a)
        seq = data.encode_pair(q.input, q.output)
        batch = data.make_batch([seq], [0], [a], len(seq[0]) - 1)
        s, w, _ = loss_sums(params["base"], adapter, vec[None], params["aug"], batch, cfg=MCFG, lora_cfg=lc)
        assert w == seq[1].sum()  # the whole answer, nothing of the input
        np.testing.assert_allclose(got[c, a], float(s), rtol=2e-5)
  assert [id(g) for g in predict.poe_attempts(cands, got)] == [id(cands[i]) for i in np.argsort(got.sum(1))[:2]]


def test_distinct_answers_count_views_and_keep_first_seen_order_on_ties():
  g1, g2, g3 = (np.full((2, 2), k, np.int8) for k in (1, 2, 3))
  views = [predict.View(0, j, a, None, np.zeros(3, np.int32)) for j, a in ((0, 0), (0, 1), (0, 2), (0, 3), (1, 0))]
  got = predict.distinct_answers(views, [g1, g2, g2.copy(), None, g3], 0)
  assert [int(g[0, 0]) for g in got] == [2, 1]
  assert [int(g[0, 0]) for g in predict.distinct_answers(views, [g1, g2, g3, g1, g3], 0)] == [1, 2, 3]
  assert predict.poe_attempts([g1, g2, g3], np.array([[1.0, 1.0], [0.5, 0.5], [1.0, 1.0]]), k=2)[0] is g2
  # ties keep the candidates' order
  assert [int(g[0, 0]) for g in predict.poe_attempts([g1, g2, g3], np.ones((3, 2)))] == [1, 2]


def test_depth_first_search_adds_answers_to_the_greedy_ones():
  """search="dfs": every greedy answer stays a candidate and the search's own answers join them
  (a permissive threshold on a random model finds some); it needs PoE to rank them."""
  from ttt_jax.taskemb import evaluate
  params = model.init_params(MCFG, 2, jax.random.key(13))
  # a head that favours colours 1-2, row ends and EOS, so short valid grids are likely
  params["base"]["lm_head"] = params["base"]["lm_head"].at[:, jnp.asarray([1, 2, tokens.NL, tokens.EOS])].add(3.0)
  tasks = [_task(40)]
  kw = dict(group_size=1, max_answer=12, select="poe")
  greedy = evaluate.evaluate(params, MCFG, tasks, evaluate.EvalConfig(**kw), log=lambda s: None)
  searched = evaluate.evaluate(params, MCFG, tasks, evaluate.EvalConfig(search="dfs", dfs_min_prob=1e-3, dfs_views=2,
                                                                        **kw), log=lambda s: None)
  assert searched["search"] == "dfs" and searched["records"][0]["parsed"] == greedy["records"][0]["parsed"]
  assert searched["records"][0]["candidates"] > max(greedy["records"][0]["candidates"], 1)
  with pytest.raises(ValueError, match="needs select='poe'"):
    evaluate.EvalConfig(search="dfs")

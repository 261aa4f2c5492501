import itertools
import math

import jax
import numpy as np
import pytest

from ttt_jax.arc.task import make_task
from ttt_jax.data import tokens
from ttt_jax.infer import dfs, scoring, views
from ttt_jax.model import config, decode, lora, transformer
from tests.infer.test_predict import _adapter

CFG = config.get_config("tiny", dtype="float32")
LCFG = lora.LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "down"))
PARAMS = transformer.init_params(CFG, jax.random.key(0))
ALLOWED = (1, 2, tokens.NL)
MAX_NEW = 4


GRID_CFG = CFG.replace(grid_positions=True)  # the default arc-cpu model's positions
GRID_PARAMS = transformer.init_params(GRID_CFG, jax.random.key(1))


def _peaked(scale, params=PARAMS):
  """The tiny model with its output head scaled: sharper distributions, so some completions
  are far more probable than others."""
  p = dict(params)
  p["lm_head"] = params["lm_head"] * scale
  return p


def _prompt(seed=0):
  rng = np.random.default_rng(seed)
  pairs = [(rng.integers(0, 10, (2, 2)), rng.integers(0, 10, (2, 2))) for _ in range(2)]
  task = make_task("t", pairs, [(rng.integers(0, 10, (2, 2)), None)])
  return views.make_views(task, 0, n_orders=1)[0].prompt_T


def _brute_force(params, prompt, cfg=CFG):
  """Every sequence of allowed tokens then EOS, up to MAX_NEW tokens, scored teacher-forced."""
  seqs = [np.array(list(body) + [tokens.EOS], np.int32)
          for n in range(MAX_NEW) for body in itertools.product(ALLOWED, repeat=n)]
  scores = scoring.answer_logprobs(params, None, [prompt] * len(seqs), seqs, cfg=cfg)
  return {tuple(s.tolist()): float(x) for s, x in zip(seqs, scores)}


@pytest.mark.parametrize("grid", [False, True])
def test_dfs_finds_exactly_the_brute_force_set(grid):
  """DFS (KV cache, one token per step) against teacher-forced scores of every sequence."""
  cfg = GRID_CFG if grid else CFG
  params, prompt = _peaked(30.0, GRID_PARAMS if grid else PARAMS), _prompt()
  brute = _brute_force(params, prompt, cfg)
  ranked = sorted(brute.values(), reverse=True)
  # A threshold midway (in log space) between two well-separated neighbours: no borderline case.
  gaps = [(ranked[i] - ranked[i + 1], i) for i in range(2, len(ranked) - 1)]
  _, i = max(gaps)
  min_prob = math.exp((ranked[i] + ranked[i + 1]) / 2)
  want = {s: x for s, x in brute.items() if math.log(min_prob) < x}
  assert 3 <= len(want) < len(brute)  # a real cut, with several survivors
  got = dfs.dfs_sample(params, None, prompt, cfg=cfg, min_prob=min_prob, max_new_tokens=MAX_NEW,
                       allowed_ids=ALLOWED, max_candidates=1000)
  got_d = {tuple(t.tolist()): s for t, s in got}
  assert len(got_d) == len(got) and set(got_d) == set(want)
  keys = sorted(want)
  np.testing.assert_allclose([got_d[k] for k in keys], [want[k] for k in keys], rtol=1e-5, atol=1e-4)
  assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
  assert all(t[-1] == tokens.EOS and len(t) <= MAX_NEW for t, _ in got)


def test_dfs_bounds_on_candidates():
  params, prompt = _peaked(30.0), _prompt()
  got = dfs.dfs_sample(params, None, prompt, cfg=CFG, min_prob=1e-12, max_new_tokens=MAX_NEW,
                       allowed_ids=ALLOWED, max_candidates=5)
  assert len(got) == 5


def _greedy(params, adapter, prompt, n):
  out = decode.generate(params, adapter, prompt[None], np.ones((1, len(prompt)), bool), cfg=CFG,
                        lora_cfg=LCFG if adapter is not None else None, max_new_tokens=n,
                        eos_id=tokens.EOS, pad_id=tokens.PAD)
  g = np.asarray(out[0])
  return g[:int(np.argmax(g == tokens.EOS)) + 1] if (g == tokens.EOS).any() else None


@pytest.mark.parametrize("scale,eos_bias", [(10.0, 0.3), (30.0, 1.0)])  # greedy p ~0.2, ~0.8
def test_greedy_path_found_when_above_threshold(scale, eos_bias):
  """Full vocabulary. A head that favours EOS a little, so the greedy path ends early."""
  prompt = _prompt(1)
  params = _peaked(scale)
  params["lm_head"] = params["lm_head"].at[:, tokens.EOS].add(eos_bias)
  greedy = _greedy(params, None, prompt, 6)
  assert greedy is not None
  key = tuple(greedy.tolist())
  logp = scoring.answer_logprobs(params, None, [prompt], [greedy], cfg=CFG)[0]
  got = dfs.dfs_sample(params, None, prompt, cfg=CFG, min_prob=math.exp(logp) / 2,
                       max_new_tokens=6)
  found = {tuple(t.tolist()): s for t, s in got}
  assert key in found
  np.testing.assert_allclose(found[key], logp, rtol=1e-5, atol=1e-4)
  # Just above the greedy path's probability: it is cut, and so is anything less probable.
  above = dfs.dfs_sample(params, None, prompt, cfg=CFG, min_prob=min(0.999, math.exp(logp) * 1.01),
                         max_new_tokens=6)
  assert key not in {tuple(t.tolist()) for t, _ in above}
  assert all(s > logp for _, s in above)
  # Greedy is the special case min_prob >= 0.5: exactly the greedy path when p > 0.5, else none.
  half = dfs.dfs_sample(params, None, prompt, cfg=CFG, min_prob=0.5, max_new_tokens=6)
  want = [key] if math.exp(logp) > 0.5 else []
  assert [tuple(t.tolist()) for t, _ in half] == want


def test_dfs_under_an_adapter_scores_as_teacher_forcing():
  """The adapter reaches every expansion: DFS's log-probs equal the adapted model's scores,
  and differ from the bare model's."""
  params, prompt, ad = PARAMS, _prompt(), _adapter(3)
  got = dfs.dfs_sample(params, ad, prompt, cfg=CFG, lora_cfg=LCFG, min_prob=1e-9,
                       max_new_tokens=MAX_NEW, allowed_ids=ALLOWED, max_candidates=4)
  assert len(got) == 4
  seqs = [t for t, _ in got]
  adapted = scoring.answer_logprobs(params, ad, [prompt] * 4, seqs, cfg=CFG, lora_cfg=LCFG)
  bare = scoring.answer_logprobs(params, None, [prompt] * 4, seqs, cfg=CFG)
  np.testing.assert_allclose([s for _, s in got], adapted, rtol=1e-5, atol=1e-4)
  assert not np.allclose(adapted, bare, atol=1e-3)


def test_dfs_with_a_conditioning_vector_scores_as_teacher_forcing():
  """The pair format's vector reaches the prefill and every expansion: DFS's log-probs equal a
  full conditioned forward pass over prompt + answer, and differ from the unconditioned ones."""
  params, prompt = PARAMS, _prompt()
  cond_D = np.asarray(jax.random.normal(jax.random.key(5), (CFG.dim,)), np.float32)
  got = dfs.dfs_sample(params, None, prompt, cfg=CFG, min_prob=1e-9, max_new_tokens=MAX_NEW,
                       allowed_ids=ALLOWED, max_candidates=4, cond_D=cond_D)
  assert len(got) == 4

  def teacher_forced(seq, cond):
    full = np.concatenate([prompt, seq])[None].astype(np.int32)
    mask = np.ones(full.shape, bool)
    logits = transformer.forward(params, None, full, transformer.positions_from_mask(mask), mask, cfg=CFG,
                                 cond_BxD=None if cond is None else cond[None])
    logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
    P = len(prompt)
    return float(sum(logp[P - 1 + i, t] for i, t in enumerate(seq)))

  want = [teacher_forced(t, cond_D) for t, _ in got]
  np.testing.assert_allclose([s for _, s in got], want, rtol=1e-5, atol=1e-4)
  assert not np.allclose(want, [teacher_forced(t, None) for t, _ in got], atol=1e-3)

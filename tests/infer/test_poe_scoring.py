import jax
import numpy as np

from ttt_jax.data import tokens
from ttt_jax.infer import scoring, views
from ttt_jax.model import decode, transformer
from tests.infer.test_predict import CFG, LCFG, _adapter, _task  # the same tiny model and tasks

PARAMS = transformer.init_params(CFG, jax.random.key(0))
_forward = jax.jit(transformer.forward, static_argnames=("cfg", "lora_cfg"))


def _candidates(seed, n, side=2):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 10, (side, side + (i % 2))) for i in range(n)]  # two shapes


def _alone(adapter, prompt_T, answer_T):
  """One unpadded sequence, one forward, the score summed by hand in float64."""
  seq = np.concatenate([prompt_T, answer_T])[None]
  mask = np.ones_like(seq, bool)
  logits = _forward(PARAMS, adapter, seq, transformer.positions_from_mask(mask), mask,
                    cfg=CFG, lora_cfg=LCFG if adapter is not None else None)
  logp = np.asarray(jax.nn.log_softmax(logits[0]), np.float64)
  P = len(prompt_T)
  return sum(logp[P + i - 1, t] for i, t in enumerate(answer_T))


def test_poe_equals_sum_of_per_view_scores_one_by_one():
  task, ad = _task(1, 2), _adapter(3)
  vs = views.make_views(task, 0, n_orders=1)[:4]
  assert len({v.transform for v in vs}) > 1  # the views really transform the candidate
  cands = _candidates(2, 3)
  got = scoring.poe_scores(PARAMS, ad, vs, cands, cfg=CFG, lora_cfg=LCFG)
  want = [sum(_alone(ad, v.prompt_T, scoring.answer_tokens(v, c)) for v in vs) for c in cands]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  assert np.all(got < 0)


def test_answer_tokens_end_in_eos_in_the_view_frame():
  v = [v for v in views.make_views(_task(1, 2), 0, n_orders=1) if not v.transform.is_identity][0]
  c = np.arange(6).reshape(2, 3)
  a = scoring.answer_tokens(v, c)
  assert a[-1] == tokens.EOS
  assert np.array_equal(tokens.decode_answer(a), v.transform(c))


def test_scores_follow_candidate_permutation():
  task, ad = _task(4, 2), _adapter(5)
  vs = views.make_views(task, 0, n_orders=1)[:3]
  cands = _candidates(6, 4)
  got = scoring.poe_scores(PARAMS, ad, vs, cands, cfg=CFG, lora_cfg=LCFG)
  perm = [2, 0, 3, 1]
  permuted = scoring.poe_scores(PARAMS, ad, vs, [cands[i] for i in perm], cfg=CFG, lora_cfg=LCFG)
  np.testing.assert_allclose(permuted, got[perm], rtol=1e-6, atol=1e-5)
  assert len(set(np.round(got, 3))) == len(cands)  # distinct candidates, distinct scores


def test_padding_does_not_change_a_score():
  task, ad = _task(7, 2), _adapter(8)
  v = views.make_views(task, 0, n_orders=1)[0]
  a = scoring.answer_tokens(v, _candidates(9, 1)[0])
  short = scoring.answer_logprobs(PARAMS, ad, [v.prompt_T], [a], cfg=CFG, lora_cfg=LCFG,
                                  length_multiple=1)
  padded = scoring.answer_logprobs(PARAMS, ad, [v.prompt_T], [a], cfg=CFG, lora_cfg=LCFG,
                                   length_multiple=len(v.prompt_T) + len(a) + 37)
  # Batched with a much longer sequence: more padding behind this one.
  long_prompt = np.concatenate([v.prompt_T, v.prompt_T])
  batched = scoring.answer_logprobs(PARAMS, ad, [long_prompt, v.prompt_T], [a, a], cfg=CFG,
                                    lora_cfg=LCFG)
  np.testing.assert_allclose([padded[0], batched[1]], [short[0]] * 2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(short[0], _alone(ad, v.prompt_T, a), rtol=1e-5, atol=1e-4)


def test_vmapped_tasks_equal_one_by_one():
  tasks = [_task(10, 2), _task(11, side=3)]
  ads = [_adapter(12), _adapter(13)]
  vs = [views.make_views(tasks[0], 0, n_orders=1)[:3], views.make_views(tasks[1], 0, n_orders=1)[:2]]
  cands = [_candidates(14, 3), _candidates(15, 2, side=3)]
  together = scoring.poe_scores_many(PARAMS, ads, vs, cands, cfg=CFG, lora_cfg=LCFG)
  for k in range(2):
    alone = scoring.poe_scores(PARAMS, ads[k], vs[k], cands[k], cfg=CFG, lora_cfg=LCFG)
    assert together[k].shape == (len(cands[k]),)
    np.testing.assert_allclose(together[k], alone, rtol=1e-5, atol=1e-4)
  # The adapter matters: the bare model scores differently.
  bare = scoring.poe_scores_many(PARAMS, [None, None], vs, cands, cfg=CFG)
  assert not np.allclose(bare[0], together[0])
  # Rows in slices of at most max_rows sequences per forward pass: the same scores.
  sliced = scoring.poe_scores_many(PARAMS, ads, vs, cands, cfg=CFG, lora_cfg=LCFG, max_rows=8,
                                   rows_multiple=2)
  for k in range(2):
    np.testing.assert_allclose(sliced[k], together[k], rtol=1e-5, atol=1e-4)
  bare_sliced = scoring.poe_scores_many(PARAMS, [None, None], vs, cands, cfg=CFG, max_rows=4,
                                        rows_multiple=2)
  for k in range(2):
    np.testing.assert_allclose(bare_sliced[k], bare[k], rtol=1e-5, atol=1e-4)
  # The task axis padded to 3 (copies of the first task, dropped): the same scores.
  padded = scoring.poe_scores_many(PARAMS, ads, vs, cands, cfg=CFG, lora_cfg=LCFG, num_tasks=3)
  for k in range(2):
    np.testing.assert_allclose(padded[k], together[k], rtol=1e-5, atol=1e-4)
  empty = scoring.poe_scores_many(PARAMS, ads, [vs[0], []], [cands[0], []], cfg=CFG, lora_cfg=LCFG)
  np.testing.assert_allclose(empty[0], together[0], rtol=1e-5, atol=1e-4)
  assert empty[1].shape == (0,)


def test_greedy_decode_scores_its_max_logprobs():
  task, ad = _task(16, 2), _adapter(17)
  prompt = views.make_views(task, 0, n_orders=1)[0].prompt_T
  n = 10
  out = decode.generate(PARAMS, ad, prompt[None], np.ones((1, len(prompt)), bool), cfg=CFG,
                        lora_cfg=LCFG, max_new_tokens=n, eos_id=tokens.EOS, pad_id=tokens.PAD)
  greedy = np.asarray(out[0])
  is_eos = greedy == tokens.EOS
  greedy = greedy[:int(np.argmax(is_eos)) + 1] if is_eos.any() else greedy
  score = scoring.answer_logprobs(PARAMS, ad, [prompt], [greedy], cfg=CFG, lora_cfg=LCFG)[0]
  seq = np.concatenate([prompt, greedy])[None]
  mask = np.ones_like(seq, bool)
  logits = _forward(PARAMS, ad, seq, transformer.positions_from_mask(mask), mask,
                    cfg=CFG, lora_cfg=LCFG)
  logp = np.asarray(jax.nn.log_softmax(logits[0]), np.float64)
  P = len(prompt)
  best = logp[P - 1:P - 1 + len(greedy)].max(axis=-1).sum()
  np.testing.assert_allclose(score, best, rtol=1e-5, atol=1e-4)


def test_answers_are_greedy_exactly_when_decoding_returns_them():
  """Teacher-forced argmax agreement equals greedy decoding: the decoded answer passes, the
  same answer with one token changed (anywhere) does not, and prompts do not mix."""
  task, ad = _task(18, 2), _adapter(19)
  prompts = [v.prompt_T for v in views.make_views(task, 0, n_orders=1)[:2]]
  n = 8
  greedy = []
  for p in prompts:
    out = np.asarray(decode.generate(PARAMS, ad, p[None], np.ones((1, len(p)), bool), cfg=CFG,
                                     lora_cfg=LCFG, max_new_tokens=n, eos_id=tokens.EOS,
                                     pad_id=tokens.PAD)[0])
    greedy.append(out)  # n tokens, EOS or not: the property holds for any prefix length
  changed = []
  for k, g in enumerate(greedy):
    bad = g.copy()
    bad[k * 3 % n] = (bad[k * 3 % n] + 1) % tokens.VOCAB_SIZE
    changed.append(bad)
  got = scoring.answers_are_greedy(PARAMS, ad, prompts * 2, greedy + changed, cfg=CFG,
                                   lora_cfg=LCFG)
  assert got.tolist() == [True, True, False, False]
  swapped = scoring.answers_are_greedy(PARAMS, ad, prompts, greedy[::-1], cfg=CFG, lora_cfg=LCFG)
  assert swapped.tolist() == [np.array_equal(greedy[0], greedy[1])] * 2


def test_row_counts_share_one_program_and_padding_rows_change_nothing():
  """3 and 5 (prompt, answer) rows pad to 8: one compiled program, the same scores and greedy
  agreement as without row padding."""
  task, ad = _task(9, 2), _adapter(10)
  vs = views.make_views(task, 0, n_orders=1)[:5]
  cands = _candidates(11, 1)
  prompts = [v.prompt_T for v in vs]
  answers = [scoring.answer_tokens(v, cands[0]) for v in vs]
  kw = dict(cfg=CFG, lora_cfg=LCFG)
  scoring.answer_logprobs(PARAMS, ad, prompts[:3], answers[:3], **kw)
  programs = scoring._sequence_logprobs_jit._cache_size()
  scoring.answer_logprobs(PARAMS, ad, prompts[:5], answers[:5], **kw)
  assert scoring._sequence_logprobs_jit._cache_size() == programs  # 3 and 5 rows: one 8-row program
  for n in (3, 5):
    padded = scoring.answer_logprobs(PARAMS, ad, prompts[:n], answers[:n], **kw)
    exact = scoring.answer_logprobs(PARAMS, ad, prompts[:n], answers[:n], rows_multiple=1, **kw)
    assert padded.shape == (n,)
    np.testing.assert_allclose(padded, exact, rtol=1e-6, atol=1e-5)
    for got, want in zip(scoring.greedy_matches(PARAMS, ad, prompts[:n], answers[:n], **kw),
                         scoring.greedy_matches(PARAMS, ad, prompts[:n], answers[:n], rows_multiple=1, **kw)):
      np.testing.assert_allclose(got, want)

import dataclasses
import os

import jax
import numpy as np
import pytest

from ttt_jax import selftrain
from ttt_jax.arc.task import Pair, Task
from ttt_jax.data import loo
from ttt_jax.infer import scoring, selection
from ttt_jax.infer.records import Candidate, CandidateRecord, Ranked
from ttt_jax.model import config, lora, transformer
from ttt_jax.train import ttt
from ttt_jax.train.optim import ttt_optim_config

CFG = config.get_config("tiny").replace(dtype="float32")
LCFG = lora.LoraConfig(rank=4, alpha=8.0)
PARAMS = transformer.init_params(CFG, jax.random.key(0))


def _g(v, shape=(2, 2)):
  return np.full(shape, v).tolist()


def _rec(*grid_counts):
  """A record whose vote ranks the (grid, count) pairs as given."""
  return CandidateRecord(num_views=sum(n for _, n in grid_counts), num_invalid=0, num_extra=0,
                         ranked=tuple(Ranked(g, n, n, False) for g, n in grid_counts),
                         candidates=tuple(Candidate(g, n, 0) for g, n in grid_counts))


def _record(counts, scores=None):
  r = _rec(*sorted(((_g(i), n) for i, n in enumerate(counts)), key=lambda c: -c[1]))
  if scores is not None:
    r = selection.attach_scores(r, [_g(i) for i in range(len(scores))], scores)
  return r


def _task(seed=0, n=3, shape=(2, 3)):
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(n + 1):
    g = rng.integers(0, 10, size=shape).astype(np.int8)
    pairs.append(Pair(g, g[::-1].copy()))
  return Task(f"s{seed}", tuple(pairs[:n]), (Pair(pairs[n].input, None),))


def test_pseudo_label_follows_the_confidence_rule():
  r = _record([6, 3, 1], scores=[-1.0, -4.0, -9.0])
  np.testing.assert_array_equal(selftrain.pseudo_label(r, selftrain.ConfidenceRule(0.6)), _g(0))
  assert selftrain.pseudo_label(r, selftrain.ConfidenceRule(0.61)) is None  # share 0.6
  margin = selftrain.ConfidenceRule(0.5, min_margin=3.0)
  np.testing.assert_array_equal(selftrain.pseudo_label(r, margin), _g(0))  # -1 vs -4
  assert selftrain.pseudo_label(r, selftrain.ConfidenceRule(0.5, min_margin=3.5)) is None
  # Under poe the leader is the best-scored candidate, and its own share counts.
  flipped = _record([6, 3, 1], scores=[-4.0, -1.0, -9.0])
  assert selftrain.pseudo_label(flipped, selftrain.ConfidenceRule(0.3), "poe").tolist() == _g(1)
  assert selftrain.pseudo_label(flipped, selftrain.ConfidenceRule(0.31), "poe") is None
  assert selftrain.pseudo_label(_record([]), selftrain.ConfidenceRule(0.0)) is None
  assert selftrain.pseudo_label(_record([4]), margin) is None  # unscored: no margin to trust
  with pytest.raises(ValueError, match="min_vote_share"):
    selftrain.ConfidenceRule(1.5)


def test_m_step_data_weights_pseudo_pairs_wherever_they_appear():
  task = _task(1, n=3)
  label = np.asarray(task.test[0].input[::-1], np.int8)
  data = selftrain.m_step_dataset(task, {0: label}, weight=0.25, n_max=40, max_tokens=512, seed=3)
  grown = selftrain.with_pseudo_labels(task, {0: label})
  assert len(grown.train) == 4 and np.array_equal(grown.train[3].output, label)
  plain = loo.build_ttt_dataset(grown, n_max=40, max_tokens=512, seed=3)
  assert [e.tokens_T.tolist() for e in data] == [e.tokens_T.tolist() for e in plain]
  seen = set()
  for e, p in zip(data, plain):
    w = e.loss_mask_T
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w > 0, p.loss_mask_T)  # same targets, only reweighted
    seen |= set(np.unique(w[w > 0]).tolist())
  assert seen == {0.25, 1.0}
  same = selftrain.m_step_dataset(task, {0: label}, weight=1.0, n_max=40, max_tokens=512, seed=3)
  for e, p in zip(same, plain):
    np.testing.assert_array_equal(e.loss_mask_T, p.loss_mask_T.astype(np.float32))
  with pytest.raises(ValueError, match="pair weights"):
    loo.build_ttt_dataset(task, pair_weights=[1.0])


def test_loo_exact_is_teacher_forced_greedy_on_each_demonstration():
  task = _task(2, n=3)
  got = selftrain.loo_exact(PARAMS, None, task, cfg=CFG)
  prompts, answers = selftrain.loo_rows(task, CFG.max_seq_len)
  assert len(prompts) == 3 and all(a[-1] == 14 for a in answers)  # EOS-terminated outputs
  want = [scoring.answers_are_greedy(PARAMS, None, [p], [a], cfg=CFG)[0]
          for p, a in zip(prompts, answers)]
  assert got.tolist() == want
  assert selftrain.verified(np.array([1, 0, 0], bool), np.array([0, 1, 0], bool))
  assert not selftrain.verified(np.array([1, 1, 0], bool), np.array([0, 1, 0], bool))
  exact, acc = selftrain.loo_greedy(PARAMS, None, task, cfg=CFG)
  assert exact.tolist() == want and acc.shape == (3,) and ((acc >= 0) & (acc <= 1)).all()
  assert all(a == 1.0 for a, e in zip(acc, exact) if e)  # exact means every token is greedy
  for p, a, tok_acc in zip(prompts, answers, acc):
    # Token k is greedy iff the one-token answer a[k] is greedy after the prompt p + a[:k].
    hits = scoring.answers_are_greedy(PARAMS, None, [np.concatenate([p, a[:k]]) for k in range(len(a))],
                                      [a[k:k + 1] for k in range(len(a))], cfg=CFG)
    assert tok_acc == pytest.approx(hits.mean())
  # With nothing exact before, a drop in token accuracy is what rejects.
  none = np.zeros(3, bool)
  assert not selftrain.verified(none, none, np.array([.5, .5, .5]), np.array([.4, .5, .5]))
  assert selftrain.verified(none, none, np.array([.5, .5, .5]), np.array([.4, .5, .5]),
                            max_token_acc_drop=0.05)
  assert selftrain.verified(none, none, np.array([.5, .5, .5]), np.array([.6, .5, .5]))


def test_top_unchanged_compares_every_input_leader():
  a, b = _record([3, 1]), _record([1, 3])
  assert selftrain.top_unchanged([a, a], [a, a]) and not selftrain.top_unchanged([a, a], [a, b])
  assert not selftrain.top_unchanged([a], [_record([])])


def test_train_group_continues_from_given_adapters():
  """M-step training starts from the round's adapter: with a zero learning rate it comes back
  unchanged, and it differs from a fresh start."""
  task = _task(3, n=3)
  data = [loo.build_ttt_dataset(task, n_max=4, max_tokens=128, augment=False)]
  tcfg = ttt.TTTConfig(batch_size=2, epochs=1, n_max=4, max_tokens=128, min_bucket=128,
                       augment=False, log_every=0)
  start = jax.tree.map(lambda x: np.asarray(x) + 0.01,
                       ttt.init_adapter(CFG, LCFG, "other", 7))
  frozen, _ = ttt.train_group(PARAMS, data, [task.task_id], mcfg=CFG, lcfg=LCFG,
                              ocfg=ttt_optim_config("tiny", learning_rate=0.0,
                                                    weight_decay=0.0), tcfg=tcfg,
                              initial=[start])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-7), frozen[0], start)
  fresh, _ = ttt.train_group(PARAMS, data, [task.task_id], mcfg=CFG, lcfg=LCFG,
                             ocfg=ttt_optim_config("tiny", learning_rate=0.0, weight_decay=0.0),
                             tcfg=tcfg)
  assert not np.allclose(fresh[0]["layers"]["attn"]["q"]["a"], start["layers"]["attn"]["q"]["a"])
  with pytest.raises(ValueError, match="initial adapters"):
    ttt.train_group(PARAMS, data, [task.task_id], mcfg=CFG, lcfg=LCFG,
                    ocfg=ttt_optim_config("tiny"), tcfg=tcfg, initial=[start, start])


def _const_task():
  """Every output is the 1x1 grid [[1]]: a tiny LoRA learns it, so leave-one-out exactness
  starts at 3/3 and a wrong pseudo-label has something to break."""
  rng = np.random.default_rng(0)
  one = np.ones((1, 1), np.int8)
  pairs = [Pair(rng.integers(2, 10, (2, 2)).astype(np.int8), one) for _ in range(4)]
  return Task("const", tuple(pairs[:3]), (Pair(pairs[3].input, one),))


ST_LCFG = lora.LoraConfig(rank=8, alpha=16.0, targets=("q", "v", "o", "gate", "up", "down"))
ST_TCFG = ttt.TTTConfig(batch_size=2, epochs=20, n_max=12, max_tokens=128, min_bucket=128,
                        group_size=1, augment=False, log_every=0)
ST_OCFG = ttt_optim_config("tiny", learning_rate=1e-2)


class _StCfg:
  def __init__(self, **kw):
    self.__dict__.update(dict(rounds=3, min_vote_share=0.5, min_margin=0.0, weight=1.0,
                              epochs=2) | kw)


def _run_rounds(params, tasks, adapters, records, *, predict, st_cfg, **kw):
  """What the self-training stage does with ``selftrain.Rounds``, with a stand-in
  ``predict(tasks, adapters, round_dir)`` for the prediction stage."""
  rounds = selftrain.Rounds(params, tasks, adapters, records, st_cfg=st_cfg, **kw)
  for r in range(1, st_cfg.rounds + 1):
    if not rounds.active:
      break
    accepted = rounds.train(r)
    rounds.update(r, predict(rounds.tasks(list(accepted)), accepted, rounds.round_dir(r))
                  if accepted else {})
  return rounds.finish()


@pytest.mark.slow
def test_rounds_accept_a_right_label_reject_a_wrong_one_and_resume(tmp_path, monkeypatch):
  task = _const_task()
  data = [loo.build_ttt_dataset(task, n_max=12, max_tokens=128, augment=False)]
  start, _ = ttt.train_group(PARAMS, data, [task.task_id], mcfg=CFG, lcfg=ST_LCFG, ocfg=ST_OCFG,
                             tcfg=ST_TCFG)
  assert selftrain.loo_exact(PARAMS, start[0], task, cfg=CFG, lora_cfg=ST_LCFG).all()
  calls, records = [], {}

  def predict(ts, ads, round_dir):  # the leaders stay: the task is cached after one round
    calls.append(([t.task_id for t in ts], round_dir))
    return {t.task_id: records[t.task_id] for t in ts}

  def run(label, out, **kw):
    records[task.task_id] = [_rec((label, 3))]
    return _run_rounds(PARAMS, [task], {task.task_id: start[0]}, records, mcfg=CFG,
                                lcfg=ST_LCFG, ocfg=ST_OCFG, tcfg=ST_TCFG, st_cfg=_StCfg(**kw),
                                select_method="vote", predict=predict, out_dir=str(out))

  final, rounds = run([[1]], tmp_path / "right")
  assert [(s["accepted"], s["rejected"], s["labels_right"], s["continuing"]) for s in rounds] == [
      (1, 0, 1, 0)]
  history = final["const"][0].rounds  # round 0, then the accepted round's label and answers
  assert [(e["round"], e.get("status"), e.get("pseudo_label"), e.get("leaders_unchanged"))
          for e in history] == [(0, None, None, None), (1, "accepted", [[1]], True)]
  assert history[0]["candidates"] == history[1]["candidates"] == [
      {"grid": [[1]], "count": 3, "identity_count": 0}]
  assert calls == [(["const"], str(tmp_path / "right" / "selftrain" / "round1"))]
  from ttt_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  kept = checkpoint.load_adapter(str(tmp_path / "right" / "selftrain" / "round1" / "adapters"),
                                 "const")[0]
  # Deterministic: the same round in another directory trains the same adapter.
  run([[1]], tmp_path / "again")
  again = checkpoint.load_adapter(str(tmp_path / "again" / "selftrain" / "round1" / "adapters"),
                                  "const")[0]
  jax.tree.map(np.testing.assert_array_equal, kept, again)

  calls.clear()
  final, rounds = run([[2]], tmp_path / "wrong", weight=5.0, epochs=10)
  assert [(s["accepted"], s["rejected"], s["labels_right"]) for s in rounds] == [(0, 1, 0)]
  assert calls == [] and final["const"][0].candidates[0].grid == [[2]]
  # The rejected round is in the history, without answers (it did not predict).
  assert [{k: v for k, v in e.items() if k != "candidates"} for e in final["const"][0].rounds
          ] == [{"round": 0, "attempts": []},
                {"round": 1, "status": "rejected", "pseudo_label": [[2]]}]
  assert not os.path.exists(tmp_path / "wrong" / "selftrain" / "round1" / "adapters")

  # A rerun reads the saved decisions instead of training again.
  monkeypatch.setattr(ttt, "train_group", lambda *a, **k: pytest.fail("retrained"))
  _, again_rounds = run([[1]], tmp_path / "right")
  assert [(s["accepted"], s["labels_right"]) for s in again_rounds] == [(1, 1)]


def test_control_verification_rejects_a_label_no_better_than_training_without_it(
    tmp_path, monkeypatch):
  """Planted leave-one-out results: the labelled adapter beats the one it continued from but
  not the same continuation trained without the label. ``verify="before"`` accepts it,
  ``verify="control"`` rejects it; the control trains on the task's own leave-one-out data."""
  task = _const_task()
  start = jax.tree.map(np.asarray, ttt.init_adapter(CFG, ST_LCFG, task.task_id, 0))
  tcfg = ST_TCFG.replace(epochs=1)
  real_train, trained = ttt.train_group, []

  def spy(params, data, ids, **k):
    out = real_train(params, data, ids, **k)
    trained.append((data[0], out[0][0]))
    return out

  monkeypatch.setattr(ttt, "train_group", spy)

  def planted(params, adapter, task, **k):
    if adapter is start:
      return np.array([False] * 3), np.array([0.2] * 3)
    if adapter is trained[0][1]:  # the labelled M-step
      return np.array([False] * 3), np.array([0.4] * 3)
    assert adapter is trained[1][1]  # the control
    return np.array([False] * 3), np.array([0.6] * 3)

  monkeypatch.setattr(selftrain, "loo_greedy", planted)
  records = {task.task_id: [_rec(([[2]], 3))]}

  def run(verify):
    trained.clear()
    return _run_rounds(
        PARAMS, [task], {task.task_id: start}, records, mcfg=CFG, lcfg=ST_LCFG, ocfg=ST_OCFG,
        tcfg=tcfg, st_cfg=_StCfg(rounds=1, verify=verify), select_method="vote",
        predict=lambda ts, ads, d: {t.task_id: records[t.task_id] for t in ts},
        out_dir=str(tmp_path / verify))[1]

  assert [(s["accepted"], s["rejected"]) for s in run("before")] == [(1, 0)]
  assert len(trained) == 1  # no control trained
  assert [(s["accepted"], s["rejected"]) for s in run("control")] == [(0, 1)]
  labelled_data, control_data = trained[0][0], trained[1][0]
  plain = loo.build_ttt_dataset(task, n_max=tcfg.n_max, max_tokens=tcfg.max_tokens,
                                augment=False, seed=tcfg.seed + 1)
  assert len(control_data) == len(plain)
  for got, want in zip(control_data, plain):
    np.testing.assert_array_equal(got.tokens_T, want.tokens_T)
  assert any(len(a.tokens_T) != len(b.tokens_T) for a, b in zip(labelled_data, plain))
  import json  # pylint: disable=g-import-not-at-top
  with open(tmp_path / "control" / "selftrain" / "round1" / "decisions" / "const.json") as f:
    decision = json.load(f)
  assert decision["status"] == "rejected" and decision["verify"] == "control"
  assert decision["loo_token_acc_control"] == [0.6] * 3
  with pytest.raises(ValueError, match="verify"):
    run("sometimes")


def test_rounds_without_a_confident_candidate_change_nothing(tmp_path):
  task = _const_task()
  split = [_rec(([[1]], 2), ([[3]], 2))]
  final, rounds = _run_rounds(
      PARAMS, [task], {task.task_id: None}, {task.task_id: split}, mcfg=CFG, lcfg=ST_LCFG,
      ocfg=ST_OCFG, tcfg=ST_TCFG, st_cfg=_StCfg(min_vote_share=0.75), select_method="vote",
      predict=lambda *a: pytest.fail("predicted"), out_dir=str(tmp_path))
  assert final[task.task_id][0].rounds == (
      {"round": 0, "attempts": [], "candidates": split[0].to_json()["candidates"]},
      {"round": 1, "status": "no_label"})
  assert [dataclasses.replace(r, rounds=None) for r in final[task.task_id]] == split
  assert [(s["labelled"], s["accepted"], s["continuing"]) for s in rounds] == [(0, 0, 0)]


@pytest.mark.slow
def test_task_parallel_rounds_split_the_work_and_agree(tmp_path, monkeypatch):
  """Two processes (threads standing in, with a real barrier): each trains its share of the
  round's tasks, both end with every task's records and the same round summary."""
  import threading  # pylint: disable=g-import-not-at-top
  from ttt_jax.parallel import multihost  # pylint: disable=g-import-not-at-top
  tasks = [_const_task(), _const_task().replace(task_id="const2")]
  label = [[1]]
  records = {t.task_id: [_rec((label, 3))] for t in tasks}
  local, gate = threading.local(), threading.Barrier(2)
  monkeypatch.setattr(multihost, "process_index", lambda: local.index)
  monkeypatch.setattr(multihost, "process_count", lambda: 2)
  monkeypatch.setattr(multihost, "barrier", lambda name: gate.wait())
  trained, out = {0: [], 1: []}, {}
  real_train = ttt.train_group

  def spy(*a, **k):
    trained[local.index].extend(a[2])
    return real_train(*a, **k)

  monkeypatch.setattr(ttt, "train_group", spy)

  def process(i):
    local.index = i
    out[i] = _run_rounds(
        PARAMS, tasks, {t.task_id: None for t in tasks}, records, mcfg=CFG, lcfg=ST_LCFG,
        ocfg=ST_OCFG, tcfg=ST_TCFG.replace(epochs=1), st_cfg=_StCfg(rounds=2),
        select_method="vote", predict=lambda ts, ads, d: {t.task_id: records[t.task_id] for t in ts},
        out_dir=str(tmp_path), task_parallel=True)

  threads = [threading.Thread(target=process, args=(i,)) for i in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(trained[0] + trained[1]) == ["const", "const2"]
  assert len(trained[0]) == len(trained[1]) == 1  # one task each
  no_time = lambda rounds: [{k: v for k, v in s.items() if k != "seconds"} for s in rounds]
  assert out[0][0] == out[1][0] and no_time(out[0][1]) == no_time(out[1][1])
  assert out[0][1][0]["accepted"] == 2
  assert os.path.exists(tmp_path / "selftrain" / "rounds.json")


def test_attempts_by_round_follow_each_inputs_latest_prediction():
  a, b, c = [[1]], [[2]], [[3]]
  rec = lambda attempts, rounds=None: CandidateRecord(1, 0, 0, attempts=attempts, rounds=rounds)
  records = {
      "kept": [rec([a], [
          {"round": 0, "attempts": [a]}, {"round": 1, "status": "rejected", "pseudo_label": a}])],
      "moved": [rec([c], [
          {"round": 0, "attempts": [a]}, {"round": 1, "status": "accepted", "attempts": [b]},
          {"round": 2, "status": "accepted", "attempts": [c]}])],
      "plain": [rec([b])]}
  assert selftrain.attempts_by_round(records) == [
      {"kept": [[a]], "moved": [[a]], "plain": [[b]]},
      {"kept": [[a]], "moved": [[b]], "plain": [[b]]},
      {"kept": [[a]], "moved": [[c]], "plain": [[b]]}]
  assert selftrain.attempts_by_round({"plain": [rec([b])]}) == [{"plain": [[b]]}]

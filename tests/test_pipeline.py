"""The pipeline end to end on a few tasks with a tiny random model, on CPU."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.configs import pipeline as pipeline_config
from ttt_jax import pipeline
from ttt_jax.arc import io
from ttt_jax.arc.task import task_to_json
from ttt_jax.eval import submission
from ttt_jax.infer.records import CandidateRecord
from ttt_jax.model import config, store, transformer


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("model"))
  cfg = config.get_config("tiny", dtype="float32", max_seq_len=1024)
  store.save_model(d, transformer.init_params(cfg, jax.random.key(0)), cfg, dtype="float32")
  return d


def _config(tasks, model_dir, out_dir):
  c = pipeline_config.get_config()
  c.tasks, c.model_dir, c.out_dir = tasks, model_dir, out_dir
  c.lora.rank, c.ttt.n_max, c.ttt.epochs, c.ttt.max_tokens = 4, 4, 1, 512
  c.infer.max_tokens, c.infer.n_orders, c.infer.answer_budget = 512, 1, "demos"
  return c


def test_ttt_stage_passes_clip_norm_and_data_mode(tmp_path, monkeypatch):
  from ttt_jax.train import ttt
  seen = {}
  monkeypatch.setattr(ttt, "run_ttt", lambda *a, **kw: seen.update(kw))
  c = _config("dev80-small", "", str(tmp_path))
  mcfg = config.get_config("tiny")
  eng = pipeline.engine_lib.Engine(params=None, mcfg=mcfg)
  pipeline._ttt_stage(c, [], eng)
  assert seen["ocfg"].clip_norm == 1.0 and seen["tcfg"].data_mode == "ours"  # our defaults
  c.ttt.clip_norm, c.ttt.data_mode = None, "reference"  # the reference's
  pipeline._ttt_stage(c, [], eng)
  assert seen["ocfg"].clip_norm is None and seen["tcfg"].data_mode == "reference"


def test_paper_preset_builds_the_reference_codes_data_views_and_vote():
  from ttt_jax import voting
  from ttt_jax.data import loo
  from ttt_jax.infer import views as views_lib
  from ttt_jax.train import ttt
  c = pipeline_config.get_config("paper")
  mcfg = config.get_config("llama-3.2-1b")
  lcfg, ocfg, tcfg = pipeline.ttt_configs(c, mcfg)
  assert set(lcfg.targets) == {"q", "v", "gate", "up", "down"} and lcfg.rank == 128
  assert ocfg.clip_norm is None and (tcfg.n_max, tcfg.max_tokens) == (250, 8192)
  task = io.load_tasks("dev80-small")[0][0]
  data = ttt.build_datasets([task], tcfg)[task.task_id]
  ref = loo.build_ttt_dataset(task, n_max=250, max_tokens=8192, augment=True, seed=c.seed,
                              mode="reference")
  assert [e.tokens_T.tolist() for e in data] == [e.tokens_T.tolist() for e in ref]
  got = pipeline.views_for_test_input(task, 0, c.infer, 8192)
  want = views_lib.make_views(task, 0, n_orders=3, max_tokens=8192, seed=c.infer.seed,
                              scheme="reference")
  assert [v.prompt_T.tolist() for v in got] == [v.prompt_T.tolist() for v in want]
  assert {k: c.vote[k] for k in voting.REFERENCE} == voting.REFERENCE


@pytest.mark.slow
def test_pipeline_end_to_end_with_bad_and_oversized_tasks(tmp_path, tiny_model_dir):
  tasks, _ = io.load_tasks("dev80-small")
  task_dir = tmp_path / "tasks"
  task_dir.mkdir()
  for t in tasks[:3]:
    (task_dir / f"{t.task_id}.json").write_text(json.dumps(task_to_json(t)))
  (task_dir / "broken.json").write_text('{"train": [], "test": [{"input": [[1]]}]}')
  # An oversized task: demonstrations too long for the token budget, so TTT is skipped.
  big = task_to_json(tasks[0])
  big["train"] = [{"input": [[1] * 30] * 30, "output": [[2] * 30] * 30}] * 2
  (task_dir / "big.json").write_text(json.dumps(big))

  out = str(tmp_path / "out")
  summary = pipeline.run_pipeline(_config(str(task_dir), tiny_model_dir, out))
  for name in ("submission.json", "candidates.json", "scores.json", "errors.json",
               "timings.json", "report.html"):
    assert os.path.exists(os.path.join(out, name)), name
  ids = {t.task_id for t in tasks[:3]} | {"big"}
  sub = submission.read_submission(os.path.join(out, "submission.json"),
                                   expected_tests={i: 1 for i in ids} | {
                                       t.task_id: len(t.test) for t in tasks[:3]})
  assert set(sub) == ids  # every valid task has its attempts; the broken one is reported
  errors = json.load(open(os.path.join(out, "errors.json")))
  assert any("broken" in e for e in errors["load_errors"])
  assert "big" in errors["ttt_skipped"]
  assert summary["num_scored"] == 4 and 0 <= summary["solved"] <= 4
  cands = json.load(open(os.path.join(out, "candidates.json")))
  assert all(r["num_views"] >= 1 for tid, rs in cands.items() if tid != "big" for r in rs)
  assert cands["big"][0]["num_views"] == 0 and cands["big"][0]["fallback"]  # no view fits
  assert os.path.exists(os.path.join(out, "adapters", f"{tasks[0].task_id}.safetensors"))

  # A rerun reuses adapters and predictions and writes the same submission.
  before = open(os.path.join(out, "submission.json")).read()
  os.remove(os.path.join(out, "submission.json"))
  pipeline.run_pipeline(_config(str(task_dir), tiny_model_dir, out))
  assert open(os.path.join(out, "submission.json")).read() == before

  # Predicting later with the saved adapters (experiments/predict.py) gives the same answers.
  c = _config(str(task_dir), tiny_model_dir, str(tmp_path / "pred"))
  c.ttt.enabled, c.adapters_dir = False, os.path.join(out, "adapters")
  pipeline.run_pipeline(c)
  assert open(str(tmp_path / "pred" / "submission.json")).read() == before


def test_vote_test_input_falls_back_when_nothing_parses():
  tasks, _ = io.load_tasks("dev80-small:1")
  r = pipeline.vote_test_input([], tasks[0], 0)
  assert r.fallback and len(r.attempts) == 2
  np.testing.assert_array_equal(r.attempts[0], tasks[0].test[0].input)


def _answers(task, grids_by_transform):
  """ViewAnswers as decode_views gives them: one per (transform name, grid or None)."""
  from ttt_jax.infer import predict, views  # pylint: disable=g-import-not-at-top
  by_name = {v.transform.name: v for v in views.make_views(task, 0, n_orders=1)}
  return [predict.ViewAnswer(by_name[name], grid, np.zeros(0, np.int32))
          for name, grid in grids_by_transform]


def test_vote_config_fields_drive_the_vote():
  import inspect  # pylint: disable=g-import-not-at-top
  from ttt_jax import voting  # pylint: disable=g-import-not-at-top
  vote_cfg = pipeline_config.get_config().vote.to_dict()
  # Every option is a config field, and the config's defaults are the voting defaults.
  params = inspect.signature(voting.hierarchical_vote).parameters
  options = {k: v.default for k, v in params.items() if v.kind is v.KEYWORD_ONLY}
  options.pop("identity")
  assert {k: v for k, v in vote_cfg.items() if k != "method"} == options
  assert vote_cfg["method"] == "hierarchical" and set(voting.REFERENCE) <= set(vote_cfg)

  tasks, _ = io.load_tasks("dev80-small:1")
  a, b, c = (np.full((2, 2), i, np.int8) for i in (1, 2, 3))
  ans = _answers(tasks[0], [("identity", a)] * 3 + [("identity", b), ("transpose", c),
                                                    ("flip_ud", b), ("rot90", None)])
  ours = pipeline.vote_test_input(ans, tasks[0], 0, **vote_cfg)
  ref = pipeline.vote_test_input(ans, tasks[0], 0, **(vote_cfg | voting.REFERENCE))
  flat = pipeline.vote_test_input(ans, tasks[0], 0, "flat")
  assert ours.num_invalid == ref.num_invalid == 1
  as_lists = lambda r: [np.asarray(x).tolist() for x in r.attempts]
  assert as_lists(ours) == [b.tolist(), a.tolist()]  # b: 2 groups; a: identity tie-break
  assert as_lists(ref) == [b.tolist(), c.tolist()]  # c: 3 slots of its one-view group
  assert as_lists(flat) == [a.tolist(), b.tolist()]  # raw counts 3 and 2
  with pytest.raises(ValueError, match="vote method"):
    pipeline.vote_test_input(ans, tasks[0], 0, "nope")


def _planted_decode(grids):
  """A stand-in for predict.decode_views whose view i answers grids[i % len(grids)]: known
  candidates with known vote counts, without compiling a decoder."""
  from ttt_jax.infer import predict  # pylint: disable=g-import-not-at-top

  def decode(params, adapters, views_per_task, **kwargs):
    return [[predict.ViewAnswer(v, grids[i % len(grids)], np.zeros(0, np.int32))
             for i, v in enumerate(vs)] for vs in views_per_task]
  return decode


def test_poe_selection_scores_the_pool_and_picks_the_best(tmp_path, tiny_model_dir, monkeypatch):
  """select=poe: the leading candidates carry the PoE score of the views the config names,
  equal to poe_scores one by one, and the attempts are the two best by that score."""
  from ttt_jax.infer import predict, scoring  # pylint: disable=g-import-not-at-top
  from ttt_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  grids = [np.full((2, 2), 1, np.int8), np.full((2, 2), 1, np.int8), np.full((2, 2), 1, np.int8),
           np.full((2, 2), 2, np.int8), np.full((2, 2), 2, np.int8), np.full((3, 2), 3, np.int8),
           np.eye(2, dtype=np.int8) * 4]
  monkeypatch.setattr(predict, "decode_views", _planted_decode(grids))
  out = str(tmp_path / "poe")
  c = _config("dev80-small:2", tiny_model_dir, out)
  c.ttt.enabled = False
  c.select.method, c.select.max_candidates, c.select.views = "poe", 3, 4
  summary = pipeline.run_pipeline(c)
  cands = json.load(open(os.path.join(out, "candidates.json")))
  params, mcfg = checkpoint.load_base_model(tiny_model_dir, "", {})
  tasks = {t.task_id: t for t in io.load_tasks("dev80-small:2")[0]}
  context = min(c.infer.max_tokens, mcfg.max_seq_len)
  for tid, records in cands.items():
    for j, js in enumerate(records):
      r = CandidateRecord.from_json(js)  # the file holds the record's JSON
      assert r.select == "poe"
      pool = pipeline.selection.pool(r, 3)
      assert [np.asarray(g).tolist() for g in pool[:1]] == [grids[0].tolist()]  # most votes
      vs = pipeline.spread(pipeline.views_for_test_input(tasks[tid], j, c.infer, context), 4)
      assert len(vs) == 4
      want = scoring.poe_scores(params, None, vs, [np.asarray(g) for g in pool], cfg=mcfg)
      got = [pipeline.selection.score_of(r, g) for g in pool]
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
      assert sum(x.get("poe") is not None for x in js["candidates"]) == 3  # the pool only
      best = [pool[i] for i in np.argsort(-want, kind="stable")[:2]]
      assert js["attempts"] == [np.asarray(g).tolist() for g in best] and not js["fallback"]
  assert "PoE log-prob" in open(os.path.join(out, "report.html")).read()
  assert summary["views_parsed"] == summary["views"]

  # The same planted answers under select=vote: the vote's attempts, nothing scored.
  c.out_dir, c.select.method = str(tmp_path / "vote"), "vote"
  pipeline.run_pipeline(c)
  voted = json.load(open(os.path.join(c.out_dir, "candidates.json")))
  for tid, records in voted.items():
    for r in records:
      assert all(x.get("poe") is None for x in r["candidates"])
      assert r["attempts"][0] == grids[0].tolist()

  timed = json.load(open(os.path.join(out, "timings.json")))
  assert "predict_score" in timed and "predict_dfs" not in timed  # scored, not searched

  # Depth-first search through the real sampler: it runs and its stage is recorded (the random
  # tiny model finds nothing above 10%, so the vote is unchanged).
  c.out_dir, c.search.method, c.search.views = str(tmp_path / "dfs"), "dfs", 2
  pipeline.run_pipeline(c)
  searched = json.load(open(os.path.join(c.out_dir, "candidates.json")))
  for tid, records in searched.items():
    for r, r0 in zip(records, voted[tid]):
      assert r["num_extra"] == 0 and r["attempts"] == r0["attempts"]
  assert "predict_dfs" in json.load(open(os.path.join(c.out_dir, "timings.json")))


def test_dfs_answers_keep_new_parsed_grids_only(monkeypatch):
  """Depth-first answers: parsed, mapped to the task frame, the view's greedy grid dropped."""
  from ttt_jax.data import tokens  # pylint: disable=g-import-not-at-top
  from ttt_jax.infer import dfs, predict, views  # pylint: disable=g-import-not-at-top
  task = io.load_tasks("dev80-small:1")[0][0]
  vs = views.make_views(task, 0, n_orders=1, budget="demos")
  greedy_grid, other = np.full((2, 3), 1, np.int8), np.full((3, 2), 5, np.int8)
  calls = []

  def fake_dfs(params, adapter, prompt_T, **kw):
    calls.append(kw)
    v = next(v for v in vs if v.prompt_T is prompt_T)
    enc = lambda g: np.concatenate([tokens.encode_grid(v.transform(g)), [tokens.EOS]])
    return [(enc(greedy_grid), -0.1), (enc(other), -1.0), (np.array([1, 2, tokens.EOS]), -2.0)]

  monkeypatch.setattr(dfs, "dfs_sample", fake_dfs)
  greedy = [predict.ViewAnswer(v, greedy_grid, np.zeros(0, np.int32)) for v in vs]
  search_cfg = pipeline_config.get_config().search
  search_cfg.views, search_cfg.min_prob = 3, 0.25
  eng = pipeline.engine_lib.Engine(params=None, mcfg=None)
  extra = pipeline.dfs_answers(eng, None, vs, greedy, lcfg=None, search_cfg=search_cfg)
  assert len(calls) == 3 and all(k["min_prob"] == 0.25 for k in calls)
  assert len(extra) == 3 and all(np.array_equal(a.grid, other) for a in extra)
  assert {id(a.view) for a in extra} == {id(v) for v in pipeline.spread(vs, 3)}
  rec = pipeline.vote_test_input(greedy, task, 0, extra=extra)
  assert rec.num_views == len(vs) and rec.num_extra == 3
  assert {tuple(np.shape(c.grid)): c.count for c in rec.candidates} == {
      (2, 3): len(vs), (3, 2): 3}


def test_spread_covers_the_range_evenly():
  assert pipeline.spread(list(range(10)), 3) == [0, 4, 9]  # 4.5 rounds to even
  assert pipeline.spread(list(range(3)), 8) == [0, 1, 2] and pipeline.spread([1], 0) == []


def test_self_train_stage_runs_rounds_after_prediction(tmp_path, tiny_model_dir, monkeypatch):
  """The pipeline's self_train section: a unanimous (planted) answer becomes a pseudo-label, the
  task's adapter trains on it and is verified, and rounds.json records the round."""
  from ttt_jax.infer import predict  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(predict, "decode_views", _planted_decode([np.full((2, 2), 3, np.int8)]))
  c = _config("dev80-small:1", tiny_model_dir, str(tmp_path))
  c.ttt.enabled = False
  c.self_train.enabled, c.self_train.rounds, c.self_train.min_vote_share = True, 2, 0.9
  summary = pipeline.run_pipeline(c)
  rounds = json.load(open(os.path.join(str(tmp_path), "selftrain", "rounds.json")))
  assert rounds[0]["labelled"] == 1 and rounds[0]["labels"] >= 1
  assert rounds[0]["accepted"] + rounds[0]["rejected"] == 1
  assert len(rounds) == 1  # accepted or not, the planted leader never changes: cached
  # Each test input's history is in candidates.json and the report.
  record = next(iter(json.load(open(os.path.join(str(tmp_path), "candidates.json"))).values()))[0]
  assert [e["round"] for e in record["rounds"]] == [0, 1]
  assert record["rounds"][1]["pseudo_label"] == [[3, 3], [3, 3]]
  # The final attempts are those of the last round that predicted (round 1 if accepted, else 0).
  assert [e for e in record["rounds"] if "attempts" in e][-1]["attempts"] == record["attempts"]
  html_text = open(os.path.join(str(tmp_path), "report.html")).read()
  assert "self-training rounds" in html_text and "round 1 label" in html_text
  scores = json.load(open(os.path.join(str(tmp_path), "scores.json")))
  assert len(scores["solved_by_round"]) == 2 and scores["solved_by_round"][-1] == summary["solved"]
  assert "self_train" in json.load(open(os.path.join(str(tmp_path), "timings.json")))
  assert summary["num_scored"] == 1


def test_report_draws_the_base_models_training_curve(tmp_path):
  from ttt_jax.model import store as store_lib  # pylint: disable=g-import-not-at-top
  from ttt_jax.pipeline import outputs  # pylint: disable=g-import-not-at-top
  svg = outputs.training_curve_svg(store_lib.DEFAULT_MODEL_DIR)
  assert svg.count("<polyline") == 2 and "train loss" in svg and "held-out loss" in svg
  assert outputs.training_curve_svg(str(tmp_path)) == ""  # no meta.json: no figure


def test_self_train_learning_rate_replaces_ttts_only_when_set(monkeypatch):
  from ttt_jax import selftrain  # pylint: disable=g-import-not-at-top
  from ttt_jax.pipeline import selftrain_stage  # pylint: disable=g-import-not-at-top
  seen = []

  class NoRounds:  # records the M-step's optimizer and has nothing to do
    active = []

    def __init__(self, *a, ocfg, **k):
      seen.append(ocfg.learning_rate)

    def finish(self):
      return {}, []

  monkeypatch.setattr(selftrain, "Rounds", NoRounds)
  c = pipeline_config.get_config()
  c.ttt.learning_rate = 3e-4
  mcfg = config.get_config("tiny")
  for rate in (None, 2e-3):
    c.self_train.learning_rate = rate
    selftrain_stage.run(c, [], pipeline.engine_lib.Engine(params=None, mcfg=mcfg), None, {}, {})
  assert seen == [3e-4, 2e-3]


def test_engine_places_the_base_once_and_compiles_one_step_per_config():
  from ttt_jax.model import lora, transformer
  from ttt_jax.train import optim
  mcfg = config.get_config("tiny")
  host = jax.tree.map(np.asarray, transformer.init_params(mcfg, jax.random.key(0)))
  eng = pipeline.engine_lib.build(host, mcfg)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(eng.params))
  for got, want in zip(jax.tree.leaves(eng.params), jax.tree.leaves(host)):
    np.testing.assert_array_equal(np.asarray(got), want)
  lcfg, ocfg = lora.LoraConfig(rank=2), optim.ttt_optim_config(mcfg)
  step = eng.train_step(lcfg, ocfg)
  assert eng.train_step(lora.LoraConfig(rank=2), optim.ttt_optim_config(mcfg)) is step
  assert eng.train_step(lcfg, ocfg.replace(learning_rate=1e-5)) is not step


_NO_IMPLICIT_TRANSFERS = """
import glob, json, sys
import jax
import numpy as np
from tests.test_pipeline import _config
from ttt_jax import pipeline
from ttt_jax.model import store, transformer
out = sys.argv[1]
# the embedded default writes parsable answers, so scoring and self-training have work to do
host, cfg, _ = store.load_model(store.DEFAULT_MODEL_DIR)
c = _config("dev80-small:1", store.DEFAULT_MODEL_DIR, out)
c.search.method, c.search.views, c.search.max_expansions = "dfs", 1, 40
c.select.method, c.select.views = "vote+poe", 2
c.infer.max_tokens, c.infer.answer_budget = 1024, "full"
c.self_train.enabled, c.self_train.rounds, c.self_train.min_vote_share = True, 1, 0.0
c.transfer_guard = "disallow"  # every stage, once the engine is built
summary = pipeline.run_pipeline(c)
try:  # the same guard refuses a host base passed to a jitted call
  with jax.transfer_guard("disallow"):
    jax.jit(transformer.forward, static_argnames="cfg")(host, None, np.zeros((1, 4), np.int32),
        np.zeros((1, 4), np.int32), np.ones((1, 4), bool), cfg=cfg)
  refused = False
except Exception as e:  # pylint: disable=broad-except
  refused = "Disallowed host-to-device transfer" in str(e)
timings = json.load(open(out + "/timings.json"))
rounds = json.load(open(out + "/selftrain/rounds.json"))
adapters = len(glob.glob(out + "/adapters/*.safetensors"))
scored = sum(c.get("poe") is not None for t in json.load(open(out + "/candidates.json")).values()
             for rec in t for c in rec["candidates"])
print(json.dumps({"views": summary["views"], "parsed": summary["views_parsed"], "refused": refused,
                  "labelled": rounds[0]["labelled"] if rounds else 0, "timings": timings,
                  "adapters": adapters, "scored": scored}))
"""


def test_stages_make_no_implicit_transfer(tmp_path):
  """TTT, decoding, depth-first search, PoE scoring and self-training run under
  ``jax.transfer_guard("disallow")`` (``cfg.transfer_guard``) once the engine is built: the
  base goes to the device once, and every batch, key and adapter is placed explicitly
  (``sharding.to_device``), so a host copy of the base per call would fail the run. The same
  guard refuses a host base (control). On the CPU backend a device result is host memory
  already, so reading one without ``jax.device_get`` is not a transfer and cannot fail here;
  the stages read results through ``jax.device_get`` for accelerators."""
  import subprocess
  import sys
  r = subprocess.run([sys.executable, "-c", _NO_IMPLICIT_TRANSFERS, str(tmp_path / "run")],
                     capture_output=True, text=True, timeout=600,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got["refused"] and got["parsed"] > 0 and got["labelled"] == 1, got
  # every stage ran under the guard (a stage's timings key is written only when it ran)
  assert {"ttt", "predict_decode", "predict_dfs", "predict_score", "self_train"} <= set(
      got["timings"]), got["timings"]
  assert got["adapters"] == 1 and got["scored"] > 0, got  # a trained adapter; PoE scores stored

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
  c.ttt.lora_rank, c.ttt.n_max, c.ttt.epochs, c.ttt.max_tokens = 4, 4, 1, 512
  c.infer.max_tokens, c.infer.n_orders, c.infer.answer_budget = 512, 1, "demos"
  return c


def test_ttt_stage_passes_clip_norm_and_data_mode(tmp_path, monkeypatch):
  from ttt_jax.train import ttt
  seen = {}
  monkeypatch.setattr(ttt, "run_ttt", lambda *a, **kw: seen.update(kw))
  c = _config("dev80-small", "", str(tmp_path))
  mcfg = config.get_config("tiny")
  pipeline._ttt_stage(c, [], None, mcfg, task_parallel=False)
  assert seen["ocfg"].clip_norm == 1.0 and seen["tcfg"].data_mode == "ours"  # our defaults
  c.ttt.clip_norm, c.ttt.data_mode = None, "reference"  # the reference's
  pipeline._ttt_stage(c, [], None, mcfg, task_parallel=False)
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
  assert r["fallback"] and len(r["attempts"]) == 2
  np.testing.assert_array_equal(r["attempts"][0], tasks[0].test[0].input)


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
  assert ours["num_invalid"] == ref["num_invalid"] == 1
  as_lists = lambda r: [np.asarray(x).tolist() for x in r["attempts"]]
  assert as_lists(ours) == [b.tolist(), a.tolist()]  # b: 2 groups; a: identity tie-break
  assert as_lists(ref) == [b.tolist(), c.tolist()]  # c: 3 slots of its one-view group
  assert as_lists(flat) == [a.tolist(), b.tolist()]  # raw counts 3 and 2
  with pytest.raises(ValueError, match="vote method"):
    pipeline.vote_test_input(ans, tasks[0], 0, "nope")

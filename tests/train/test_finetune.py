from __future__ import annotations

import itertools
import json
import os

import jax
import numpy as np
import pytest

from experiments.configs import finetune as finetune_config
from train_helpers import synthetic_stream
from ttt_jax.train import checkpoint, finetune, task_stream


def tiny_config(out_dir: str, steps: int = 6):
  c = finetune_config.get_config("quick")
  c.model_overrides.max_seq_len = 128
  c.out_dir = out_dir
  c.steps = steps
  c.batch_size = 2
  c.max_tokens = 128
  c.min_bucket = 64
  c.optim.warmup_steps = 2
  c.log_every = 1
  c.eval_every = 3
  c.checkpoint_every = 2
  c.keep_checkpoints = 2
  c.async_checkpoint = False
  return c


def eval_examples():
  tasks = itertools.islice(synthetic_stream(seed=99)(0), 3)
  return [task_stream.episode_for_task(t, max_tokens=128) for t in tasks]


def losses(out_dir: str) -> dict[int, tuple[float, float | None]]:
  out = {}
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      out[r["step"]] = (r["loss"], r.get("eval_loss"))  # a resumed run overwrites redone steps
  return out


class Crash(RuntimeError):
  pass


def test_killed_run_resumes_with_the_same_loss_curve(tmp_path):
  kw = dict(make_stream=synthetic_stream(0), eval_examples=eval_examples())
  full = finetune.run_finetune(tiny_config(str(tmp_path / "a")), **kw)
  assert full["status"] == "done" and full["step"] == 6

  def crash_at_5(step, record):
    if step == 5:
      raise Crash()

  with pytest.raises(Crash):
    finetune.run_finetune(tiny_config(str(tmp_path / "b")), on_step=crash_at_5, **kw)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "b" / "checkpoints"), async_save=False)
  assert ckpt.latest_step() == 4  # killed after step 5, last checkpoint at 4
  ckpt.close()
  resumed = finetune.run_finetune(tiny_config(str(tmp_path / "b")), **kw)
  assert resumed["status"] == "done" and resumed["step"] == 6

  a, b = losses(str(tmp_path / "a")), losses(str(tmp_path / "b"))
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for s in a:
    np.testing.assert_allclose(b[s][0], a[s][0], rtol=1e-6)
  assert a[3][1] is not None and a[6][1] is not None
  np.testing.assert_allclose(b[6][1], a[6][1], rtol=1e-6)
  pa = checkpoint.load_params(str(tmp_path / "a" / "params"))
  pb = checkpoint.load_params(str(tmp_path / "b" / "params"))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), pa, pb)
  # the exported model directory holds the same weights and loads with its config
  loaded, mcfg = checkpoint.load_base_model(str(tmp_path / "a" / "model"), "ignored")
  assert mcfg.name == "tiny" and mcfg.max_seq_len == 128
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-2, atol=1e-3), loaded, pa)
  # keeps the last N checkpoints only
  ckpt = checkpoint.Checkpointer(str(tmp_path / "a" / "checkpoints"), async_save=False)
  assert ckpt.all_steps() == [4, 6]
  ckpt.close()


def test_stops_on_nan_without_checkpointing(tmp_path):
  from ttt_jax.model import transformer
  c = tiny_config(str(tmp_path), steps=4)
  mcfg = finetune.model_setup(c)[0]
  params = transformer.init_params(mcfg, jax.random.key(0))
  params["final_norm"]["scale"] = params["final_norm"]["scale"] * np.nan
  out = finetune.run_finetune(c, make_stream=synthetic_stream(0), eval_examples=[],
                              init_params=params)
  assert out["status"] == "nan" and out["step"] == 1
  assert not os.path.exists(tmp_path / "params")
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
  assert ckpt.latest_step() is None
  ckpt.close()


def test_default_stream_is_deterministic_and_resumable():
  make = task_stream.source_stream("generators:1,arc1-train:1", seed=3)
  first = list(itertools.islice(make(0), 8))
  tail = list(itertools.islice(make(5), 3))
  for x, y in zip(first[5:], tail):
    assert x.task_id == y.task_id
    for p, q in zip(x.train, y.train):
      np.testing.assert_array_equal(p.input, q.input)
  kinds = {t.task_id.startswith("gen/") for t in first}
  assert kinds == {True, False}  # both sources appear


def test_held_out_families_are_never_generated():
  held = ("mirror_concat", "overlay_xor")
  make = task_stream.source_stream("generators:1", seed=0, exclude_families=held)
  families = {t.task_id.split("/")[1] for t in itertools.islice(make(0), 300)}
  assert families and not families & set(held)
  assert len(families) > 30  # the others are all still drawn
  with pytest.raises(ValueError, match="unknown generator families"):
    task_stream.training_families(("no_such_family",))


def test_generated_task_directory_loads_with_the_named_families(tmp_path):
  from ttt_jax.arc import generators, io
  from ttt_jax.arc.task import task_to_json
  tasks = generators.generate_task_set(["mirror_concat", "overlay_xor"], 3, 0.5, seed=7)
  for t in tasks:
    (tmp_path / f"{t.task_id}.json").write_text(json.dumps(task_to_json(t)))
  loaded, errors = io.load_tasks(str(tmp_path))
  assert not errors and sorted(t.task_id for t in loaded) == sorted(t.task_id for t in tasks)
  assert all(t.has_test_outputs for t in loaded)
  again = generators.generate_task_set(["mirror_concat"], 3, 0.5, seed=7)  # deterministic
  np.testing.assert_array_equal(again[0].train[0].input, tasks[0].train[0].input)


def test_parse_sources():
  assert task_stream.parse_sources("generators:1, arc1-train:0.5") == [
      ("generators", 1.0), ("arc1-train", 0.5)]
  assert task_stream.parse_sources("arc1-train") == [("arc1-train", 1.0)]
  with pytest.raises(ValueError, match="name:weight"):
    task_stream.parse_sources("x:y")


def test_training_history_keeps_the_last_record_of_each_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": 1, "loss": 3.0, "tokens": 10}, {"step": 2, "loss": 2.0, "tokens": 10},
          {"step": 2, "loss": 2.5, "tokens": 12, "eval_loss": 2.4},  # re-logged after a resume
          {"step": 3, "loss": 1.0, "tokens": 10}]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  h = finetune.training_history(str(path), max_points=2)
  assert h["tokens_seen"] == 32
  assert h["loss_curve"] == [[1, 3.0], [3, 1.0]]
  assert h["eval_loss_curve"] == [[2, 2.4]]


def windowed_config(out_dir: str, steps: int = 8):
  """Length-sorted windows of 6 examples, batches of at most 256 padded tokens."""
  c = tiny_config(out_dir, steps)
  c.batch_tokens = 256
  c.data.sort_window = 6
  return c


class _TickClock:
  """Stands in for the ``time`` module in ``finetune``: each reading is one second after the
  last, so the budget logic is tested without depending on how fast this machine is."""

  def __init__(self):
    self.now = 0.0

  def monotonic(self):
    self.now += 1.0
    return self.now


def test_time_budget_and_sigterm_stop_cleanly_and_resume_like_an_uninterrupted_run(
    tmp_path, monkeypatch):
  import signal
  monkeypatch.setattr(finetune, "time", _TickClock())
  kw = dict(make_stream=synthetic_stream(0), eval_examples=eval_examples())
  full = finetune.run_finetune(windowed_config(str(tmp_path / "a")), **kw)
  assert full["status"] == "done" and full["step"] == 8

  b = str(tmp_path / "b")
  tight = windowed_config(b)
  tight.max_minutes = 1e-6  # used up by the first step: stop after it
  first = finetune.run_finetune(tight, **kw)
  assert first["status"] == "time_budget" and first["step"] == 1
  meta = json.loads((tmp_path / "b" / "model" / "meta.json").read_text())
  assert meta["status"] == "time_budget" and meta["steps"] == 1 and meta["planned_steps"] == 8
  again = finetune.run_finetune(tight, **kw)  # the budget counts over resumes: no more steps
  assert again["status"] == "time_budget" and again["step"] == 1

  def sigterm_at_4(step, record):
    if step == 4:
      os.kill(os.getpid(), signal.SIGTERM)

  stopped = finetune.run_finetune(windowed_config(b), on_step=sigterm_at_4, **kw)
  assert stopped["status"] == "stopped" and stopped["step"] in (4, 5)
  ckpt = checkpoint.Checkpointer(os.path.join(b, "checkpoints"), async_save=False)
  assert ckpt.latest_step() == stopped["step"]  # checkpointed where it stopped
  ckpt.close()
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
  done = finetune.run_finetune(windowed_config(b), **kw)
  assert done["status"] == "done" and done["step"] == 8

  a, r = losses(str(tmp_path / "a")), losses(b)
  assert sorted(a) == sorted(r) == list(range(1, 9))
  for s in a:
    np.testing.assert_allclose(r[s][0], a[s][0], rtol=1e-6)
  pa = checkpoint.load_params(str(tmp_path / "a" / "params"))
  pb = checkpoint.load_params(os.path.join(b, "params"))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), pa, pb)
  records = finetune.records_by_step(os.path.join(b, "metrics.jsonl"))
  # The budget clock carries over the two resumes: on the ticking clock it rises at every step,
  # across each resume too (a clock restarted at 0 would fall back there).
  ticks = [records[s]["elapsed_s"] for s in sorted(records)]  # _TickClock readings
  assert all(b > a for a, b in zip(ticks, ticks[1:])), ticks


def test_plan_steps_fills_the_budget_at_the_measured_pace(tmp_path):
  path = tmp_path / "metrics.jsonl"
  # 10 s of start-up and compiles, then 0.5 s per step, and one late 4 s compile (step 15)
  rows = [{"step": s, "loss": 1.0, "elapsed_s": 10 + 0.5 * s + (4 if s >= 15 else 0)}
          for s in range(1, 21)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  # 60 s budget: 24 s used, 5 s kept back, 31 s left = 62 more steps at the median pace
  assert finetune.plan_steps(str(path), 1.0, overhead_s=5.0) == 82
  assert finetune.plan_steps(str(path), 0.25, overhead_s=5.0) == 20  # nothing left
  path.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
  assert finetune.plan_steps(str(path), 1.0) is None  # too few steps to measure a pace


def test_a_model_directory_fixes_the_architecture(tmp_path):
  from ttt_jax.model import config, store, transformer
  mcfg = config.get_config("tiny").replace(grid_positions=True)
  store.save_model(str(tmp_path / "m"), transformer.init_params(mcfg, jax.random.key(0)), mcfg)
  c = finetune_config.get_config("gpu")  # 384 x 6 overrides ...
  c.model_dir = str(tmp_path / "m")
  c.model_overrides.dtype = "float32"
  got, _, _, params = finetune.model_setup(c)
  assert (got.dim, got.n_layers, got.name) == (64, 2, "tiny")  # ... yield to the weights
  assert got.dtype == "float32" and got.remat and got.max_seq_len == 8192  # runtime ones apply
  assert params["embed"].shape == (mcfg.vocab_size, 64)


def test_worker_processes_train_exactly_like_the_in_process_feed(tmp_path):
  def config(out_dir, workers):
    c = tiny_config(out_dir, steps=3)
    c.model_overrides.max_seq_len = 512
    c.max_tokens = 512
    c.data.sources = "generators:1"
    c.data.feed_workers = workers
    return c

  one = finetune.run_finetune(config(str(tmp_path / "a"), 0), eval_examples=[])
  two = finetune.run_finetune(config(str(tmp_path / "b"), 2), eval_examples=[])
  assert one["status"] == two["status"] == "done"
  a, b = losses(str(tmp_path / "a")), losses(str(tmp_path / "b"))
  assert sorted(a) == sorted(b) == [1, 2, 3]
  for s in a:
    assert b[s][0] == a[s][0]

"""metrics.jsonl and its optional TensorBoard twin: the event files hold exactly the JSON
records' numbers, and without tensorboardX nothing but metrics.jsonl is written."""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import struct
import sys

import numpy as np
import pytest

from experiments.configs import finetune as finetune_config
from train_helpers import synthetic_stream
from ttt_jax.train import finetune, metrics_log, task_stream


def read_events(log_dir: str) -> list:
  """Every Event of every event file in ``log_dir``, checking the TFRecord framing's CRCs."""
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c
  events = []
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (n,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
      body = data[pos + 12:pos + 12 + n]
      assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked_crc32c(body)
      events.append(event_pb2.Event.FromString(body))
      pos += 16 + n
  return events


def read_scalars(log_dir: str) -> dict[tuple[str, int], float]:
  return {(v.tag, e.step): v.simple_value for e in read_events(log_dir) for v in e.summary.value}


def jsonl_scalars(path: str) -> dict[tuple[str, int], float]:
  """What TensorBoard should show: every numeric field of every record, float32 as it stores."""
  out = {}
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      for k, v in metrics_log.scalars(r).items():
        out[(k, r["step"])] = float(np.float32(v))
  return out


def test_scalars_are_the_numeric_fields_but_step():
  got = metrics_log.scalars({"step": 3, "loss": 1.5, "tokens": 40, "ok": True, "status": "x"})
  assert got == {"loss": 1.5, "tokens": 40.0}


def test_without_tensorboardx_only_jsonl_and_one_info_line(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
  with caplog.at_level(logging.DEBUG):
    with metrics_log.MetricsLog(str(tmp_path)) as log:
      for s in range(1, 4):
        log.write({"step": s, "loss": 1.0 / s})
  assert [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")] == [1, 2, 3]
  assert os.listdir(tmp_path) == ["metrics.jsonl"]
  ours = [r for r in caplog.records if "tensorboard" in r.getMessage().lower()]
  assert len(ours) == 1 and ours[0].levelno == logging.INFO


def test_switched_off_writes_no_event_files(tmp_path):
  with metrics_log.MetricsLog(str(tmp_path), tensorboard=False) as log:
    log.write({"step": 1, "loss": 2.0})
  assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_event_files_hold_the_jsonl_numbers_and_a_resume_purges(tmp_path):
  pytest.importorskip("tensorboardX")
  with metrics_log.MetricsLog(str(tmp_path)) as log:
    for s in range(1, 6):
      log.write({"step": s, "loss": 1.0 / s, "lr": 1e-3 * s, "tokens": 100 + s})
  with metrics_log.MetricsLog(str(tmp_path), start_step=4) as log:  # resumed from step 4
    log.write({"step": 5, "loss": 0.123456789, "lr": 5e-3, "tokens": 105, "eval_loss": 0.5})
  # the resumed run's step 5 wins, in metrics.jsonl (last line) and in TensorBoard (purge at 5)
  assert read_scalars(str(tmp_path / "tensorboard")) == jsonl_scalars(str(tmp_path / "metrics.jsonl"))
  purges = [e.step for e in read_events(str(tmp_path / "tensorboard")) if e.HasField("session_log")]
  assert purges == [5]


def test_a_finetune_run_writes_event_files_equal_to_its_metrics_jsonl(tmp_path):
  pytest.importorskip("tensorboardX")
  c = finetune_config.get_config("quick")
  c.model_overrides.max_seq_len = 128
  c.out_dir = str(tmp_path)
  c.steps, c.batch_size, c.max_tokens, c.min_bucket = 4, 2, 128, 64
  c.optim.warmup_steps = 2
  c.log_every, c.eval_every, c.checkpoint_every = 2, 2, 4
  c.async_checkpoint = False
  evals = [task_stream.episode_for_task(t, max_tokens=128)
           for t in itertools.islice(synthetic_stream(99)(0), 2)]
  result = finetune.run_finetune(c, make_stream=synthetic_stream(0), eval_examples=evals)
  assert result["status"] == "done"
  tb = read_scalars(os.path.join(c.out_dir, "tensorboard"))
  assert tb == jsonl_scalars(os.path.join(c.out_dir, "metrics.jsonl"))
  assert {t for t, _ in tb} >= {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "eval_loss"}
  assert sorted(s for t, s in tb if t == "loss") == [1, 2, 3, 4]

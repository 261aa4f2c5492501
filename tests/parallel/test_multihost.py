"""Task-parallel runs: the work split, and two CPU processes == one process, file for file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import pipeline_runs
from ttt_jax.parallel import multihost


def test_owned_splits_work_round_robin_without_overlap():
  for n in (0, 1, 5, 8):
    for count in (1, 2, 3):
      shares = [multihost.owned(n, i, count) for i in range(count)]
      assert sorted(i for s in shares for i in s) == list(range(n))
      assert all(s == list(range(i, n, count)) for i, s in enumerate(shares))
  with pytest.raises(ValueError, match="process index 2"):
    multihost.owned(4, 2, 2)


def test_single_process_exchange_is_identity():
  assert multihost.process_count() == 1
  multihost.barrier("nothing to wait for")
  assert multihost.allgather_json("x", {"a": [1, 2]}) == [{"a": [1, 2]}]
  assert multihost.local_mesh().devices.size == len(multihost.jax.local_devices())


def test_merge_dicts_rejects_disagreement():
  assert multihost.merge_dicts([{"a": 1}, {"b": 2}, {"a": 1}]) == {"a": 1, "b": 2}
  with pytest.raises(ValueError, match="process 1 reports 'a'"):
    multihost.merge_dicts([{"a": 1}, {"a": 2}])


@pytest.mark.slow
def test_two_processes_write_exactly_the_files_one_process_writes():
  ref = pipeline_runs.reference()
  out = os.path.join(pipeline_runs.scratch(), "two_processes")
  coordinator = f"127.0.0.1:{pipeline_runs.free_port()}"
  procs = [pipeline_runs.start(out, f"process{i}.log", process_id=i, num_processes=2,
                               coordinator=coordinator) for i in range(2)]
  try:
    for i, p in enumerate(procs):
      pipeline_runs.wait(p, f"process{i}.log")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for i in range(2):  # both processes really ran as one distributed job and shared the work
    log = pipeline_runs.log_tail(f"process{i}.log", 100_000)
    assert "TTT group 1/1" in log and "[predict]" in log, log[-2000:]
  assert "pass@2" in pipeline_runs.log_tail("process0.log")
  assert "pass@2" not in pipeline_runs.log_tail("process1.log")
  pipeline_runs.assert_same_outputs(out, ref)


@pytest.mark.slow
def test_two_processes_exchange_and_check_barrier_names(tmp_path):
  coordinator = f"127.0.0.1:{pipeline_runs.free_port()}"
  outs = [str(tmp_path / f"p{i}.json") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-m", "tests.parallel.exchange_check", outs[i]],
                            cwd=pipeline_runs.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=pipeline_runs.env(process_id=i, num_processes=2,
                                                  coordinator=coordinator)) for i in range(2)]
  for p in procs:
    log = p.communicate(timeout=pipeline_runs.TIMEOUT_S)[0].decode()
    assert p.returncode == 0, log[-2000:]
  for i, path in enumerate(outs):
    with open(path) as f:
      got = json.load(f)
    assert got["count"] == 2
    assert got["gathered"] == [{"process": 0, "pad": ""}, {"process": 1, "pad": "x" * 50}]
    assert "name mismatch" in got["mismatch"] and f"only_process_{i}" in got["mismatch"]

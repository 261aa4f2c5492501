import json
import logging

import numpy as np
import pytest

from ttt_jax.arc import io, splits
from ttt_jax.arc.task import TaskError, make_task, task_from_json, task_to_json

GOOD = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
        "test": [{"input": [[0, 1], [1, 0]], "output": [[1, 0], [0, 1]]}]}


@pytest.mark.parametrize("obj, needle", [
    ({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]},
     "non-rectangular"),
    ({"train": [{"input": [[1, 12]], "output": [[1]]}], "test": [{"input": [[1]]}]},
     "colour outside 0..9"),
    ({"train": [{"input": [[1] * 31], "output": [[1]]}], "test": [{"input": [[1]]}]},
     "outside 1..30"),
    ({"train": [{"input": [], "output": [[1]]}], "test": [{"input": [[1]]}]}, "empty"),
    ({"train": [], "test": [{"input": [[1]]}]}, "'train' is empty"),
    ({"test": [{"input": [[1]]}]}, "missing 'train'"),
    ({"train": [{"input": [[1]], "output": [[1]]}], "test": []}, "'test' is empty"),
    ({"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}, "no 'output'"),
    ({"train": [{"input": [["1"]], "output": [[1]]}], "test": [{"input": [[1]]}]}, "expected an int"),
    ({"train": [{"input": [[1.5]], "output": [[1]]}], "test": [{"input": [[1]]}]}, "expected an int"),
    ({"train": "nope", "test": [{"input": [[1]]}]}, "must be a list"),
    ([1, 2], "expected a JSON object"),
])
def test_validation_errors_name_file_task_and_problem(obj, needle):
  with pytest.raises(TaskError) as e:
    task_from_json(obj, "abc123", source="x.json")
  msg = str(e.value)
  assert needle in msg and "abc123" in msg and "x.json" in msg


def test_json_round_trip():
  task = task_from_json(GOOD, "t")
  again = task_from_json(task_to_json(task), "t")
  assert task_to_json(again) == GOOD
  assert task.train[0].input.dtype == np.int8


def test_directory_skips_bad_tasks_and_reports_them(tmp_path, caplog):
  (tmp_path / "good.json").write_text(json.dumps(GOOD))
  (tmp_path / "bad.json").write_text(json.dumps({"train": [], "test": []}))
  (tmp_path / "broken.json").write_text("{not json")
  with caplog.at_level(logging.WARNING):
    tasks, errors = io.load_tasks(str(tmp_path))
  assert [t.task_id for t in tasks] == ["good"]
  assert sorted(e.task_id for e in errors) == ["bad", "broken"]
  assert all(str(tmp_path) in e.source for e in errors)
  assert "loaded 1 tasks, skipped 2" in caplog.text


def test_single_file_error_names_file(tmp_path):
  path = tmp_path / "t1.json"
  path.write_text(json.dumps({"train": [{"input": [[11]], "output": [[1]]}], "test": [{"input": [[1]]}]}))
  with pytest.raises(TaskError, match=r"t1\.json.*task t1.*colour"):
    io.load_tasks(str(path))


def test_kaggle_with_solutions(tmp_path):
  ch = {"a": {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2]]}]},
        "b": {"train": GOOD["train"], "test": [{"input": [[3]]}]},
        "c": {"train": [], "test": [{"input": [[3]]}]}}
  sol = {"a": [[[5]], [[6]]], "b": [[[7]], [[8]]]}
  (tmp_path / "ch.json").write_text(json.dumps(ch))
  (tmp_path / "sol.json").write_text(json.dumps(sol))
  tasks, errors = io.load_tasks(str(tmp_path / "ch.json"), solutions=str(tmp_path / "sol.json"))
  assert [t.task_id for t in tasks] == ["a"]
  assert [int(p.output[0, 0]) for p in tasks[0].test] == [5, 6]
  assert {e.task_id for e in errors} == {"b", "c"}
  assert "expected 1 solution grids, got 2" in str([e for e in errors if e.task_id == "b"][0])
  tasks, errors = io.load_tasks(str(tmp_path / "ch.json"))
  assert len(tasks) == 2 and tasks[0].test[0].output is None


@pytest.mark.parametrize("name, n", [("arc1-train", 400), ("arc1-eval", 400), ("dev80", 80),
                                     ("arc1-eval-heldout", 320)])
def test_named_sets(name, n):
  tasks, errors = io.load_tasks(name)
  assert len(tasks) == n and not errors
  assert all(t.has_test_outputs for t in tasks)


def test_arc2_sets_load():
  tasks, errors = io.load_tasks("arc2-eval")
  assert len(tasks) == 120 and not errors


def test_splits_are_consistent():
  levels = splits.eval_levels()
  assert len(levels) == 400 and set(levels.values()) == set(splits.LEVELS)
  dev = splits.dev80_ids()
  assert len(dev) == 80 and set(dev) <= set(levels)
  assert sorted(levels[t] for t in dev).count("easy") == 20
  assert not set(dev) & set(splits.heldout_ids())


def test_dev80_small_is_the_smallest_dev80_tasks():
  small, _ = io.load_tasks("dev80-small")
  dev, _ = io.load_tasks("dev80")
  assert len(small) == 8 and {t.task_id for t in small} <= {t.task_id for t in dev}
  biggest_small = max(io.num_cells(t) for t in small)
  assert sum(io.num_cells(t) < biggest_small for t in dev) < 8


def test_limit_suffix_and_unknown_spec():
  tasks, _ = io.load_tasks("arc1-train:5")
  assert len(tasks) == 5
  with pytest.raises(ValueError, match="no task set"):
    io.load_tasks("no-such-set")


def test_make_task_helper():
  t = make_task("m", [([[1]], [[2]])], [([[3]], None)])
  assert t.test[0].output is None and not t.has_test_outputs

"""experiments/selection_table.py: families, partial runs, and runs compared on common tasks."""

import json
import os

from absl import flags
from absl.testing import flagsaver

from experiments import selection_table
from ttt_jax.pipeline import predict_stage


def _task(i):
  pair = lambda v: {"input": [[v, 0], [0, v]], "output": [[v]]}
  return {"train": [pair(1), pair(2)], "test": [pair(3 + i)]}


def _record(grids, counts):
  cands = [{"grid": g, "count": c} for g, c in zip(grids, counts)]
  return {"attempts": grids[:2], "candidates": cands, "ranked": [{"grid": g} for g in grids],
          "num_views": sum(counts) + 1, "num_invalid": 1, "select": "vote"}


def test_family_strips_only_a_trailing_number():
  assert selection_table.family("crop_smallest_object_004") == "crop_smallest_object"
  assert selection_table.family("0a1d4ef5") == "0a1d4ef5"
  assert selection_table.family("mirror_concat_x") == "mirror_concat_x"


def test_runs_are_compared_on_the_tasks_all_have_finished(tmp_path, capsys):
  task_dir = tmp_path / "tasks"
  task_dir.mkdir()
  for i, name in enumerate(["fam_a_000", "fam_a_001", "fam_b_000"]):
    (task_dir / f"{name}.json").write_text(json.dumps(_task(i)))
  right = lambda i: [[3 + i]]
  # A finished run: every task, fam_a_000 right (2nd by vote), fam_b_000 wrong.
  done = tmp_path / "done"
  done.mkdir()
  (done / "candidates.json").write_text(json.dumps({
      "fam_a_000": [_record([[[9]], right(0)], [5, 2])],
      "fam_a_001": [_record([[[9]]], [4])],
      "fam_b_000": [_record([[[9]]], [4])]}))
  # A run still going: fam_a_000 assembled, fam_b_000 as a part, fam_a_001 not yet predicted.
  going = tmp_path / "going"
  parts = going / predict_stage.PREDICTIONS / predict_stage.PARTS
  parts.mkdir(parents=True)
  (going / predict_stage.PREDICTIONS / "fam_a_000.json").write_text(json.dumps(
      {"task_id": "fam_a_000", "tests": [_record([right(0)], [7])]}))
  (parts / "fam_b_000.0.json").write_text(json.dumps(_record([right(2)], [3])))

  from ttt_jax.arc import io  # pylint: disable=g-import-not-at-top
  tasks = io.load_tasks(str(task_dir))[0]
  assert sorted(predict_stage.finished_records(str(going), tasks)) == ["fam_a_000", "fam_b_000"]

  with flagsaver.flagsaver():
    flags.FLAGS(["selection_table", f"--run={done},{going}", f"--tasks={task_dir}",
                 "--label=ft,ttt", "--by_family"])
    selection_table.main(["selection_table"])
  out = capsys.readouterr().out
  assert out.startswith("2 tasks with truth finished in every run; ft: 3 finished, "
                        "ttt: 2 finished (running)")
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:7]]
          for line in out.splitlines() if line.startswith("| ") and "run" not in line[:6]}
  # columns: tasks, vote, poe, vote+poe, pass@all
  assert rows["ft"] == ["2", "1", "1", "1", "1"] and rows["ttt"] == ["2", "2", "2", "2", "2"]
  assert rows["ft / fam_a"] == ["1", "1", "1", "1", "1"] and rows["ft / fam_b"][:2] == ["1", "0"]
  assert rows["ttt / fam_b"] == ["1", "1", "1", "1", "1"]

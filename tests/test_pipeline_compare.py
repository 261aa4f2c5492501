"""ttt_jax.pipeline.compare: families, running runs, and runs compared on common tasks."""

import json
import os
import subprocess
import sys

from ttt_jax.arc import io
from ttt_jax.infer.records import Candidate, CandidateRecord, Ranked
from ttt_jax.pipeline import compare, predict_stage


def _task(i):
  pair = lambda v: {"input": [[v, 0], [0, v]], "output": [[v]]}
  return {"train": [pair(1), pair(2)], "test": [pair(3 + i)]}


def _record(grids, counts):
  """A record's JSON as the pipeline writes it: the vote ranks ``grids`` as given."""
  return CandidateRecord(
      num_views=sum(counts) + 1, num_invalid=1, num_extra=0,
      ranked=tuple(Ranked(g, c, c, False) for g, c in zip(grids, counts)),
      candidates=tuple(Candidate(g, c, 0) for g, c in zip(grids, counts)),
      attempts=tuple(grids[:2]), select="vote").to_json()


def test_family_strips_only_a_trailing_number():
  assert compare.family("crop_smallest_object_004") == "crop_smallest_object"
  assert compare.family("0a1d4ef5") == "0a1d4ef5"
  assert compare.family("mirror_concat_x") == "mirror_concat_x"


def test_runs_are_compared_on_the_tasks_all_have_finished(tmp_path):
  task_dir = tmp_path / "tasks"
  task_dir.mkdir()
  for i, name in enumerate(["fam_a_000", "fam_a_001", "fam_b_000"]):
    (task_dir / f"{name}.json").write_text(json.dumps(_task(i)))
  right = lambda i: [[3 + i]]
  # A finished run: every task; fam_a_000 right (2nd by vote), the others wrong.
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

  tasks = io.load_tasks(str(task_dir))[0]
  done_res, done_finished = compare.run_records(str(done), tasks)
  going_res, going_finished = compare.run_records(str(going), tasks)
  assert done_finished and not going_finished
  assert sorted(going_res) == ["fam_a_000", "fam_b_000"]

  rows = compare.table_rows([("ft", done_res), ("ttt", going_res)], tasks, by_family=True)
  got = {(r["group"], r["run"]): [r[c] for c in ("tasks",) + compare.COLUMNS] for r in rows}
  # columns: tasks, vote, poe, vote+poe, pass@all (no PoE scores: poe orders like the vote)
  assert list(got) == [("all", "ft"), ("all", "ttt"), ("fam_a", "ft"), ("fam_a", "ttt"),
                       ("fam_b", "ft"), ("fam_b", "ttt")]
  assert got["all", "ft"] == [2, 1, 1, 1, 1] and got["all", "ttt"] == [2, 2, 2, 2, 2]
  assert got["fam_a", "ft"] == [1, 1, 1, 1, 1] and got["fam_b", "ft"] == [1, 0, 0, 0, 0]
  assert got["fam_b", "ttt"] == [1, 1, 1, 1, 1]
  ft_all = next(r for r in rows if r["group"] == "all" and r["run"] == "ft")
  # fam_a_000: 8 views, 7 parsed; fam_b_000: 5 views, 4 parsed (fam_a_001 is not common)
  assert (ft_all["views_parsed"], ft_all["views"], ft_all["inputs"]) == (11, 13, 2)

  # The binary prints the same rows.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-m", "experiments.selection_table",
                        f"--run={done},{going}", "--label=ft,ttt", f"--tasks={task_dir}",
                        "--by_family"], cwd=root, capture_output=True, text=True, check=True,
                       env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")).stdout
  assert out.startswith("2 tasks with truth finished in every run; ft: 3 finished, "
                        "ttt: 2 finished (running)")
  printed = {line.split("|")[1].strip(): [int(c) for c in line.split("|")[2:7]]
             for line in out.splitlines()[3:]}
  assert printed == {f"{run}{'' if g == 'all' else ' / ' + g}": v for (g, run), v in got.items()}


def test_level_rows_group_evaluation_tasks_by_difficulty(tmp_path):
  from ttt_jax.arc import splits  # pylint: disable=g-import-not-at-top
  levels = splits.eval_levels()
  easy = [t for t in splits.dev80_ids() if levels[t] == "easy"][:2]
  hard = [t for t in splits.dev80_ids() if levels[t] == "hard"][:1]
  task_dir = tmp_path / "tasks"
  task_dir.mkdir()
  for i, name in enumerate(easy + hard + ["generated_000"]):
    (task_dir / f"{name}.json").write_text(json.dumps(_task(i)))
  tasks = io.load_tasks(str(task_dir))[0]
  right = {name: [[3 + i]] for i, name in enumerate(easy + hard + ["generated_000"])}
  res = {name: [CandidateRecord.from_json(
      _record([right[name]] if name != easy[1] else [[[9]]], [2]))] for name in right}
  rows = compare.table_rows([("run", res)], tasks, by_level=True)
  got = {r["group"]: (r["tasks"], r["vote"]) for r in rows}
  # Levels in difficulty order, only those present; the generated task has no level.
  assert list(got) == ["all", "easy", "hard"]
  assert got == {"all": (4, 3), "easy": (2, 1), "hard": (1, 1)}


def _write_prediction(run_dir, task_id, records):
  pred = run_dir / predict_stage.PREDICTIONS
  pred.mkdir(parents=True, exist_ok=True)
  (pred / f"{task_id}.json").write_text(json.dumps({"task_id": task_id, "tests": records}))


def test_self_training_rounds_overlay_the_re_predicted_tasks(tmp_path):
  task_dir = tmp_path / "tasks"
  task_dir.mkdir()
  for i, name in enumerate(["t0", "t1", "t2"]):
    (task_dir / f"{name}.json").write_text(json.dumps(_task(i)))
  tasks = io.load_tasks(str(task_dir))[0]
  right = lambda i: [[3 + i]]
  run = tmp_path / "run"
  for i in range(3):  # round 0: every task wrong
    _write_prediction(run, f"t{i}", [_record([[[9]]], [4])])
  st = run / "selftrain"
  _write_prediction(st / "round1", "t0", [_record([right(0)], [4])])  # t0 re-predicted, right
  _write_prediction(st / "round3", "t1", [_record([right(1)], [4])])  # round 2 accepted none

  # Before rounds.json: the consecutive round directories (round3 is not reached).
  rounds = compare.round_records(str(run), tasks)
  assert len(rounds) == 2 and all(sorted(r) == ["t0", "t1", "t2"] for r in rounds)
  solved = [compare.solved_by_method(r, tasks)["vote"] for r in rounds]
  assert solved == [0, 1]

  # With rounds.json: every round it lists, a round without predictions repeats the last.
  summary = [dict(round=r, active=3, labelled=1, accepted=int(r != 2), rejected=int(r == 2),
                  labels=1, labels_right=0, continuing=1, seconds=1.0) for r in (1, 2, 3)]
  (st / "rounds.json").write_text(json.dumps(summary))
  rounds = compare.round_records(str(run), tasks)
  assert [compare.solved_by_method(r, tasks)["vote"] for r in rounds] == [0, 1, 1, 2]
  assert rounds[2] == rounds[1] and rounds[3]["t2"] == rounds[0]["t2"]

  # The binary prints one row per round, then the rounds' summaries.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-m", "experiments.selection_table", f"--run={run}",
                        "--label=st", f"--tasks={task_dir}", "--rounds"], cwd=root,
                       capture_output=True, text=True, check=True,
                       env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")).stdout
  rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| st |")]
  assert [(int(r[1]), int(r[3])) for r in rows[:4]] == [(0, 0), (1, 1), (2, 1), (3, 2)]
  assert [(int(r[1]), int(r[4]), int(r[5])) for r in rows[4:]] == [(1, 1, 0), (2, 0, 1),
                                                                     (3, 1, 0)]


def test_round_summaries_count_what_before_verification_would_pass(tmp_path):
  run = tmp_path / "run"
  decisions = run / "selftrain" / "round1" / "decisions"
  decisions.mkdir(parents=True)
  (run / "selftrain" / "rounds.json").write_text(json.dumps([dict(
      round=1, active=4, labelled=4, accepted=1, rejected=2, labels=4, labels_right=1,
      continuing=0, seconds=2.0)]))
  trained = lambda acc_after: dict(status="rejected", loo_before=[False], loo_after=[False],
                                   loo_token_acc_before=[0.5], loo_token_acc_after=[acc_after])
  for name, d in {"up": trained(0.6), "same": trained(0.5), "down": trained(0.4),
                  "untrained": dict(status="no_data")}.items():
    (decisions / f"{name}.json").write_text(json.dumps(d))
  (summary,) = compare.round_summaries(str(run))
  assert summary["pass_before"] == 2 and summary["accepted"] == 1  # up and same pass
  (lenient,) = compare.round_summaries(str(run), max_token_acc_drop=0.2)
  assert lenient["pass_before"] == 3  # a drop of 0.1 is allowed too
  assert compare.round_summaries(str(tmp_path / "no_rounds")) == []

"""The outputs stage: the run's result files, written by process 0 from the per-input records.

``submission.json`` (Kaggle format), ``candidates.json`` (every record), ``scores.json`` (per
task and per level), ``errors.json`` (load errors, tasks without TTT), ``timings.json`` and
``report.html``. They are rewritten from the records on every run, so a resumed run writes
the same files (timings aside).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from ttt_jax.arc import splits
from ttt_jax.arc.task import Task
from ttt_jax.eval import report, scoring, submission
from ttt_jax.infer import records, selection
from ttt_jax.infer.records import CandidateRecord


def training_curve_svg(model_dir: str) -> str:
  """The base model's fine-tuning loss curve (and held-out loss) from its ``meta.json``, as
  inline SVG for the report; "" when the directory records none (e.g. an HF checkpoint)."""
  path = os.path.join(model_dir, "meta.json")
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    meta = json.load(f)
  series = [("train loss", meta.get("loss_curve") or []),
            ("held-out loss", meta.get("eval_loss_curve") or [])]
  return report.curve_svg([(k, v) for k, v in series if v],
                          title=f"base model fine-tuning ({meta.get('steps', '?')} steps)")


def write_outputs(out_dir: str, tasks: Sequence[Task], results: dict[str, list[CandidateRecord]],
                  errors: Sequence[Exception], ttt_notes: dict[str, str],
                  timings: dict[str, float], title: str, model_dir: str = "") -> dict:
  """submission.json, candidates.json, scores.json, errors.json, timings.json, report.html."""
  attempts = {tid: [[np.asarray(a, np.int8) for a in r.attempts] for r in rs]
              for tid, rs in results.items()}
  submission.write_submission(os.path.join(out_dir, "submission.json"),
                              {tid: [tuple(a) for a in per] for tid, per in attempts.items()},
                              expected_tests={t.task_id: len(t.test) for t in tasks})
  with open(os.path.join(out_dir, "candidates.json"), "w") as f:
    json.dump(records.records_to_json(results), f)
  levels = splits.eval_levels()
  scored = [t for t in tasks if t.has_test_outputs]
  scores = scoring.score_submission(attempts, scoring.solutions_from_tasks(scored), levels)
  table = scoring.level_table(scores)
  per_input = [r for rs in results.values() for r in rs]
  summary = {
      "num_tasks": len(tasks), "num_scored": len(scored),
      "solved": sum(s.correct for s in scores),
      "views": sum(r.num_views for r in per_input),
      "views_parsed": sum(r.num_parsed for r in per_input),
      "fallback_inputs": sum(r.fallback for r in per_input),
      "tasks": [dataclasses.asdict(s) for s in scores],
      "table": [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in table],
  }
  if any(r.rounds is not None for r in per_input):  # self-training: pass@2 after each round
    from ttt_jax import selftrain  # deferred: imports the training stack
    solutions = scoring.solutions_from_tasks(scored)
    summary["solved_by_round"] = [
        sum(s.correct for s in scoring.score_submission(
            {tid: [[np.asarray(a, np.int8) for a in per] for per in at] for tid, at in at_r.items()},
            solutions, levels))
        for at_r in selftrain.attempts_by_round(results)]
  with open(os.path.join(out_dir, "scores.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out_dir, "errors.json"), "w") as f:
    json.dump({"load_errors": [str(e) for e in errors], "ttt_skipped": ttt_notes}, f, indent=1)
  with open(os.path.join(out_dir, "timings.json"), "w") as f:
    json.dump(timings, f, indent=1)
  by_id = {s.task_id: s for s in scores}
  reps = []
  for t in tasks:
    tests = []
    for j, r in enumerate(results[t.task_id]):
      tests.append(report.TestInputReport(
          t.test[j].input, [np.asarray(a) for a in r.attempts], t.test[j].output,
          votes=[(np.asarray(g), *r.count_and_score(g))
                 for g in selection.order(r, r.select)[:5]]
          if r.select != "vote"
          else [(np.asarray(c.grid), c.count, c.poe) for c in r.candidates[:5]],
          num_candidates=r.num_parsed, num_invalid=r.num_invalid,
          rounds=report.history_figures(r.rounds or ())))
    s = by_id.get(t.task_id)
    reps.append(report.TaskReport(t, tests, level=levels.get(t.task_id),
                                  correct=None if s is None else s.correct,
                                  note=ttt_notes.get(t.task_id, "")))
  extra = [("tasks", str(len(tasks))), ("load errors", str(len(errors)))]
  if "solved_by_round" in summary:
    extra.append(("pass@2 after self-training rounds 0, 1, ...",
                  ", ".join(f"{n}/{len(scored)}" for n in summary["solved_by_round"])))
  extra += [(f"time: {k}", f"{v:.1f}s") for k, v in timings.items()]
  report.write_html(os.path.join(out_dir, "report.html"), reps, title=title, extra=extra,
                    figures=[training_curve_svg(model_dir)] if model_dir else [])
  summary["table_text"] = scoring.format_table(table)
  return summary

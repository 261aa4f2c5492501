"""Test-time self-training: the pieces of one EM round, as functions over plain records.

At test time the missing latent of an ARC task is its test output. A round
  E-step   takes each test input's leading candidate (``ttt_jax.infer.selection`` order) as a
           pseudo-label only when it passes a ``ConfidenceRule`` (vote share, PoE margin);
  M-step   appends the accepted pseudo-labelled pairs to the task's demonstrations, rebuilds
           its leave-one-out data with their own loss weight (``loo.build_ttt_dataset``'s
           ``pair_weights``) and continues training the task's adapter
           (``ttt.train_group(initial=...)``);
  verify   keeps the new adapter only if its leave-one-out accuracy on the task's *real*
           demonstrations did not drop (``loo_greedy``: greedy exactness and token accuracy,
           teacher-forced); with ``verify="control"`` also not below that of the same
           continuation trained without the pseudo-labels (``VERIFY``).
After Ruan et al. 2025 (EM over latent thoughts) and DeepSearch 2025 (train on verified wins;
a task whose top candidate stops changing is cached and searched no more).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import numpy as np
from absl import logging

from ttt_jax import atomic_json
from ttt_jax.arc.task import Grid, Pair, Task, grids_equal
from ttt_jax.data import loo, tokens
from ttt_jax.infer import selection
from ttt_jax.infer.records import CandidateRecord


@dataclasses.dataclass(frozen=True)
class ConfidenceRule:
  """When a leading candidate becomes a pseudo-label. Both tests must pass.

  ``min_vote_share``: its votes over all votes cast for the input (greedy and search answers);
  ``min_margin``: its PoE score minus the runner-up's, in nats (0: not required; a candidate
  without a score fails a positive margin; a lone scored candidate passes it).
  """
  min_vote_share: float = 0.5
  min_margin: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.min_vote_share <= 1.0:
      raise ValueError(f"min_vote_share must be in [0, 1], got {self.min_vote_share}")
    if self.min_margin < 0:
      raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")


def pseudo_label(record: CandidateRecord, rule: ConfidenceRule, method: str = "vote"
                 ) -> Optional[Grid]:
  """The E-step for one test input: its leading candidate under ``method`` if ``rule`` trusts
  it, else None."""
  order = selection.order(record, method)
  if not order:
    return None
  top = order[0]
  total = sum(c.count for c in record.candidates)
  votes = record.count_and_score(top)[0]
  if total == 0 or votes / total < rule.min_vote_share:
    return None
  if rule.min_margin > 0:
    s0 = selection.score_of(record, top)
    if s0 is None:
      return None
    rest = [selection.score_of(record, g) for g in order[1:]]
    rest = [s for s in rest if s is not None]
    if rest and s0 - max(rest) < rule.min_margin:
      return None
  return np.asarray(top, np.int8)


def with_pseudo_labels(task: Task, labels: dict[int, Grid]) -> Task:
  """``task`` with each labelled test input appended to its demonstrations (test kept)."""
  extra = tuple(Pair(task.test[j].input, np.asarray(g, np.int8)) for j, g in sorted(labels.items()))
  return task.replace(train=tuple(task.train) + extra)


def m_step_dataset(task: Task, labels: dict[int, Grid], *, weight: float, n_max: int,
                   max_tokens: int, loss_mode: str = "all_outputs", augment: bool = True,
                   seed: int = 0) -> list:
  """The leave-one-out examples of ``task`` plus its pseudo-labelled pairs, each pseudo pair's
  output tokens weighted ``weight`` wherever it appears (demonstration or query)."""
  grown = with_pseudo_labels(task, labels)
  weights = [1.0] * len(task.train) + [float(weight)] * len(labels)
  return loo.build_ttt_dataset(grown, n_max=n_max, max_tokens=max_tokens, loss_mode=loss_mode,
                               augment=augment, seed=seed, mode="ours", pair_weights=weights)


def loo_rows(task: Task, max_tokens: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Prompt and answer tokens of each real demonstration as the query of the others
  (identity view, task order), for those that fit ``max_tokens``."""
  prompts, answers = [], []
  for i, pair in enumerate(task.train):
    others = [p for k, p in enumerate(task.train) if k != i]
    prompt = loo.inference_prompt(others, pair.input)
    answer = np.concatenate([tokens.encode_grid(pair.output), [tokens.EOS]]).astype(np.int32)
    if len(prompt) + len(answer) <= max_tokens:
      prompts.append(prompt)
      answers.append(answer)
  return prompts, answers


def loo_greedy(params: Any, adapter: Any, task: Task, *, cfg: Any, lora_cfg: Any = None,
               max_tokens: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """Per real demonstration (that fits) as the query of the others, teacher-forced in one
  forward pass (``scoring.greedy_matches``): (whether greedy decoding returns its output
  exactly: bool[n], the fraction of its output tokens that are greedy: float[n])."""
  from ttt_jax.infer import scoring  # deferred: JAX
  prompts, answers = loo_rows(task, max_tokens or cfg.max_seq_len)
  return scoring.greedy_matches(params, adapter, prompts, answers, cfg=cfg, lora_cfg=lora_cfg)


def loo_exact(params: Any, adapter: Any, task: Task, *, cfg: Any, lora_cfg: Any = None,
              max_tokens: Optional[int] = None) -> np.ndarray:
  """``loo_greedy``'s exactness alone: bool[n]."""
  return loo_greedy(params, adapter, task, cfg=cfg, lora_cfg=lora_cfg, max_tokens=max_tokens)[0]


def verified(before: np.ndarray, after: np.ndarray, token_acc_before: Optional[np.ndarray] = None,
             token_acc_after: Optional[np.ndarray] = None, max_token_acc_drop: float = 0.0
             ) -> bool:
  """The M-step's adapter is kept only if leave-one-out accuracy did not drop: the number of
  demonstrations reproduced exactly, and (when given) the mean token accuracy by more than
  ``max_token_acc_drop``. The second test is what a weak model's verification rests on: with
  no demonstration exact before, exactness alone cannot drop and would accept any label."""
  if before.shape != after.shape:
    raise ValueError(f"leave-one-out results of different lengths: {before.shape} vs {after.shape}")
  if int(np.sum(after)) < int(np.sum(before)):
    return False
  if token_acc_before is None or token_acc_after is None or not len(token_acc_before):
    return True
  return float(np.mean(token_acc_after)) >= float(np.mean(token_acc_before)) - max_token_acc_drop


def top_unchanged(before: Sequence[CandidateRecord], after: Sequence[CandidateRecord],
                  method: str = "vote") -> bool:
  """Whether every test input's leading candidate is the same in two rounds' records (the
  task is then cached: no more rounds)."""
  def top(r):
    o = selection.order(r, method)
    return None if not o else np.asarray(o[0])
  for a, b in zip(before, after):
    ta, tb = top(a), top(b)
    if (ta is None) != (tb is None):
      return False
    if ta is not None and not grids_equal(ta, tb):
      return False
  return len(before) == len(after)


SELFTRAIN = "selftrain"
# What an M-step's adapter is verified against on the real demonstrations: "before" = the
# adapter it continued from; "control" = that too, and the same continuation trained without
# the pseudo-labels (same data seed, epochs and rate). The demonstrations are in the M-step's
# data, so more training alone raises their leave-one-out accuracy: the control asks whether
# the label helped beyond that, at twice the M-step's training cost.
VERIFY = ("before", "control")


def _train_groups(params: Any, data: Mapping[str, list], initial: Mapping[str, Any], what: str,
                  *, mcfg: Any, lcfg: Any, ocfg: Any, tcfg: Any, step_fn: Any, t0: float
                  ) -> dict[str, Any]:
  """Continues each task's adapter from ``initial`` on its ``data`` (non-empty), grouped by
  length like TTT; returns task id -> trained adapter."""
  from ttt_jax.data import batching  # deferred: JAX
  from ttt_jax.train import ttt
  ids_all = list(data)
  buckets = batching.default_buckets(tcfg.max_tokens, tcfg.min_bucket)
  lengths = [max(batching.input_length(e) for e in data[t]) for t in ids_all]
  k_size = max(tcfg.group_size, 1)  # short groups are padded: one compiled shape per bucket
  groups = batching.group_by_length(lengths, k_size, buckets)
  trained_by_id = {}
  for g, group in enumerate(groups):
    ids = [ids_all[i] for i in group]
    trained, _ = ttt.train_group(params, [data[t] for t in ids], ids, mcfg=mcfg, lcfg=lcfg,
                                 ocfg=ocfg, tcfg=tcfg, initial=[initial[t] for t in ids],
                                 num_tasks=k_size, step_fn=step_fn)
    trained_by_id.update(zip(ids, trained))
    logging.info("self-training %s: trained group %d/%d (%.0fs into the round)", what, g + 1,
                 len(groups), time.perf_counter() - t0)
  return trained_by_id


def _decision_path(round_dir: str, task_id: str) -> str:
  return os.path.join(round_dir, "decisions", task_id.replace("/", "_") + ".json")


def _truth_match(task: Task, labels: dict[int, Grid]) -> Optional[int]:
  """How many pseudo-labels equal the true outputs (None without them): measured, never used."""
  if not task.has_test_outputs:
    return None
  return sum(int(grids_equal(task.test[j].output, g)) for j, g in labels.items())


HISTORY_CANDIDATES = 8  # leading candidates kept per round in a record's "rounds" history


def round_entry(r: int, record: Optional[CandidateRecord] = None, *,
                status: Optional[str] = None, label: Optional[Grid] = None,
                unchanged: Optional[bool] = None) -> dict:
  """One round of a test input's self-training history (``record.rounds``): the round's
  decision (``status``: accepted, rejected, no_data, no_label), the pseudo-label it trained on,
  and, when the round predicted, its attempts and leading candidates (round 0: before
  self-training)."""
  entry: dict = {"round": r}
  if status is not None:
    entry["status"] = status
  if label is not None:
    entry["pseudo_label"] = np.asarray(label).tolist()
  if record is not None:
    entry["attempts"] = list(record.attempts)
    entry["candidates"] = [c.to_json(record.scored)
                           for c in record.candidates[:HISTORY_CANDIDATES]]
  if unchanged is not None:
    entry["leaders_unchanged"] = unchanged
  return entry


def attempts_by_round(records: Mapping[str, Sequence[CandidateRecord]]) -> list[dict[str, list]]:
  """For r = 0..R (the last round any record shows): task id -> each test input's attempts as
  they stood after round r (its latest round that predicted), from the ``rounds`` histories.
  A record without history keeps its attempts in every round."""
  last = max((e["round"] for rs in records.values() for rec in rs
              for e in rec.rounds or ()), default=0)
  by_round = []
  for r in range(last + 1):
    at_r = {}
    for tid, rs in records.items():
      per_input = []
      for rec in rs:
        seen = [e for e in rec.rounds or () if e["round"] <= r and e.get("attempts") is not None]
        per_input.append(seen[-1]["attempts"] if seen else list(rec.attempts))
      at_r[tid] = per_input
    by_round.append(at_r)
  return by_round


class Rounds:
  """Self-training over rounds, driven by its caller: the stage that owns prediction.

  ``adapters``: each task's adapter after TTT (None: a fresh one, i.e. the base model).
  The caller loops ``while rounds.active``: ``train(r)`` runs round r's E-step, M-step and
  verification and returns the accepted tasks' adapters; the caller predicts those tasks with
  them (views, search, vote, selection, under ``round_dir(r)``) and hands the records to
  ``update(r, records)``. This module never calls prediction itself. A task leaves (cached)
  when it has no confident candidate, when its adapter was rejected, or when its leaders did
  not change. Each decision is saved (``round<r>/decisions/``) with the adapter it accepted,
  so a rerun resumes.

  ``finish()`` returns the final records per task, each carrying its test input's history
  under ``rounds`` (``round_entry``: round 0, then one entry per round its task took part
  in), and one summary per round (also in ``<out_dir>/selftrain/rounds.json``).

  ``task_parallel``: one of several processes sharing ``out_dir``; each trains and verifies
  its share of the round's tasks, then (after a barrier) every process reads all decisions,
  so all agree on what to predict. Process 0 writes rounds.json.
  """

  def __init__(self, params: Any, tasks: Sequence[Task], adapters: Mapping[str, Any],
               results: dict[str, list[CandidateRecord]], *, mcfg: Any, lcfg: Any, ocfg: Any,
               tcfg: Any, st_cfg: Any, select_method: str, out_dir: str,
               task_parallel: bool = False,
               step_fn: Any = None):
    import jax  # deferred: the pure parts above import without JAX
    from ttt_jax.parallel import multihost
    from ttt_jax.train import ttt
    self.index, self.count = ((multihost.process_index(), multihost.process_count())
                              if task_parallel else (0, 1))
    self.rule = ConfidenceRule(st_cfg.min_vote_share, st_cfg.min_margin)
    self.max_acc_drop = float(getattr(st_cfg, "max_token_acc_drop", 0.0))
    self.verify = getattr(st_cfg, "verify", "before")
    if self.verify not in VERIFY:
      raise ValueError(f"self_train.verify must be one of {VERIFY}, got {self.verify!r}")
    # one jitted step for every group of every round
    step_fn = step_fn or ttt.lora_step(mcfg, lcfg, ocfg)
    self.params, self.mcfg, self.lcfg, self.tcfg, self.st_cfg = params, mcfg, lcfg, tcfg, st_cfg
    self.select_method, self.out_dir, self.task_parallel = select_method, out_dir, task_parallel
    self.train_fn = functools.partial(_train_groups, params, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg,
                                      tcfg=tcfg.replace(epochs=st_cfg.epochs), step_fn=step_fn)
    self.by_id = {t.task_id: t for t in tasks}
    self.current = {}
    for t in tasks:
      a = adapters.get(t.task_id)
      self.current[t.task_id] = (a if a is not None else jax.device_get(
          ttt.init_adapter(mcfg, lcfg, t.task_id, tcfg.seed)))
    self.records = {tid: list(rs) for tid, rs in results.items()}
    self.history = {tid: [[round_entry(0, rec)] for rec in rs] for tid, rs in self.records.items()}
    self.active = [t.task_id for t in tasks]
    self.summaries: list[dict] = []
    self._round: dict = {}

  def round_dir(self, r: int) -> str:
    return os.path.join(self.out_dir, SELFTRAIN, f"round{r}")

  def tasks(self, task_ids: Sequence[str]) -> list[Task]:
    return [self.by_id[t] for t in task_ids]

  def train(self, r: int) -> dict[str, Any]:
    """Round r's E-step, M-step and verification (decisions saved, or read when a rerun finds
    them); returns task id -> accepted adapter, the tasks to predict this round."""
    from ttt_jax.parallel import multihost
    from ttt_jax.train import checkpoint
    t0 = time.perf_counter()
    tcfg, st_cfg, round_dir = self.tcfg, self.st_cfg, self.round_dir(r)
    labels = {}
    for tid in self.active:
      found = {j: pseudo_label(rec, self.rule, self.select_method)
               for j, rec in enumerate(self.records[tid])}
      found = {j: g for j, g in found.items() if g is not None}
      if found:
        labels[tid] = found
    if self.task_parallel:  # everyone plans the round from the same files on disk
      multihost.barrier(f"selftrain_round{r}_plan")
    pending = [tid for tid in labels if not os.path.exists(_decision_path(round_dir, tid))]
    todo = [pending[i] for i in multihost.owned(len(pending), self.index, self.count)]
    data = {tid: m_step_dataset(self.by_id[tid], labels[tid], weight=st_cfg.weight,
                                n_max=tcfg.n_max, max_tokens=tcfg.max_tokens,
                                loss_mode=tcfg.loss_mode, augment=tcfg.augment, seed=tcfg.seed + r)
            for tid in todo}
    trainable = [tid for tid in todo if data[tid]]
    logging.info("self-training round %d: %d tasks active, %d with a pseudo-label, %d to train "
                 "here (%d decided before)", r, len(self.active), len(labels), len(trainable),
                 len(labels) - len(pending))
    new_adapters = self.train_fn({t: data[t] for t in trainable}, self.current, f"round {r}",
                                 t0=t0)
    control_adapters = {}
    if self.verify == "control":  # the same continuation without the pseudo-labels
      control_data = {t: m_step_dataset(self.by_id[t], {}, weight=st_cfg.weight,
                                        n_max=tcfg.n_max, max_tokens=tcfg.max_tokens,
                                        loss_mode=tcfg.loss_mode, augment=tcfg.augment,
                                        seed=tcfg.seed + r)
                      for t in trainable}
      control_adapters = self.train_fn({t: d for t, d in control_data.items() if d},
                                       self.current, f"round {r} control", t0=t0)
    for tid in todo:
      decision = self._decide(tid, r, labels[tid], new_adapters.get(tid),
                              control_adapters.get(tid))
      if decision["status"] == "accepted":
        checkpoint.save_adapter(os.path.join(round_dir, "adapters"), tid, new_adapters[tid],
                                {"task_id": tid, "status": "trained", "round": r})
      os.makedirs(os.path.dirname(_decision_path(round_dir, tid)), exist_ok=True)
      atomic_json.write_json(_decision_path(round_dir, tid), decision, indent=1)
    if self.task_parallel:  # every process's decisions are on disk before anyone reads them
      multihost.barrier(f"selftrain_round{r}")
    decided = {}
    for tid in labels:
      path = _decision_path(round_dir, tid)
      if not os.path.exists(path):
        raise FileNotFoundError(f"no self-training decision for task {tid} in round {r} after "
                                f"every process finished: --config.out_dir ({self.out_dir}) "
                                "must be a directory all processes share")
      with open(path) as f:
        decided[tid] = json.load(f)
    accepted = [tid for tid, d in decided.items() if d["status"] == "accepted"]
    for tid in accepted:
      self.current[tid] = checkpoint.load_adapter(os.path.join(round_dir, "adapters"), tid)[0]
    logging.info("self-training round %d: %d accepted, %d rejected; predicting the accepted",
                 r, len(accepted), sum(d["status"] == "rejected" for d in decided.values()))
    self._round = {"r": r, "t0": t0, "labels": labels, "decided": decided, "accepted": accepted}
    return {tid: self.current[tid] for tid in accepted}

  def _decide(self, tid: str, r: int, labels: dict[int, Grid], adapter: Any, control: Any
              ) -> dict:
    """One task's decision record: verified against the adapter it continued from (and the
    control continuation, when trained) on the real demonstrations."""
    task = self.by_id[tid]
    decision = {"task_id": tid, "round": r,
                "labels": {str(j): np.asarray(g).tolist() for j, g in labels.items()},
                "labels_right": _truth_match(task, labels)}
    if adapter is None:
      return dict(decision, status="no_data")
    kw = dict(cfg=self.mcfg, lora_cfg=self.lcfg, max_tokens=self.tcfg.max_tokens)
    before, acc_before = loo_greedy(self.params, self.current[tid], task, **kw)
    after, acc_after = loo_greedy(self.params, adapter, task, **kw)
    ok = verified(before, after, acc_before, acc_after, self.max_acc_drop)
    decision.update(loo_before=before.tolist(), loo_after=after.tolist(),
                    loo_token_acc_before=acc_before.tolist(),
                    loo_token_acc_after=acc_after.tolist())
    if control is not None:
      ctrl, acc_ctrl = loo_greedy(self.params, control, task, **kw)
      ok = ok and verified(ctrl, after, acc_ctrl, acc_after, self.max_acc_drop)
      decision.update(loo_control=ctrl.tolist(), loo_token_acc_control=acc_ctrl.tolist())
    return dict(decision, status="accepted" if ok else "rejected", verify=self.verify)

  def update(self, r: int, new_records: Mapping[str, list[CandidateRecord]]) -> dict:
    """Round r's predictions of its accepted tasks (``train(r)``'s keys) into the records and
    histories; tasks whose leaders changed stay active. Returns the round's summary."""
    if self._round.get("r") != r:
      raise ValueError(f"update({r}) without train({r}) before it")
    labels, decided, accepted = (self._round[k] for k in ("labels", "decided", "accepted"))
    missing = [t for t in accepted if t not in new_records]
    if missing:
      raise ValueError(f"round {r}: no predictions for accepted tasks {missing}")
    still = []
    for tid in accepted:
      if not top_unchanged(self.records[tid], new_records[tid], self.select_method):
        still.append(tid)
      self.records[tid] = new_records[tid]
    for tid in self.active:
      d = decided.get(tid, {"status": "no_label", "labels": {}})
      for j, hist in enumerate(self.history[tid]):
        predicted = tid in accepted
        hist.append(round_entry(r, new_records[tid][j] if predicted else None,
                                status=d["status"], label=d["labels"].get(str(j)),
                                unchanged=(tid not in still) if predicted else None))
    right = [d["labels_right"] for d in decided.values() if d["labels_right"] is not None]
    summary = {"round": r, "active": len(self.active), "labelled": len(labels),
               "accepted": len(accepted),
               "rejected": sum(d["status"] == "rejected" for d in decided.values()),
               "labels": sum(len(v) for v in labels.values()),
               "labels_right": sum(right) if right else None,
               "continuing": len(still), "seconds": time.perf_counter() - self._round["t0"]}
    logging.info("self-training round %d: %s", r, summary)
    self.summaries.append(summary)
    self.active, self._round = still, {}
    return summary

  def finish(self) -> tuple[dict[str, list[CandidateRecord]], list[dict]]:
    """The final records (each with its ``rounds`` history) and the round summaries;
    process 0 writes ``<out_dir>/selftrain/rounds.json``."""
    if self.index == 0:
      os.makedirs(os.path.join(self.out_dir, SELFTRAIN), exist_ok=True)
      atomic_json.write_json(os.path.join(self.out_dir, SELFTRAIN, "rounds.json"),
                             self.summaries, indent=1)
    final = {tid: [dataclasses.replace(rec, rounds=tuple(self.history[tid][j]))
                   for j, rec in enumerate(rs)]
             for tid, rs in self.records.items()}
    return final, self.summaries

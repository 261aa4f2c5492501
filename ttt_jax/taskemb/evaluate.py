"""Evaluation of the task-embedding model on new tasks: TTT (or none), decode, select, pass@2.

Besides pass@2 it counts the tasks whose every true test output is among the views' distinct
answers (``candidate_right``: what any selection could reach), and measures what moves long
before whole answers are right: the test outputs' teacher-forced loss and token accuracy under
the task's state (identity view), the ledger's held-out figures.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.arc.task import Task, grids_equal
from ttt_jax.model.config import ModelConfig
from ttt_jax.taskemb import data, model, predict, ttt


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  ttt: Optional[ttt.TTTConfig] = None  # None: no TTT (the pool's mean task vector)
  group_size: int = 8  # tasks trained at once (vmap)
  colour_views: int = 0  # extra colour permutations per dihedral view
  max_prompt: int = 512
  max_answer: int = predict.ANSWER_MAX
  seed: int = 0
  # Fixed batch shapes for decoding and test-output metrics: a few programs compile for any task
  # set (an accelerator's choice; on a CPU the padding costs more than the compiles it saves).
  fixed_shapes: bool = False
  # Choosing the two attempts: "vote" (the paper's hierarchical vote) or "poe" (every distinct
  # answer ranked by its summed -log p under the eight dihedral views).
  select: str = "vote"
  # More answers: "dfs" adds every answer with probability > dfs_min_prob under each of the
  # first dfs_views views of a test input (depth-first search); they have no votes, so PoE ranks.
  search: str = "greedy"
  dfs_min_prob: float = 0.1
  dfs_views: int = 8

  def __post_init__(self):
    if self.select not in SELECT_METHODS:
      raise ValueError(f"EvalConfig.select must be one of {SELECT_METHODS}, got {self.select!r}")
    if self.search not in ("greedy", "dfs"):
      raise ValueError(f"EvalConfig.search must be 'greedy' or 'dfs', got {self.search!r}")
    if self.search == "dfs" and self.select != "poe":
      raise ValueError("EvalConfig: search='dfs' needs select='poe' (searched answers have no votes)")


SELECT_METHODS = ("vote", "poe")


def fresh_generated_tasks(which: str, n: int, seed: int, difficulty=(0.0, 0.3)) -> list[Task]:
  """``n`` new instances, round-robin over the training (``which="train"``) or held-out families.

  Seeds differ from the pool's, so these rules were never trained on.
  """
  from experiments.configs.finetune import HELD_OUT_FAMILIES  # pylint: disable=g-import-not-at-top
  from ttt_jax.arc import generators  # pylint: disable=g-import-not-at-top
  if which not in ("train", "heldout"):
    raise ValueError(f"fresh_generated_tasks: which must be 'train' or 'heldout', got {which!r}")
  fams = sorted(HELD_OUT_FAMILIES) if which == "heldout" else sorted(
      f for f in generators.FAMILIES if f not in HELD_OUT_FAMILIES)
  out, k = [], 0
  while len(out) < n:
    fam = fams[k % len(fams)]
    rng = np.random.default_rng((10_000 + seed, k))
    try:
      t = generators.generate(fam, rng, float(rng.uniform(*difficulty)), n_train=3)
      out.append(Task(f"fresh/{fam}/{seed}-{k}", t.train, t.test))
    except generators.GenerationError:
      pass
    k += 1
  return out


def load_eval_tasks(spec: str) -> list[Task]:
  """``fresh:train:N`` / ``fresh:heldout:N`` (new generator instances) or any ``load_tasks`` name."""
  if spec.startswith("fresh:"):
    _, which, n = spec.split(":")
    return fresh_generated_tasks(which, int(n), seed=0)
  from ttt_jax.arc import io  # pylint: disable=g-import-not-at-top
  return io.load_tasks(spec)[0]


METRIC_ROWS = (1, 2, 4, 8)  # fixed shapes: test inputs per task padded to one of these
METRIC_LENGTHS = (64, 128, 256, 512, 1024)


@functools.partial(jax.jit, static_argnames=("cfg", "lora_cfg"))
def _loss_sums_jit(base, lora, vec_BxD, aug_table, batch, *, cfg, lora_cfg):
  return model.loss_sums(base, lora, vec_BxD, aug_table, batch, cfg=cfg, lora_cfg=lora_cfg)


def test_output_metrics(params: dict, mcfg: ModelConfig, state: dict, task: Task, lora_cfg: Any = None,
                        fixed_shapes: bool = False) -> tuple[float, float]:
  """(mean output NLL per token, token accuracy) of the task's test outputs, identity view.

  ``fixed_shapes`` pads rows and length to ``METRIC_ROWS`` x ``METRIC_LENGTHS`` (padding rows
  carry no weight), so the figures are the same and few programs compile.
  """
  pairs = [p for p in task.test if p.output is not None and data.pair_num_tokens(p) <= 1025]
  if not pairs:
    return float("nan"), float("nan")
  seqs = [data.encode_pair(p.input, p.output) for p in pairs]
  length = max(len(t) for t, _ in seqs) - 1
  n_rows = len(seqs)
  if fixed_shapes:
    length = data.bucket_length(length + 1, METRIC_LENGTHS)
    seqs += [seqs[-1]] * (next((r for r in METRIC_ROWS if r >= n_rows), n_rows) - n_rows)
  batch = data.make_batch(seqs, [0] * len(seqs), [0] * len(seqs), length)
  batch = batch._replace(weights=np.where(np.arange(len(seqs))[:, None] < n_rows, batch.weights, 0.0)
                         .astype(np.float32))
  lcfg = lora_cfg if "lora" in state else None
  vec = jnp.broadcast_to(state["task"], (len(seqs), state["task"].shape[-1]))
  s, w, hits = _loss_sums_jit(state.get("base", params["base"]), state.get("lora"), vec, params["aug"],
                              batch, cfg=mcfg, lora_cfg=lcfg)
  return float(s / w), float(hits / w)


def _found(task: Task, grids_per_input: Sequence[Sequence[Any]]) -> list[bool]:
  """Per test input: is its true output among the given grids."""
  return [p.output is not None and any(grids_equal(a, p.output) for a in gs)
          for p, gs in zip(task.test, grids_per_input)]


def evaluate(params: dict, mcfg: ModelConfig, tasks: Sequence[Task], ecfg: EvalConfig,
             log=print, deadline: Optional[float] = None, clock=time.monotonic) -> dict:
  """Per-task records (attempts right, pass@2, test-output loss) and totals.

  ``deadline`` (on ``clock``): no new group starts after it; ``unfinished`` counts the tasks
  left out.
  """
  records, t0 = [], time.time()
  mode = ecfg.ttt.mode if ecfg.ttt else "none"
  unfinished = 0
  joint_states, joint_seconds = None, 0.0
  if mode == "joint":  # one run over every task's demonstrations; groups then only decode
    t_j = time.time()
    base, joint_states, joint_loss = ttt.train_joint(params, mcfg, tasks, ecfg.ttt)
    params, joint_seconds = dict(params, base=base), time.time() - t_j
    log(f"  joint TTT over {len(tasks)} tasks: {joint_seconds:.0f} s, final loss {joint_loss:.3f}")
  for g0 in range(0, len(tasks), ecfg.group_size):
    if deadline is not None and clock() >= deadline:
      unfinished = len(tasks) - g0
      log(f"  deadline: {unfinished} tasks left out")
      break
    group = list(tasks[g0:g0 + ecfg.group_size])
    t_g = time.time()
    if joint_states is not None:
      states, losses = joint_states[g0:g0 + len(group)], [float("nan")] * len(group)
    elif ecfg.ttt is not None:
      states, losses = ttt.train_group(params, mcfg, group, ecfg.ttt,
                                       task_indices=range(g0, g0 + len(group)),
                                       num_slots=ecfg.group_size)
    else:
      states = [{"task": ttt.initial_vector(params)} for _ in group]
      losses = [float("nan")] * len(group)
    t_ttt = time.time() - t_g
    lcfg_ttt = ecfg.ttt.lora if ecfg.ttt else None
    views = [predict.views_of(t, i, ecfg.colour_views, ecfg.seed, ecfg.max_prompt) for i, t in enumerate(group)]
    if all("base" not in s and "lora" not in s for s in states):  # one batch for the whole group
      flat = [v for vs in views for v in vs]
      vec = np.stack([np.asarray(states[v.task]["task"]) for v in flat]) if flat else None
      answers = predict.decode_views(params["base"], None, vec, params["aug"], flat, cfg=mcfg,
                                     max_answer=ecfg.max_answer, fixed_shapes=ecfg.fixed_shapes) if flat else []
      per_task = [[a for v, a in zip(flat, answers) if v.task == i] for i in range(len(group))]
    else:
      per_task = []
      for i, s in enumerate(states):
        lcfg = lcfg_ttt if "lora" in s else None
        vec = np.repeat(np.asarray(s["task"])[None], len(views[i]), axis=0)
        per_task.append(predict.decode_views(s.get("base", params["base"]), s.get("lora"), vec, params["aug"],
                                             views[i], cfg=mcfg, lora_cfg=lcfg, max_answer=ecfg.max_answer,
                                             fixed_shapes=ecfg.fixed_shapes) if views[i] else [])
    for i, task in enumerate(group):
      cands = [predict.distinct_answers(views[i], per_task[i], j) for j in range(len(task.test))]
      if ecfg.search == "dfs":
        st = states[i]
        for j in range(len(task.test)):
          searched = [v for v in views[i] if v.test_index == j][:ecfg.dfs_views]
          found = predict.dfs_answers(st.get("base", params["base"]), st.get("lora"), st["task"], params["aug"],
                                      searched, cfg=mcfg, lora_cfg=lcfg_ttt if "lora" in st else None,
                                      min_prob=ecfg.dfs_min_prob, max_answer=ecfg.max_answer)
          for g in (g for gs in found for g in gs):
            if not any(grids_equal(g, c) for c in cands[j]):
              cands[j].append(g)
      voted = predict.vote(views[i], per_task[i], len(task.test))
      attempts = voted
      if ecfg.select == "poe":
        st = states[i]
        attempts = [predict.poe_attempts(c, predict.poe_scores(
            st.get("base", params["base"]), st.get("lora"), st["task"], params["aug"], p.input, c, cfg=mcfg,
            lora_cfg=lcfg_ttt if "lora" in st else None)) for p, c in zip(task.test, cands)]
      right, right_vote, among = (_found(task, g) for g in (attempts, voted, cands))
      nll, acc = test_output_metrics(params, mcfg, states[i], task, lcfg_ttt, ecfg.fixed_shapes)
      records.append({"task_id": task.task_id, "pass2": bool(all(right)), "inputs_right": sum(right),
                      "inputs": len(task.test), "views": len(views[i]),
                      "pass2_vote": bool(all(right_vote)), "candidates": sum(len(c) for c in cands),
                      "candidate_right": bool(all(among)),
                      "parsed": sum(a is not None for a in per_task[i]), "ttt_final_loss": losses[i],
                      "test_nll": nll, "test_token_acc": acc})
    log(f"  tasks {g0 + len(group)}/{len(tasks)}: pass@2 so far "
        f"{sum(r['pass2'] for r in records)}; group {time.time() - t_g:.0f} s (TTT {t_ttt:.0f} s)")
  n = len(records)
  finite = [r for r in records if np.isfinite(r["test_nll"])]
  return {"mode": mode, "select": ecfg.select, "search": ecfg.search, "tasks": n, "unfinished": unfinished,
          "pass2": sum(r["pass2"] for r in records),
          "pass2_vote": sum(r["pass2_vote"] for r in records),
          "candidate_right": sum(r["candidate_right"] for r in records),
          "test_nll": float(np.mean([r["test_nll"] for r in finite])) if finite else None,
          "test_token_acc": float(np.mean([r["test_token_acc"] for r in finite])) if finite else None,
          "seconds": round(time.time() - t0, 1), "seconds_per_task": round((time.time() - t0) / max(n, 1), 1),
          "joint_ttt_seconds": round(joint_seconds, 1),
          "records": records}

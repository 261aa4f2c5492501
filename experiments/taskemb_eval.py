r"""Evaluates a task-embedding checkpoint on new tasks, with or without test-time training.

  python -m experiments.taskemb_eval --tasks=dev80-small --ttt=embed --steps=32
  python -m experiments.taskemb_eval --tasks=fresh:train:24 --ttt=none
  python -m experiments.taskemb_eval --tasks=fresh:heldout:24 --ttt=lora --out=runs/te_eval.json

``--tasks``: any task set name (dev80, dev80-small, arc1-eval, ...) or ``fresh:train:N`` /
``fresh:heldout:N`` (new instances of the training / the six held-out generator families).
Prints pass@2 (``--select=vote|poe``), how many tasks had every true output among the answers,
the test outputs' loss and token accuracy, and seconds per task.
"""

import json
import os

from absl import app
from absl import flags

_CKPT = flags.DEFINE_string("checkpoint", "", "checkpoint directory (default: the committed "
                            "ttt_jax/assets/taskemb_cpu)")
_TASKS = flags.DEFINE_string("tasks", "dev80-small", "task set")
_TTT = flags.DEFINE_enum("ttt", "embed", ["none", "embed", "lora", "full", "joint"],
                         "per-task state trained (joint: every task's demonstrations in one run, shared "
                         "weights, a vector per task: transductive)")
_STEPS = flags.DEFINE_integer("steps", 32, "TTT steps")
_ROWS = flags.DEFINE_integer("rows", 8, "TTT sequences per step")
_LR = flags.DEFINE_float("lr", 1e-2, "TTT rate of the task vector (and LoRA)")
_BASE_LR = flags.DEFINE_float("base_lr", 1e-4, "TTT rate of the base weights (--ttt=full)")
_GROUP = flags.DEFINE_integer("group_size", 8, "tasks trained at once (vmap)")
_COLOURS = flags.DEFINE_integer("colour_views", 0, "extra colour permutations per dihedral view")
_SELECT = flags.DEFINE_enum("select", "vote", ["vote", "poe"], "attempts by the paper's hierarchical "
                            "vote, or by a product of experts (summed -log p of each distinct answer "
                            "under the eight dihedral views)")
_SEARCH = flags.DEFINE_enum("search", "greedy", ["greedy", "dfs"], "dfs: also every answer with "
                            "probability > --dfs_min_prob under each view (needs --select=poe)")
_DFS_MIN_PROB = flags.DEFINE_float("dfs_min_prob", 0.1, "depth-first search threshold")
_OUT = flags.DEFINE_string("out", "", "write the records here (JSON)")
_ATTENTION = flags.DEFINE_enum("attention_impl", "blocked", ["", "xla", "blocked", "cudnn"],
                               "attention of TTT and scoring ('': the checkpoint's; blocked: the CPU's "
                               "choice; cudnn on a GPU in bf16)")
_FIXED = flags.DEFINE_bool("fixed_shapes", False, "fixed decode/metric shapes (few compiles: an accelerator's choice)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from experiments.configs.taskemb import ASSET  # pylint: disable=g-import-not-at-top
  from ttt_jax.taskemb import evaluate, pretrain, ttt  # pylint: disable=g-import-not-at-top
  ckpt = _CKPT.value or ASSET
  params, mcfg, state = pretrain.load_trained(ckpt)
  if _ATTENTION.value:
    mcfg = mcfg.replace(attention_impl=_ATTENTION.value)
  tasks = evaluate.load_eval_tasks(_TASKS.value)
  tcfg = None if _TTT.value == "none" else ttt.TTTConfig(
      mode=_TTT.value, steps=_STEPS.value, rows=_ROWS.value, learning_rate=_LR.value,
      base_learning_rate=_BASE_LR.value)
  print(f"taskemb_eval: {ckpt} (step {state['step']}, {state['tokens_seen']:,} tokens), "
        f"{len(tasks)} tasks of {_TASKS.value}, TTT {_TTT.value}", flush=True)
  res = evaluate.evaluate(params, mcfg, tasks, evaluate.EvalConfig(
      ttt=tcfg, group_size=_GROUP.value, colour_views=_COLOURS.value, fixed_shapes=_FIXED.value,
      select=_SELECT.value, search=_SEARCH.value, dfs_min_prob=_DFS_MIN_PROB.value),
      log=lambda s: print(s, flush=True))
  res.update(checkpoint=ckpt, step=state["step"], tokens_seen=state["tokens_seen"], task_set=_TASKS.value,
             ttt_steps=_STEPS.value if tcfg else 0, attention_impl=mcfg.attention_impl)
  print(f"pass@2 {res['pass2']}/{res['tasks']} ({res['select']}; by the vote {res['pass2_vote']}; "
        f"truth among the answers {res['candidate_right']}/{res['tasks']})  test-output NLL {res['test_nll']:.3f}/token  "
        f"token acc {res['test_token_acc']:.3f}  {res['seconds_per_task']} s/task")
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(res, f, indent=1)


if __name__ == "__main__":
  app.run(main)

r"""One call for a lent GPU window: check, train, evaluate, measure, return, each on a deadline.

  # on the device machine (docs/training.md, "The GPU window"): wheels in .whl/ travel by carry
  pip install --no-index --no-deps .whl/*.whl && python -m experiments.gpu_window --window_out=$OUT

Phases, each with a deadline measured from the start of the process (defaults fit a
9-minute command; the window is 15 device-minutes with the machine's start):

1. ``check``: devices, then cuDNN attention against the XLA path in bf16 (forward and
   gradient, left-padded rows). It decides ``attention_impl`` for the rest of the run.
2. ``train``: continues the task-embedding lineage (``ttt_jax/assets/taskemb_cpu``) in bf16
   until the train deadline; its checkpoint goes to ``$OUT/ckpt/`` as soon as training stops.
3. ``eval``: dev-80 without TTT, then with task-vector TTT at each of ``--window_ttt_steps``
   (the TTT-steps curve), groups started only before each arm's share of the deadline; per-task
   records and per-level pass@2.
4. ``bench``: figures the earlier phases measured (tokens/s, seconds per task), then the
   benchmark binary's measurements (``experiments/configs/benchmark.py:window``: LoRA step vs
   HF + peft, decoding vs HF generate and the HBM roofline, full-step MFU, K tasks vmapped vs in a
   row), one process each, each killed at its share of the time left. Each appends its section to
   ``$OUT/BENCHMARKS.md`` when it finishes; what did not finish is listed to run first next time.

``$OUT/window.json`` is rewritten after every phase, so a run cut short still returns what it
finished. What comes back: window.json, log.txt, BENCHMARKS.md, ckpt/{params,opt}.safetensors,
ckpt/state.json: 6 files, at most one folder deep, each under 16 MiB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional

from absl import app
from absl import flags

from ttt_jax import atomic_json

# The benchmark processes of the last phase need the GPU memory this process does not use.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

_OUT = flags.DEFINE_string("window_out", os.environ.get("OUT", "runs/gpu_window"), "returned folder ($OUT)")
_TRAIN_END = flags.DEFINE_float("window_train_end_s", 260.0, "training stops by this second")
_EVAL_END = flags.DEFINE_float("window_eval_end_s", 420.0, "no evaluation group starts after this second")
_END = flags.DEFINE_float("window_end_s", 565.0, "everything is written by this second")
_TTT_STEPS = flags.DEFINE_list("window_ttt_steps", ["32", "128", "512"],
                               "TTT steps per task, one evaluation arm each (after the no-TTT arm)")
_TOKENS = flags.DEFINE_integer("window_tokens_per_batch", 65536, "pretraining batch size in slots")
_TASKS = flags.DEFINE_string("window_tasks", "dev80", "evaluation tasks")
_BENCH = flags.DEFINE_string("window_bench", "lora,decode,full,multitask",
                              "benchmark measurements, in order, one process each")
_REHEARSAL = flags.DEFINE_bool("window_rehearsal", False, "tiny model and pool, for the CPU rehearsal")

MAX_FILES, MAX_BYTES, MAX_DEPTH = 8, 16 * 2 ** 20, 2
BENCH_WHAT = {"lora": "LoRA TTT step vs HF transformers + peft (Llama-3.2-1B shape)",
              "decode": "decoding vs HF generate and vs the HBM roofline (Llama-3.2-1B shape)",
              "full": "full-step MFU at the Llama-3.2-1B shape",
              "multitask": "K tasks in one vmapped TTT step vs K steps (arc-small)"}
NEXT_WINDOW = tuple(BENCH_WHAT.values()) + (
    "the benchmark binary's gpu preset at every size (experiments/configs/benchmark.py:gpu)",)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_BENCH_S = 20.0  # a measurement given less than this is not started


class Window:
  """Deadlines on one clock, the result record, and the returned folder's limits."""

  def __init__(self, out: str, clock: Callable[[], float] = time.monotonic):
    self.out, self.clock, self.t0 = out, clock, clock()
    self.result: dict[str, Any] = {"phases": {}, "next_window": list(NEXT_WINDOW)}
    os.makedirs(out, exist_ok=True)
    self._log = open(os.path.join(out, "log.txt"), "a")

  def elapsed(self) -> float:
    return self.clock() - self.t0

  def log(self, msg: str) -> None:
    line = f"[{self.elapsed():6.1f}s] {msg}"
    print(line, flush=True)
    self._log.write(line + "\n")
    self._log.flush()

  def secure(self) -> None:
    """Writes window.json atomically (what finished so far)."""
    self.result["elapsed_s"] = round(self.elapsed(), 1)
    atomic_json.write_json(os.path.join(self.out, "window.json"), self.result, indent=1, default=str)

  def phase(self, name: str, fn: Callable[[], dict], deadline_s: float) -> Optional[dict]:
    """Runs a phase unless its deadline has passed; records its figures or its error."""
    if self.elapsed() >= deadline_s:
      self.result["phases"][name] = {"status": "skipped: deadline passed before it started"}
      self.log(f"{name}: skipped (deadline {deadline_s:.0f}s passed)")
      self.secure()
      return None
    start = self.elapsed()
    self.log(f"{name}: start (deadline {deadline_s:.0f}s)")
    try:
      rec = dict(fn(), status="done")
    except Exception as e:  # pylint: disable=broad-except
      rec = {"status": f"failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    rec.update(started_s=round(start, 1), ended_s=round(self.elapsed(), 1), deadline_s=deadline_s)
    self.result["phases"][name] = rec
    self.log(f"{name}: {rec['status'].splitlines()[0]} at {self.elapsed():.1f}s")
    self.secure()
    return rec


def returned_files(out: str) -> list[tuple[str, int, int]]:
  """(path relative to out, bytes, folders deep) of every file under out."""
  rows = []
  for root, _, files in os.walk(out):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), out)
      rows.append((rel, os.path.getsize(os.path.join(root, f)), rel.count(os.sep)))
  return sorted(rows)


def check_limits(out: str) -> list[str]:
  """What breaks the return limits (count, size, depth); empty when all comes back."""
  rows = returned_files(out)
  bad = [f"{len(rows)} files > {MAX_FILES}"] if len(rows) > MAX_FILES else []
  bad += [f"{p}: {n} bytes > {MAX_BYTES}" for p, n, _ in rows if n > MAX_BYTES]
  bad += [f"{p}: {d} folders deep > {MAX_DEPTH}" for p, _, d in rows if d > MAX_DEPTH]
  return bad


def bench_argv(measurement: str, out: str, preset: str) -> list[str]:
  """The benchmark binary for one measurement, appending its section to ``out``/BENCHMARKS.md."""
  return [sys.executable, "-m", "experiments.benchmark", f"--config=experiments/configs/benchmark.py:{preset}",
          f"--config.only={measurement}", f"--config.benchmarks_md={os.path.join(out, 'BENCHMARKS.md')}",
          "--config.json_out="]


def run_bounded(argv: list[str], timeout_s: float) -> dict:
  """Runs ``argv`` to completion or kills it at ``timeout_s``; its output's tail goes into the record."""
  t = time.monotonic()
  try:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=REPO_ROOT)
    status, out = ("done" if r.returncode == 0 else f"failed: exit {r.returncode}"), r.stdout + r.stderr
  except subprocess.TimeoutExpired as e:
    status = f"killed at its {timeout_s:.0f}s share"
    out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
  return {"status": status, "seconds": round(time.monotonic() - t, 1), "output_tail": out[-1500:]}


def attention_check() -> dict:
  """cuDNN fused attention vs the XLA path in bf16, forward and gradient, left-padded rows."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import config, transformer  # pylint: disable=g-import-not-at-top
  rec = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
         "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__, "python": sys.version.split()[0]}
  if jax.default_backend() != "gpu":
    rec["attention_impl"] = "xla"
    rec["cudnn"] = "not a GPU: the XLA path"
    return rec
  cfg = config.get_config("arc-cpu", dtype="bfloat16")
  params = transformer.init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  toks = jnp.asarray(rng.integers(0, 16, size=(4, 256)), jnp.int32)
  mask = jnp.asarray(np.arange(256)[None] >= np.array([0, 17, 100, 200])[:, None])
  pos = transformer.positions_from_mask(mask)

  def loss(p, c):
    lg = transformer.forward(p, None, toks, pos, mask, cfg=c)
    return jnp.sum(jnp.where(mask[..., None], lg, 0.0)) / 1e4, lg

  outs = {}
  for impl in ("xla", "cudnn"):
    c = cfg.replace(attention_impl=impl)
    (l, lg), g = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(params, c)
    outs[impl] = (np.asarray(lg, np.float32), jax.tree.map(lambda x: np.asarray(x, np.float32), g))
  m = np.asarray(mask)
  fwd = float(np.max(np.abs(outs["xla"][0][m] - outs["cudnn"][0][m])))
  grad = max(float(np.max(np.abs(a - b))) for a, b in
             zip(jax.tree.leaves(outs["xla"][1]), jax.tree.leaves(outs["cudnn"][1])))
  scale = float(np.max(np.abs(outs["xla"][0][m])))
  ok = fwd <= 0.05 * max(scale, 1.0) and np.isfinite(grad)
  rec.update(cudnn_max_logit_diff=fwd, cudnn_max_grad_diff=grad, attention_impl="cudnn" if ok else "xla")
  return rec


def main(argv):
  del argv
  win = Window(_OUT.value)
  win.result["argv"] = sys.argv
  run_window(win, rehearsal=_REHEARSAL.value, train_end_s=_TRAIN_END.value,
             eval_end_s=_EVAL_END.value, end_s=_END.value,
             ttt_steps=tuple(int(n) for n in _TTT_STEPS.value),
             tokens_per_batch=_TOKENS.value, tasks=_TASKS.value,
             bench=tuple(m.strip() for m in _BENCH.value.split(",") if m.strip()))


def run_window(win: Window, *, rehearsal: bool, train_end_s: float, eval_end_s: float, end_s: float,
               ttt_steps: tuple[int, ...], tokens_per_batch: int, tasks: str,
               bench: tuple[str, ...] = tuple(BENCH_WHAT)) -> dict:
  """The four phases on ``win``'s clock; returns ``win.result``."""
  check = win.phase("check", attention_check, deadline_s=train_end_s) or {}
  impl = check.get("attention_impl", "xla")
  trained: dict[str, Any] = {}

  def train() -> dict:
    from experiments.configs import taskemb  # pylint: disable=g-import-not-at-top
    from ttt_jax.taskemb import pretrain  # pylint: disable=g-import-not-at-top
    c = taskemb.get_config("quick" if rehearsal else "cpu").to_dict()
    c = {k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}
    work = tempfile.mkdtemp(prefix="gpu_window_")
    c.update(out_dir=work, max_minutes=max(0.0, (train_end_s - win.elapsed()) / 60.0), steps=0,
             checkpoint_minutes=1e9, device=check.get("backend", "?"))
    if not rehearsal:
      c.update(tokens_per_batch=tokens_per_batch, compute_dtype="bfloat16", attention_impl=impl)
    if rehearsal and not c["init_from"]:
      c["steps"] = 4
    cfg = pretrain.PretrainConfig(**c)
    st = pretrain.run(cfg, clock=win.clock, log=win.log)
    dst = os.path.join(win.out, "ckpt")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(os.path.join(work, "checkpoint"), dst)
    trained["dir"] = dst
    shutil.rmtree(work, ignore_errors=True)
    last = st["runs"][-1]
    return {"step": st["step"], "tokens_seen": st["tokens_seen"], "run_tokens": last["tokens"],
            "run_seconds": last["seconds"], "tokens_per_s": round(last["tokens"] / max(last["seconds"], 1e-9)),
            "recent_loss": st["recent_loss"], "hours": st["hours"]}

  win.phase("train", train, deadline_s=train_end_s)

  def evaluate() -> dict:
    from ttt_jax.arc import splits  # pylint: disable=g-import-not-at-top
    from ttt_jax.taskemb import evaluate as ev, pretrain, ttt  # pylint: disable=g-import-not-at-top
    if "dir" not in trained:
      raise RuntimeError("no checkpoint from the train phase")
    params, mcfg, _ = pretrain.load_trained(trained["dir"])
    if not rehearsal:
      mcfg = mcfg.replace(dtype="bfloat16", attention_impl=impl)
    task_list = ev.load_eval_tasks("fresh:train:2" if rehearsal else tasks)
    levels = splits.eval_levels()
    out = {}
    arms = [("none", None)] + [(f"embed_{n}", ttt.TTTConfig(mode="embed", steps=n, buckets=(64, 128, 256, 512)))
                               for n in ttt_steps]
    for i, (name, tcfg) in enumerate(arms):
      share = (eval_end_s - win.elapsed()) / (len(arms) - i)  # what earlier arms left is shared on
      ecfg = ev.EvalConfig(ttt=tcfg, group_size=2 if rehearsal else 16, max_answer=24 if rehearsal else 931,
                           fixed_shapes=True)
      res = ev.evaluate(params, mcfg, task_list, ecfg,
                        log=win.log, deadline=win.clock() + share, clock=win.clock)
      by_level: dict[str, list[int]] = {}
      for r in res["records"]:
        lv = levels.get(r["task_id"], "other")
        by_level.setdefault(lv, [0, 0])
        by_level[lv][0] += r["pass2"]
        by_level[lv][1] += 1
      res["by_level"] = by_level
      out[name] = res
      win.result["phases"]["eval_partial"] = {k: {kk: vv for kk, vv in v.items() if kk != "records"}
                                              for k, v in out.items()}
      win.secure()
    return out

  win.phase("eval", evaluate, deadline_s=eval_end_s)

  def measure() -> dict:
    ph = win.result["phases"]
    rec = {"pretrain_tokens_per_s": ph.get("train", {}).get("tokens_per_s")}
    for arm, res in ph.get("eval", {}).items():
      if isinstance(res, dict) and "seconds_per_task" in res:
        rec[f"eval_{arm}_seconds_per_task"] = res["seconds_per_task"]
    preset = "smoke" if rehearsal else "window"
    for i, m in enumerate(bench):
      share = (end_s - 5.0 - win.elapsed()) / (len(bench) - i)  # what earlier ones left is shared on
      if share < MIN_BENCH_S:
        rec[m] = {"status": f"not started: {share:.0f}s left for it"}
        continue
      win.log(f"bench {m}: start ({share:.0f}s)")
      rec[m] = run_bounded(bench_argv(m, win.out, preset), share)
      win.log(f"bench {m}: {rec[m]['status']} in {rec[m]['seconds']}s")
      win.result["phases"]["bench_partial"] = rec
      win.secure()
    rec["not_run"] = [BENCH_WHAT.get(m, m) for m in bench if rec.get(m, {}).get("status") != "done"]
    rec["not_run"] += [w for m, w in BENCH_WHAT.items() if m not in bench] + [NEXT_WINDOW[-1]]
    win.result["next_window"] = rec["not_run"]
    return rec

  win.phase("bench", measure, deadline_s=end_s)
  win.result["limits_broken"] = check_limits(win.out)
  win.log(f"done; returned files: {returned_files(win.out)}")
  win.secure()
  return win.result


if __name__ == "__main__":
  app.run(main)

"""Device memory of each pipeline stage, from XLA's compiled memory analysis on abstract shapes.

Every stage's jitted function is lowered on ``jax.ShapeDtypeStruct`` arguments (no weights, no
device memory) at the shapes a pipeline config gives it, and compiled for this process's
backend. XLA's buffer assignment then says how many bytes the arguments, outputs and
temporaries take and the program's peak: what the stage needs on one device.

Compiled on a host without a GPU, cuDNN's fused attention cannot be lowered; its algorithm
in pure JAX (``attention_impl="flash"``: residuals linear in ``T``) stands in for it, and the
table says so. A host backend cannot donate buffers, so a donated TTT state counts twice there.
A host's scheduler is not a GPU's, so treat the figures as estimates of the
GPU's within a modest factor, not to the byte.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from ttt_jax.data import tokens
from ttt_jax.data.batching import Batch
from ttt_jax.model import decode, lora, transformer
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import steps
from ttt_jax.train.optim import OptimConfig

GIB = 1024 ** 3
DEVICES_GIB = {"H100 80 GiB": 80, "H200 141 GiB": 141}


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What one compiled call of each stage holds (``from_pipeline_config`` reads a config)."""
  ttt_tasks: int  # adapters per TTT step (ttt.group_size)
  ttt_batch: int  # sequences per task per step
  ttt_tokens: int  # their length
  infer_tasks: int  # tasks per decoding / scoring call (infer.group_size)
  decode_rows: int  # views per task per decoding call
  prompt_tokens: int
  answer_tokens: int  # new tokens per view (the answer budget)
  score_rows: int  # (candidate, view) rows per task per scoring call
  score_tokens: int


@dataclasses.dataclass(frozen=True)
class StageMemory:
  stage: str
  shapes: str
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  peak_bytes: int


@dataclasses.dataclass(frozen=True)
class Program:
  """A stage's jitted function and the abstract arguments it is planned at."""
  stage: str
  shapes: str
  fn: Callable
  args: tuple


def compiled_memory(program: Program) -> StageMemory:
  """The program lowered on its abstract arguments and compiled: XLA's memory analysis."""
  stage, shapes, fn, args = program.stage, program.shapes, program.fn, program.args
  with warnings.catch_warnings():  # a host backend cannot donate: said once in the module doc
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    m = fn.lower(*args).compile().memory_analysis()
  # Everything live at once: buffer-assigned temporaries plus the arguments and the outputs
  # that do not reuse a donated argument (the host's own peak_memory_in_bytes undercounts).
  peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  return StageMemory(stage, shapes, m.argument_size_in_bytes, m.output_size_in_bytes,
                     m.alias_size_in_bytes, m.temp_size_in_bytes, int(peak))


def _stacked(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct((k, *s.shape), s.dtype), tree)


def _spec(shape: Sequence[int], dtype: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


def host_model_config(cfg: ModelConfig) -> tuple[ModelConfig, str]:
  """The config compiled here, and a note: cuDNN attention becomes its pure-JAX algorithm when
  this backend has no cuDNN."""
  if cfg.attention_impl == "cudnn" and jax.default_backend() != "gpu":
    return cfg.replace(attention_impl="flash"), "cuDNN attention modelled by attention_impl=flash"
  return cfg, f"attention_impl={cfg.attention_impl or 'xla'}"


def program(stage: str, mcfg: ModelConfig, lcfg: lora.LoraConfig, ocfg: OptimConfig, shapes: Shapes
            ) -> Program:
  """The jitted function of ``stage`` (a key of ``STAGES``) on abstract arguments."""
  key = jax.random.key(0)
  params = jax.eval_shape(lambda: transformer.init_params(mcfg, key))
  adapter = jax.eval_shape(lambda: lora.init_lora(mcfg, lcfg, key))
  return STAGES[stage](mcfg, lcfg, ocfg, shapes, params, adapter)


def stage_memories(mcfg: ModelConfig, lcfg: lora.LoraConfig, ocfg: OptimConfig, shapes: Shapes,
                   stages: Optional[Sequence[str]] = None) -> list[StageMemory]:
  """One ``StageMemory`` per stage (``STAGES``, or the named subset), each compiled alone."""
  return [compiled_memory(program(name, mcfg, lcfg, ocfg, shapes)) for name in stages or STAGES]


def _ttt_step(mcfg, lcfg, ocfg, s: Shapes, params, adapter) -> Program:
  K, B, T = s.ttt_tasks, s.ttt_batch, s.ttt_tokens
  adapters = _stacked(adapter, K)
  state = jax.eval_shape(lambda a, n: steps.init_multitask_state(a, ocfg, n), adapters, _spec((K,), jnp.int32))
  i32 = _spec((K, B, T), jnp.int32)
  batch = Batch(i32, i32, _spec((K, B, T), bool), i32, _spec((K, B, T), jnp.float32))
  fn = steps.jit_multitask_step(functools.partial(transformer.forward_hidden, cfg=mcfg, lora_cfg=lcfg), ocfg)
  return Program("TTT step (LoRA, Adam)", f"{K} tasks x {B} x {T}", fn, (state, params, batch))


def _prefill_fn(mcfg, lcfg, cache_len):
  one = functools.partial(decode.prefill, cfg=mcfg, lora_cfg=lcfg, cache_len=cache_len)
  return jax.vmap(one, in_axes=(None, 0, 0, 0))


def _decode_inputs(s: Shapes, adapter):
  K, B, T = s.infer_tasks, s.decode_rows, s.prompt_tokens
  return _stacked(adapter, K), _spec((K, B, T), jnp.int32), _spec((K, B, T), bool)


def _prefill(mcfg, lcfg, ocfg, s: Shapes, params, adapter) -> Program:
  adapters, toks, mask = _decode_inputs(s, adapter)
  fn = jax.jit(_prefill_fn(mcfg, lcfg, s.prompt_tokens + s.answer_tokens))
  return Program("prefill (into the KV cache)", f"{s.infer_tasks} tasks x {s.decode_rows} views x {s.prompt_tokens}",
                 fn, (params, adapters, toks, mask))


def _decode_loop(mcfg, lcfg, ocfg, s: Shapes, params, adapter) -> Program:
  adapters, toks, mask = _decode_inputs(s, adapter)
  S = s.prompt_tokens + s.answer_tokens
  logits, cache = jax.eval_shape(_prefill_fn(mcfg, lcfg, S), params, adapters, toks, mask)
  K, B = s.infer_tasks, s.decode_rows
  one = functools.partial(decode.decode_loop, cfg=mcfg, lora_cfg=lcfg, max_new_tokens=s.answer_tokens,
                          eos_id=tokens.EOS, pad_id=tokens.PAD, grid_stop=mcfg.vocab_size == tokens.VOCAB_SIZE)
  fn = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0, None)), donate_argnums=(2,))
  return Program("decode loop (greedy, KV cache)", f"{K} tasks x {B} views, cache {S}", fn,
                 (params, adapters, cache, logits, _spec((K, B), jnp.int32), jax.eval_shape(lambda: jax.random.key(0))))


def _score_one(params, adapter, tokens_BxT, mask_BxT, answer_BxT, *, cfg, lora_cfg):
  from ttt_jax.infer import scoring  # pylint: disable=g-import-not-at-top
  return scoring.sequence_logprobs(params, adapter, tokens_BxT, mask_BxT, answer_BxT, cfg=cfg, lora_cfg=lora_cfg)


def _scoring(mcfg, lcfg, ocfg, s: Shapes, params, adapter) -> Program:
  K, B, T = s.infer_tasks, s.score_rows, s.score_tokens
  fn = jax.jit(jax.vmap(functools.partial(_score_one, cfg=mcfg, lora_cfg=lcfg), in_axes=(None, 0, 0, 0, 0)))
  return Program("scoring (answer log-probs, PoE)", f"{K} tasks x {B} rows x {T}", fn,
                 (params, _stacked(adapter, K), _spec((K, B, T), jnp.int32), _spec((K, B, T), bool),
                  _spec((K, B, T), bool)))


def _dfs_step(mcfg, lcfg, ocfg, s: Shapes, params, adapter) -> Program:
  from ttt_jax.infer import dfs  # pylint: disable=g-import-not-at-top
  S = s.prompt_tokens + s.answer_tokens
  cache = jax.eval_shape(lambda: transformer.init_cache(mcfg, 1, S))
  # the search's one cache is donated to each step and updated in place
  fn = jax.jit(functools.partial(dfs._step, cfg=mcfg, lora_cfg=lcfg),  # pylint: disable=protected-access
               donate_argnums=(2,))
  return Program("DFS step (one token, one cache)", f"1 row, cache {S}", fn,
                 (params, adapter, cache, _spec((), jnp.int32), _spec((), jnp.int32),
                  _spec((), jnp.int32), None))


STAGES: dict[str, Callable[..., Program]] = {
    "ttt": _ttt_step, "prefill": _prefill, "decode": _decode_loop, "scoring": _scoring, "dfs": _dfs_step}


def from_pipeline_config(cfg: Any, mcfg: ModelConfig) -> Shapes:
  """The shapes the pipeline gives each stage under ``cfg`` (experiments/configs/pipeline.py):
  TTT groups of ``ttt.group_size`` tasks x ``ttt.batch_size`` x ``ttt.max_tokens``; decoding and
  scoring calls of ``infer.group_size`` tasks, rows per task as ``infer.max_rows`` /
  ``select.max_rows`` allot them (at least 8), contexts of ``infer.max_tokens`` with a 30x30
  answer's budget."""
  from ttt_jax.infer import views  # pylint: disable=g-import-not-at-top
  context = min(cfg.infer.max_tokens, mcfg.max_seq_len)
  budget = str(cfg.infer.answer_budget)  # "demos" depends on the tasks: plan for the full budget
  answer = int(budget) if budget.isdigit() else views.FULL_ANSWER_TOKENS
  if answer >= context:
    raise ValueError(f"a context of {context} tokens ({mcfg.name}, infer.max_tokens={cfg.infer.max_tokens}) "
                     f"leaves no room for a prompt before {answer} answer tokens (infer.answer_budget)")
  K = cfg.infer.group_size
  per_task = lambda max_rows: max(8, (max_rows or 8 * K) // K // 8 * 8)
  return Shapes(ttt_tasks=cfg.ttt.group_size, ttt_batch=cfg.ttt.batch_size,
                ttt_tokens=min(cfg.ttt.max_tokens, mcfg.max_seq_len), infer_tasks=K,
                decode_rows=per_task(cfg.infer.max_rows), prompt_tokens=context - answer,
                answer_tokens=answer, score_rows=per_task(cfg.select.max_rows), score_tokens=context)


def markdown_table(rows: Sequence[StageMemory], devices: Optional[dict[str, float]] = None) -> str:
  devices = DEVICES_GIB if devices is None else devices
  gib = lambda b: f"{b / GIB:.2f}"
  head = ["stage", "shapes", "arguments GiB", "temporaries GiB", "peak GiB"] + [f"fits {d}" for d in devices]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    fits = ["yes" if r.peak_bytes <= g * GIB else "**no**" for g in devices.values()]
    lines.append("| " + " | ".join([r.stage, r.shapes, gib(r.argument_bytes), gib(r.temp_bytes),
                                    gib(r.peak_bytes)] + fits) + " |")
  return "\n".join(lines)


def fits(rows: Sequence[StageMemory], gib: float) -> bool:
  return all(r.peak_bytes <= gib * GIB for r in rows)


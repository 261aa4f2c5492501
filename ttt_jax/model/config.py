"""Model configuration: one frozen dataclass and named presets.

A ``ModelConfig`` is hashable, so it can be a static argument of ``jax.jit``.
``rope_scaling`` mirrors HF's ``rope_scaling`` / ``rope_parameters`` dict for
the ``llama3`` type (keys ``rope_type``, ``factor``, ``low_freq_factor``,
``high_freq_factor``, ``original_max_position_embeddings``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from ttt_jax.data import tokens

# LoRA's defaults, for every binary (``lora.LoraConfig`` and each config's ``lora`` section,
# ``overrides.lora_section``); here because config files import this module without jax.
LORA_DEFAULTS = {"rank": 64, "alpha": 16.0, "targets": ("q", "v", "o", "gate", "up", "down")}

_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder-only Llama-style transformer (RMSNorm, RoPE, GQA, SwiGLU)."""

  vocab_size: int
  dim: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  ffn_dim: int
  rope_theta: float = 10_000.0
  rope_scaling: Optional[Mapping[str, Any]] = None
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  max_seq_len: int = 8192
  dtype: str = "bfloat16"  # activations / matmul inputs
  param_dtype: str = "float32"  # parameters as created by init_params
  remat: bool = False  # recompute each layer in the backward pass
  # None/"xla": jax.nn.dot_product_attention with an explicit Bx1xTxS mask (XLA; scores are
  # materialised). "cudnn": cuDNN flash attention with is_causal + per-row lengths, no mask or
  # scores, for training and for prefill into a fresh cache (rows must hold one contiguous run
  # of real tokens: right or left padding). It falls back to the XLA path for single-token
  # decode steps and chunks written into a non-empty cache, and for float32 or a head_dim not a
  # multiple of 8 up to 128. See ttt_jax.model.transformer.uses_fused_attention. "blocked": the
  # explicit mask, one block of queries at a time over the keys up to it (no cache only), which
  # skips the masked upper triangle: the CPU's choice (transformer.blocked_causal_attention).
  # "flash": the fused algorithm in pure JAX (ttt_jax.model.flash_attention), memory linear in
  # T, any dtype or backend; no cache only (decode steps run cached_attention).
  attention_impl: Optional[str] = None
  init_std: float = 0.02
  # Learned row/column/role embeddings derived from the compact-vocabulary token stream
  # (ttt_jax.model.grid_positions), added to the token embedding; RoPE stays 1-D. Not a
  # Llama feature: such a model cannot be exported to HF/PEFT.
  grid_positions: bool = False
  # 3-D RoPE (mdlARC's positions): the rotary pairs of every head split into four equal
  # sections, rotated by the token's sequence position, grid row, grid column and grid role
  # (the grid_positions coordinates), each section with its own frequency ladder. Independent
  # of grid_positions (the learned embeddings); not exportable to HF/PEFT either.
  rope_grid: bool = False
  name: str = "custom"

  def __post_init__(self):
    where = f"ModelConfig({self.name!r})"
    for f in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "max_seq_len"):
      if int(getattr(self, f)) <= 0:
        raise ValueError(f"{where}: {f} must be positive, got {getattr(self, f)}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"{where}: n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"{where}: head_dim={self.head_dim} must be even for RoPE")
    if self.grid_positions and self.vocab_size != tokens.VOCAB_SIZE:
      raise ValueError(f"{where}: grid_positions needs the compact ARC vocabulary "
                       f"(vocab_size={tokens.VOCAB_SIZE}), got vocab_size={self.vocab_size}")
    if self.rope_grid and self.vocab_size != tokens.VOCAB_SIZE:
      raise ValueError(f"{where}: rope_grid needs the compact ARC vocabulary "
                       f"(vocab_size={tokens.VOCAB_SIZE}), got vocab_size={self.vocab_size}")
    if self.rope_grid and self.head_dim % 8:
      raise ValueError(f"{where}: rope_grid splits each head's rotary pairs in four sections: head_dim "
                       f"must be a multiple of 8, got {self.head_dim}")
    if self.attention_impl not in (None, "xla", "cudnn", "blocked", "flash"):
      raise ValueError(f"{where}: attention_impl must be None, 'xla', 'cudnn', 'blocked' or 'flash', "
                       f"got {self.attention_impl!r}")
    if self.rope_scaling is not None:
      rs = dict(self.rope_scaling)
      kind = rs.get("rope_type", rs.get("type"))
      if kind not in ("llama3", "default"):
        raise ValueError(f"{where}: only 'llama3' rope scaling is supported, got {kind!r}")
      if kind == "default":
        rs = None
      else:
        missing = [k for k in _LLAMA3_KEYS if k not in rs]
        if missing:
          raise ValueError(f"{where}: llama3 rope_scaling lacks {missing}")
        rs = {"rope_type": "llama3", **{k: float(rs[k]) for k in _LLAMA3_KEYS}}
        rs["original_max_position_embeddings"] = int(rs["original_max_position_embeddings"])
      object.__setattr__(self, "rope_scaling", rs)

  def __hash__(self):
    items = []
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      items.append(tuple(sorted(v.items())) if isinstance(v, Mapping) else v)
    return hash(tuple(items))

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  @property
  def q_dim(self) -> int:
    return self.n_heads * self.head_dim

  @property
  def kv_dim(self) -> int:
    return self.n_kv_heads * self.head_dim

  @property
  def num_params(self) -> int:
    """Parameters of the model this config builds (``transformer.init_params``), from its shape
    alone: embeddings, head unless tied, attention, MLP, norms and grid-position tables."""
    d = self.dim
    layer = d * (self.q_dim + 2 * self.kv_dim) + self.q_dim * d + 3 * d * self.ffn_dim + 2 * d
    from ttt_jax.model import grid_positions  # pylint: disable=g-import-not-at-top (jax; config stays light)
    grid = d * (2 * grid_positions.MAX_COORD + grid_positions.NUM_ROLES) if self.grid_positions else 0
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + head + self.n_layers * layer + d + grid


def _llama3(factor: float, original: int = 8192) -> dict:
  return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": original}


_LLAMA_VOCAB = 128_256

PRESETS: dict[str, ModelConfig] = {
    # For unit tests: a few thousand parameters, GQA on.
    "tiny": ModelConfig(vocab_size=tokens.VOCAB_SIZE, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                        ffn_dim=128, max_seq_len=512, name="tiny"),
    # From-scratch ARC model on the compact vocabulary (~25M parameters). 8192 tokens of context, as in the
    # paper's cap on TTT examples.
    "arc-small": ModelConfig(vocab_size=tokens.VOCAB_SIZE, dim=512, n_layers=8, n_heads=8, n_kv_heads=4,
                             head_dim=64, ffn_dim=1536, rope_theta=100_000.0, max_seq_len=8192, name="arc-small"),
    # From-scratch ARC model sized for a 2-core CPU (0.8M parameters; docs/training.md says why):
    # float32 (CPUs have no fast bf16 matmul), grid-aware positions, 2048 tokens of context.
    "arc-cpu": ModelConfig(vocab_size=tokens.VOCAB_SIZE, dim=128, n_layers=4, n_heads=4, n_kv_heads=2,
                           head_dim=32, ffn_dim=384, max_seq_len=2048, dtype="float32",
                           grid_positions=True, name="arc-cpu"),
    "llama-3.2-1b": ModelConfig(vocab_size=_LLAMA_VOCAB, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                                head_dim=64, ffn_dim=8192, rope_theta=500_000.0, rope_scaling=_llama3(32.0),
                                tie_embeddings=True, max_seq_len=131_072, name="llama-3.2-1b"),
    "llama-3.2-3b": ModelConfig(vocab_size=_LLAMA_VOCAB, dim=3072, n_layers=28, n_heads=24, n_kv_heads=8,
                                head_dim=128, ffn_dim=8192, rope_theta=500_000.0, rope_scaling=_llama3(32.0),
                                tie_embeddings=True, max_seq_len=131_072, name="llama-3.2-3b"),
    "llama-3-8b": ModelConfig(vocab_size=_LLAMA_VOCAB, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                              head_dim=128, ffn_dim=14_336, rope_theta=500_000.0, max_seq_len=8192,
                              name="llama-3-8b"),
    "llama-3.1-8b": ModelConfig(vocab_size=_LLAMA_VOCAB, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                                head_dim=128, ffn_dim=14_336, rope_theta=500_000.0, rope_scaling=_llama3(8.0),
                                max_seq_len=131_072, name="llama-3.1-8b"),
}


def get_config(name: str, /, **overrides) -> ModelConfig:
  """Returns the preset ``name`` with optional field overrides (``name=`` among them renames it)."""
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  cfg = PRESETS[name]
  return cfg.replace(**overrides) if overrides else cfg


def from_hf_config(hf: Mapping[str, Any], **overrides) -> ModelConfig:
  """Builds a ModelConfig from a parsed HF Llama ``config.json`` (old or new rope keys)."""
  model_type = hf.get("model_type", "llama")
  if model_type != "llama":
    raise ValueError(f"from_hf_config: only model_type 'llama' is supported, got {model_type!r}")
  if hf.get("attention_bias") or hf.get("mlp_bias"):
    raise ValueError("from_hf_config: attention_bias / mlp_bias are not supported")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"from_hf_config: hidden_act must be 'silu', got {hf.get('hidden_act')!r}")
  rope = dict(hf.get("rope_parameters") or {})  # transformers>=5 layout
  theta = rope.pop("rope_theta", hf.get("rope_theta", 10_000.0))
  scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
  n_heads = hf["num_attention_heads"]
  kw = dict(
      vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=n_heads,
      n_kv_heads=hf.get("num_key_value_heads") or n_heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads, ffn_dim=hf["intermediate_size"],
      rope_theta=float(theta), rope_scaling=scaling, norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_seq_len=hf.get("max_position_embeddings", 8192), name=hf.get("_name_or_path") or "hf")
  kw.update(overrides)
  return ModelConfig(**kw)


def to_hf_config(cfg: ModelConfig) -> dict:
  """The HF ``config.json`` dict for ``cfg`` (used for PEFT export and tests)."""
  if cfg.grid_positions or cfg.rope_grid:
    raise ValueError(f"ModelConfig({cfg.name!r}) uses grid_positions or rope_grid (row/column/role "
                     "positions), which HF LlamaForCausalLM has no equivalent for: it cannot be exported "
                     "to HF/PEFT")
  return {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "intermediate_size": cfg.ffn_dim,
      "rope_theta": cfg.rope_theta, "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
      "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
      "max_position_embeddings": cfg.max_seq_len, "hidden_act": "silu", "attention_bias": False,
      "mlp_bias": False,
  }

"""``model_overrides``: ModelConfig fields as command-line flags, and the ones actually set.

ml_collections only accepts ``--config.a.b=...`` for keys the config already has, and parses a
value by the key's type. So a config's ``model_overrides`` section holds every ModelConfig field
as a typed placeholder (``None`` = not overridden); ``set_overrides`` drops the unset ones before
they reach ``ModelConfig.replace``, so an untouched section changes nothing.

``rope_scaling`` (a mapping) is left out: ml_collections cannot parse a dict from a flag. Set it
from Python, or through a model directory's ``config.json``.

``attention_impl="auto"`` (a section value only, resolved by ``set_overrides``) picks by backend:
cuDNN's fused attention on a GPU, else the pure-JAX blockwise ``flash`` form; both keep
attention memory linear in the context, where XLA's default keeps every T x T score.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Optional

from ml_collections import config_dict

from ttt_jax.model.config import LORA_DEFAULTS, ModelConfig

_FLAG_TYPES = (bool, int, float, str)


def _flag_type(hint: Any) -> Optional[type]:
  """``hint`` as a type ml_collections parses from a flag (``Optional[X]`` -> X), else None."""
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is typing.Union and len(args) == 1:
    hint = args[0]
  return hint if hint in _FLAG_TYPES else None


def field_types() -> dict[str, type]:
  """ModelConfig field -> flag type, for every field a flag can set (all but ``rope_scaling``)."""
  hints = typing.get_type_hints(ModelConfig)
  out = {}
  for f in dataclasses.fields(ModelConfig):
    t = _flag_type(hints[f.name])
    if t is not None:
      out[f.name] = t
  return out


def override_fields(**preset: Any) -> config_dict.ConfigDict:
  """A ``model_overrides`` section: every flag-settable field, unset (None) unless ``preset``
  gives it a value (a config preset's own choices, e.g. ``dtype="float32"``)."""
  types = field_types()
  unknown = sorted(set(preset) - set(types))
  if unknown:
    raise ValueError(f"not a command-line ModelConfig field: {unknown}; known: {sorted(types)}")
  return config_dict.ConfigDict({
      name: config_dict.FieldReference(preset.get(name), field_type=t) for name, t in types.items()})


def auto_attention() -> str:
  """What ``attention_impl="auto"`` means on this process's default backend."""
  import jax  # deferred: config files import this module
  return "cudnn" if jax.default_backend() == "gpu" else "flash"


def set_overrides(section: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """The overrides a ``model_overrides`` section (or plain dict, or None) actually sets, with
  ``attention_impl="auto"`` resolved for this backend."""
  out = {k: v for k, v in dict(section or {}).items() if v is not None}
  if out.get("attention_impl") == "auto":
    out["attention_impl"] = auto_attention()
  return out


def lora_section(**preset: Any) -> config_dict.ConfigDict:
  """The ``lora`` section every config binary has (rank, alpha, targets): ``LoraConfig``'s
  defaults unless ``preset`` sets a field; extra keys (e.g. ``enabled``) are kept."""
  return config_dict.ConfigDict({**LORA_DEFAULTS, **preset})

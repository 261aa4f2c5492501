"""One entry point for the config binaries: flag and config-field mistakes in one line, exit 2.

A misspelled ``--config.lora.rnak=8`` otherwise surfaces as dozens of lines of chained
tracebacks from inside ml_collections, with its "did you mean" hint escaped and buried.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, NoReturn

from absl import app, flags
from ml_collections import config_flags

_HINT = re.compile(r'Did you mean "([^"]+)" instead of "([^"]+)"\?')
_SHOW = flags.DEFINE_bool("show_config", False, "print every field of the --config preset with its value "
                          "(overrides applied) and exit; the config file's comments say what each means")


def describe(error: BaseException) -> str:
  """One line for a flag-parsing error, keeping ml_collections' "did you mean" hint."""
  text = str(error)
  if "\\n" in text:  # ml_collections' AttributeError holds the repr of its message
    text = text.encode().decode("unicode_escape")
  m = _HINT.search(text)
  if m:
    return f"no config field {m.group(2)!r} (did you mean {m.group(1)!r}?)"
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  last = lines[-1] if lines else type(error).__name__
  name = last.strip("'\"")
  if isinstance(error, (AttributeError, KeyError)) and name.isidentifier():
    return f"no config field {name!r}"
  return last


def _parse(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS:  # a config file without --config on the command line loads lazily
      getattr(flags.FLAGS, "config")
    return rest
  except Exception as e:  # pylint: disable=broad-except  # any mistake in a flag or a config field
    _usage_error(argv[0], describe(e))


def _usage_error(prog: str, message: str) -> NoReturn:
  sys.stderr.write(f"{os.path.basename(prog)}: {message}\n(--helpfull lists the flags; config fields "
                   f"are in the --config file's get_config)\n")
  sys.exit(2)


def define_config_file(name: str, default: str, help_string: str):
  """``config_flags.DEFINE_config_file``; with the default file, ml_collections applies the
  command line's ``--config.*`` overrides right here, so their mistakes are reported here too."""
  try:
    return config_flags.DEFINE_config_file(name, default, help_string)
  except Exception as e:  # pylint: disable=broad-except
    _usage_error(sys.argv[0], describe(e))


def config_lines(cfg: Any, prefix: str = "--config.") -> list[str]:
  """``--config.a.b=value`` for every leaf field of a ConfigDict (the form an override takes)."""
  out = []
  for key in sorted(cfg.keys()):
    value = cfg[key]
    if hasattr(value, "keys") and hasattr(value, "items"):
      out += config_lines(value, f"{prefix}{key}.")
    else:
      text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
      out.append(f"{prefix}{key}={text}")
  return out


def _show_or(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """``main``, after ``--show_config``; a task set that names nothing is a one-line error."""
  from ttt_jax.arc.io import TaskSetError  # pylint: disable=g-import-not-at-top

  def wrapped(argv: list[str]) -> None:
    if _SHOW.value and "config" in flags.FLAGS:
      print(f"# {flags.FLAGS['config'].config_filename}")  # pylint: disable=unsubscriptable-object
      print("\n".join(config_lines(flags.FLAGS.config)))
      return
    try:
      main(argv)
    except TaskSetError as e:
      _usage_error(argv[0], str(e))
  return wrapped


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run`` whose flag parsing reports mistakes in one or two lines with exit code 2;
  ``--show_config`` lists the config's fields instead of running."""
  app.run(_show_or(main), flags_parser=_parse)

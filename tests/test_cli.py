"""Config binaries report a mistaken flag or config field in one or two lines, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments import cli


def _run(*args):
  r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)
  return r.returncode, [ln for ln in r.stderr.splitlines() if not ln.startswith(("I1", "W1"))]


@pytest.mark.parametrize("args,expect", [
    # a field given with an explicit --config (parsed with the flags)
    (("experiments.taskemb_train", "--config=experiments/configs/taskemb.py:quick", "--config.max_minuts=1"),
     "no config field 'max_minuts' (did you mean 'max_minutes'?)"),
    # the default config file: ml_collections applies overrides when the flag is defined
    (("experiments.pipeline", "--config.lora.rnak=8"), "no config field 'rnak' (did you mean 'rank'?)"),
    (("experiments.taskemb_train", "--config.steps=abc"), "invalid literal for int()"),
])
def test_a_mistake_is_one_line_with_its_hint_and_exit_code_2(args, expect):
  rc, err = _run(*args)
  assert rc == 2 and len(err) <= 2 and expect in err[0], err


def test_describe_keeps_the_hint_and_names_a_bare_field():
  escaped = AttributeError('\'rnk\'\nDid you mean "rank" instead of "rnk"?')
  assert cli.describe(escaped) == "no config field 'rnk' (did you mean 'rank'?)"
  assert cli.describe(KeyError("'nn'")) == "no config field 'nn'"
  assert cli.describe(ValueError("line one\nthe reason")) == "the reason"


def test_show_config_lists_every_field_as_an_override_with_overrides_applied():
  r = subprocess.run([sys.executable, "-m", "experiments.taskemb_train", "--config=experiments/configs/taskemb.py:quick",
                      "--config.steps=3", "--show_config"], capture_output=True, text=True, timeout=120)
  lines = r.stdout.splitlines()
  assert r.returncode == 0 and lines[0] == "# experiments/configs/taskemb.py:quick"
  assert "--config.steps=3" in lines and "--config.buckets=64,128,256" in lines
  from experiments.configs import taskemb
  assert len(lines) - 1 == len(cli.config_lines(taskemb.get_config("quick")))  # every field, nothing run


def test_a_task_set_that_names_nothing_is_one_line_and_leaves_no_out_dir(tmp_path):
  out = tmp_path / "run"
  rc, err = _run("experiments.pipeline", "--config.tasks=/nonexistent/tasks.json", f"--config.out_dir={out}")
  assert rc == 2 and len(err) <= 2 and "no task set or file named '/nonexistent/tasks.json'" in err[0], err
  assert not out.exists()

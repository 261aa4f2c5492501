#!/usr/bin/env python3
r"""Runs one ttt_jax binary on every worker of a Cloud TPU VM (a single host or a pod slice).

  python launch/tpu_pod.py --name=ttt-v4-32 --zone=us-central2-b --accelerator=v4-32 \
      --out_dir=/mnt/runs/dev80 --delete -- \
      experiments.pipeline --config=experiments/configs/pipeline.py:paper \
      --config.model_dir=/mnt/models/arc_1b

Steps, each one ``gcloud`` command (``--dry-run`` prints them all and runs nothing):
  1. reuse the TPU VM ``--name`` if ``gcloud ... describe`` finds it, else create it
     (``--spot`` for spot capacity);
  2. put the code on every worker: ``--code=copy`` (default) ships this checkout's tracked files
     as a tarball with ``scp --worker=all``; ``--code=git`` clones ``--repo`` at ``--branch``;
  3. install it on every worker (``pip install 'jax[tpu]'`` and the package, plus ``--setup``);
  4. run ``python -m BINARY ARGS`` on all workers at once with ``TTT_JAX_MULTIHOST=1``, so JAX
     discovers the pod, and stream every worker's log here (also kept in ``~/ttt_jax_run.log``);
  5. with ``--delete``, delete the TPU VM afterwards (also when the run failed).

The binary's output directory must be one every worker sees (a Filestore/NFS mount or a
gcsfuse-mounted bucket, mounted by ``--setup``); process 0 writes the final files there.
Only the Python standard library is used, so this runs from any machine with gcloud.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

REMOTE_DIR = "ttt_jax"  # relative to the remote home directory
REMOTE_LOG = "~/ttt_jax_run.log"
TARBALL = "ttt_jax_code.tar.gz"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Everything after the binary name is passed to the binary.")
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default="", help="GCP project (default: gcloud's)")
  p.add_argument("--accelerator", default="v4-8", help="accelerator type, e.g. v4-32, v5p-64")
  p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software version")
  p.add_argument("--spot", action="store_true", help="create the VM on spot capacity")
  p.add_argument("--code", choices=("copy", "git"), default="copy",
                 help="copy this checkout's tracked files, or clone --repo on the workers")
  p.add_argument("--repo", default="", help="git URL for --code=git")
  p.add_argument("--branch", default="main", help="branch or tag for --code=git")
  p.add_argument("--setup", default="",
                 help="extra shell run on every worker before installing (e.g. mount a bucket)")
  p.add_argument("--jax_spec", default="jax[tpu]", help="pip requirement for JAX on TPU")
  p.add_argument("--no_install", action="store_true", help="skip the pip install step")
  p.add_argument("--out_dir", default="",
                 help="passed to the binary as --config.out_dir (must be shared by the workers)")
  p.add_argument("--delete", action="store_true", help="delete the TPU VM when done")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print every command, run none")
  p.add_argument("binary", help="module to run, e.g. experiments.pipeline")
  p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the binary")
  a = p.parse_args(argv)
  if a.code == "git" and not a.repo:
    p.error("--code=git needs --repo")
  if not a.binary.replace("_", "").replace(".", "").isalnum():
    p.error(f"binary must be a module name like experiments.pipeline, got {a.binary!r}")
  if a.args and a.args[0] == "--":
    a.args = a.args[1:]
  return a


def _gcloud(a: argparse.Namespace, verb: str, *rest: str) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, f"--zone={a.zone}"]
  if a.project:
    cmd.append(f"--project={a.project}")
  return cmd


def _ssh(a: argparse.Namespace, remote: str) -> list[str]:
  return _gcloud(a, "ssh", a.name, "--worker=all", f"--command={remote}")


def describe_command(a: argparse.Namespace) -> list[str]:
  return _gcloud(a, "describe", a.name, "--format=value(state)")


def create_command(a: argparse.Namespace) -> list[str]:
  cmd = _gcloud(a, "create", a.name, f"--accelerator-type={a.accelerator}",
                f"--version={a.version}")
  return cmd + (["--spot"] if a.spot else [])


def code_commands(a: argparse.Namespace, tarball: str) -> list[list[str]]:
  if a.code == "git":
    clone = (f"if [ -d {REMOTE_DIR}/.git ]; then git -C {REMOTE_DIR} fetch origin "
             f"{shlex.quote(a.branch)} && git -C {REMOTE_DIR} checkout --force FETCH_HEAD; "
             f"else git clone --branch {shlex.quote(a.branch)} {shlex.quote(a.repo)} "
             f"{REMOTE_DIR}; fi")
    return [_ssh(a, clone)]
  return [_gcloud(a, "scp", tarball, f"{a.name}:~/{TARBALL}", "--worker=all"),
          _ssh(a, f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && "
                  f"tar -xzf ~/{TARBALL} -C {REMOTE_DIR}")]


def install_command(a: argparse.Namespace) -> list[str]:
  steps = [a.setup] if a.setup else []
  if not a.no_install:
    steps.append(f"cd {REMOTE_DIR} && python3 -m pip install -q -U "
                 f"{shlex.quote(a.jax_spec)} && python3 -m pip install -q -e .")
  return _ssh(a, " && ".join(steps)) if steps else []


def run_command(a: argparse.Namespace) -> list[str]:
  args = list(a.args) + ([f"--config.out_dir={a.out_dir}"] if a.out_dir else [])
  binary = " ".join(shlex.quote(x) for x in ["python3", "-m", a.binary, *args])
  remote = (f"cd {REMOTE_DIR} && TTT_JAX_MULTIHOST=1 {binary} 2>&1 | tee {REMOTE_LOG}; "
            "exit ${PIPESTATUS[0]}")
  return _ssh(a, remote)


def delete_command(a: argparse.Namespace) -> list[str]:
  return _gcloud(a, "delete", a.name, "--quiet")


def tar_command(tarball: str, repo_root: str) -> list[str]:
  """The checkout's tracked files (what ``git ls-files`` lists), working-tree versions."""
  return ["bash", "-c", f"cd {shlex.quote(repo_root)} && git ls-files -z | "
                        f"tar --null -T - -czf {shlex.quote(tarball)}"]


class Runner:
  """Runs (or, dry, prints) commands; every command is echoed as one shell line."""

  def __init__(self, dry_run: bool, out=sys.stdout):
    self.dry_run, self.out = dry_run, out

  def __call__(self, cmd: list[str], check: bool = True, quiet: bool = False) -> int:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=self.out, flush=True)
    if self.dry_run:
      return 0
    kw = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
    rc = subprocess.run(cmd, check=False, **kw).returncode
    if check and rc:
      raise SystemExit(f"command failed with exit status {rc}: {cmd[:6]}")
    return rc


def main(argv: Optional[Sequence[str]] = None, out=sys.stdout) -> int:
  a = parse_args(sys.argv[1:] if argv is None else argv)
  run = Runner(a.dry_run, out)
  if a.dry_run:
    print("# dry run: the TPU VM is created only if describe fails", file=out)
  if run(describe_command(a), check=False, quiet=True) != 0 or a.dry_run:
    run(create_command(a))
  repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tmp:
    tarball = os.path.join(tmp, TARBALL)
    try:
      if a.code == "copy":
        run(tar_command(tarball, repo_root))
      for cmd in code_commands(a, tarball):
        run(cmd)
      install = install_command(a)
      if install:
        run(install)
      rc = run(run_command(a), check=False)
    finally:
      if a.delete:
        run(delete_command(a), check=False)
  if rc:
    print(f"# the run failed on some worker (exit status {rc}); logs: {REMOTE_LOG} on each "
          "worker", file=out)
  return rc


if __name__ == "__main__":
  sys.exit(main())

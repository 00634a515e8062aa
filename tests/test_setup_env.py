"""scripts/setup_env.sh: which TensorFlow build it picks, and the Python preflight.

It runs in a copy of the files it reads, with stand-ins for `nvidia-smi` and for interpreters on
PATH; `--plan` prints its choices without installing, and the preflight stops before any venv is
made, so no test here builds an environment or needs the network.
"""

import os
import re
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASH = shutil.which("bash")
ENV_FILES = ["requirements.txt", "requirements-common.txt", "requirements-gpu.txt",
             "requirements-dlib.txt", "setup.py", "scripts/setup_env.sh"]
NO_DRIVER = ("echo 'NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.' >&2\n"
             "exit 9")


def _executable(path, body):
  path.write_text("#!/bin/sh\n" + body + "\n")
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tree(tmp_path):
  """A copy of what setup_env.sh reads, and an empty bin of stand-ins put first on PATH."""
  root = tmp_path / "repo"
  for name in ENV_FILES:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(REPO, name), root / name)
  shutil.copytree(os.path.join(REPO, "bin"), root / "bin")
  (tmp_path / "stand_ins").mkdir()
  return root


def setup_env(root, *args, path=None, **env):
  stand_ins = root.parent / "stand_ins"
  full_env = {k: v for k, v in os.environ.items() if k not in ("LIEVAE_TF_BUILD", "PYTHON")}
  full_env.update(env, PATH=f"{stand_ins}:{path or os.environ['PATH']}")
  return subprocess.run([BASH, str(root / "scripts/setup_env.sh"), *args], env=full_env,
                        capture_output=True, text=True, timeout=120)


def plan(root, **env):
  result = setup_env(root, "--plan", **env)
  assert result.returncode == 0, result.stderr
  assert not (root / ".venv").exists()
  return result.stderr


def nvidia_smi(root, body):
  _executable(root.parent / "stand_ins" / "nvidia-smi", body)


def test_gpu_build_when_nvidia_smi_lists_gpus(tree):
  nvidia_smi(tree, "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0)'\n"
                   "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-1)'")
  out = plan(tree)
  assert "TensorFlow build: gpu (nvidia-smi -L lists 2 GPU(s)" in out
  assert "pip install -r requirements-gpu.txt\n" in out
  assert "pip install -e .[test,torch,gpu]\n" in out


def test_cpu_build_when_nvidia_smi_finds_no_driver(tree):
  nvidia_smi(tree, NO_DRIVER)
  out = plan(tree)
  assert "TensorFlow build: cpu (no GPU listed by nvidia-smi -L" in out
  assert "pip install -r requirements.txt\n" in out
  assert "pip install -e .[test,torch,cpu]\n" in out


def test_override_wins_and_the_stamp_names_the_build(tree):
  nvidia_smi(tree, "echo 'GPU 0: Tesla T4 (UUID: GPU-0)'")
  cpu = plan(tree, LIEVAE_TF_BUILD="cpu")
  assert "TensorFlow build: cpu (LIEVAE_TF_BUILD=cpu" in cpu
  nvidia_smi(tree, NO_DRIVER)
  gpu = plan(tree, LIEVAE_TF_BUILD="gpu")
  assert "TensorFlow build: gpu (LIEVAE_TF_BUILD=gpu" in gpu
  stamps = [re.search(r"stamp: (\w+)", out).group(1) for out in (cpu, gpu, plan(tree))]
  assert stamps[0] != stamps[1]  # switching builds rebuilds .venv
  assert stamps[0] == stamps[2]  # detection and override agree on one stamp per build


def test_unknown_build_is_one_line(tree):
  result = setup_env(tree, "--plan", LIEVAE_TF_BUILD="tpu")
  assert result.returncode == 1
  assert result.stderr.count("\n") == 1
  assert "LIEVAE_TF_BUILD=tpu is neither cpu nor gpu" in result.stderr


def _tools_without_python(tmp_path):
  """A PATH of the commands setup_env.sh uses and no interpreter: a machine with no Python 3.11."""
  tools = tmp_path / "tools"
  tools.mkdir()
  for name in ["bash", "cat", "cut", "dirname", "find", "grep", "sha256sum", "sort", "tail",
               "timeout", "xargs"]:
    os.symlink(shutil.which(name), tools / name)
  return str(tools)


def test_only_python_313_stops_before_installing_with_one_line(tree, tmp_path):
  calls = tmp_path / "interpreter_calls"
  for name in ("python3", "python3.13"):
    # Answers the version query as Python 3.13 does, and logs every call.
    _executable(tmp_path / "stand_ins" / name, f'echo "$@" >> {calls}\necho 3.13')
  nvidia_smi(tree, NO_DRIVER)
  result = setup_env(tree, path=_tools_without_python(tmp_path))  # the real install path
  assert result.returncode == 1
  line = result.stderr
  assert line.count("\n") == 1, line
  assert "python3 (Python 3.13) cannot run this project" in line
  assert "disentanglement_lib needs TensorFlow 2.15's TF1 APIs" in line
  assert "TF 2.15 supports Python 3.9-3.11 only" in line
  for way in ("PYTHON=", "pyenv install 3.11", "uv python install 3.11", "conda create"):
    assert way in line
  assert line.rstrip().endswith("Interpreters on PATH: python3 (3.13), python3.13 (3.13).")
  assert not (tree / ".venv").exists()
  assert "-m" not in calls.read_text().split()  # never asked to make a venv or run pip


def test_python_variable_is_checked(tree, tmp_path):
  nvidia_smi(tree, NO_DRIVER)
  _executable(tmp_path / "stand_ins" / "python3.13", "echo 3.13")
  result = setup_env(tree, PYTHON="python3.13")
  assert result.returncode == 1 and result.stderr.count("\n") == 1
  assert "python3.13 (Python 3.13) cannot run this project" in result.stderr
  assert "python3.13 (3.13)" in result.stderr.split("Interpreters on PATH:")[1]
  result = setup_env(tree, PYTHON="python3.99-missing")
  assert result.returncode == 1 and result.stderr.count("\n") == 1
  assert "PYTHON=python3.99-missing is not an interpreter" in result.stderr
  # A supported version passes the preflight (the stand-in also answers the venv check).
  _executable(tmp_path / "stand_ins" / "python3.11", "echo 3.11")
  assert "Python: python3.11 (3.11)" in plan(tree, PYTHON="python3.11")


def test_one_tensorflow_release_for_both_builds():
  def pins(name):
    with open(os.path.join(REPO, name)) as f:
      return re.findall(r"^(tensorflow(?:-cpu|\[and-cuda\])?)==(\S+)", f.read(), re.M)

  assert pins("requirements-common.txt") == []  # shared pins hold no TF build
  (cpu_name, cpu_version), = pins("requirements.txt")
  (gpu_name, gpu_version), = pins("requirements-gpu.txt")
  assert (cpu_name, gpu_name) == ("tensorflow-cpu", "tensorflow[and-cuda]")
  assert cpu_version == gpu_version

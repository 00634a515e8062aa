"""scripts/setup_env.sh: which stack and TensorFlow build it picks, and the Python preflight.

It runs in a copy of the files it reads, with stand-ins for `nvidia-smi` and for the interpreters
on PATH (the machine's own interpreters are never on its PATH, so no test depends on which Pythons
this machine has); `--plan` prints its choices without installing, and the preflight stops before
any venv is made, so no test here builds an environment or needs the network.
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
             "requirements-current.txt", "requirements-current-common.txt",
             "requirements-current-gpu.txt", "requirements-current-nodeps.txt",
             "requirements-dlib.txt", "pyproject.toml", "setup.py",
             "scripts/setup_env.sh"]
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
  full_env = {k: v for k, v in os.environ.items()
              if k not in ("LIEVAE_TF_BUILD", "LIEVAE_TF_STACK", "LIEVAE_TF_VENV", "PYTHON")}
  full_env.update(env, PATH=f"{stand_ins}:{path or os.environ['PATH']}")
  return subprocess.run([BASH, str(root / "scripts/setup_env.sh"), *args], env=full_env,
                        capture_output=True, text=True, timeout=120)


def plan(root, path=None, **env):
  result = setup_env(root, "--plan", path=path, **env)
  assert result.returncode == 0, result.stderr
  assert not (root / ".venv").exists()
  return result.stderr


def nvidia_smi(root, body):
  _executable(root.parent / "stand_ins" / "nvidia-smi", body)


def test_gpu_build_when_nvidia_smi_lists_gpus(tree, tmp_path):
  tools = _tools_and_pythons(tmp_path, "3.13", "3.11")
  nvidia_smi(tree, "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0)'\n"
                   "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-1)'")
  out = plan(tree, path=tools)
  assert "TensorFlow build: gpu (nvidia-smi -L lists 2 GPU(s)" in out
  assert "pip install -r requirements-current-gpu.txt\n" in out
  assert "pip install -e .[test]\n" in out
  out = plan(tree, path=tools, LIEVAE_TF_STACK="pinned")
  assert "pip install -r requirements-gpu.txt\n" in out


def test_cpu_build_when_nvidia_smi_finds_no_driver(tree, tmp_path):
  tools = _tools_and_pythons(tmp_path, "3.13", "3.11")
  nvidia_smi(tree, NO_DRIVER)
  out = plan(tree, path=tools)
  assert "TensorFlow build: cpu (no GPU listed by nvidia-smi -L" in out
  assert "pip install -r requirements-current.txt\n" in out
  assert "pip install -e .[test]\n" in out
  out = plan(tree, path=tools, LIEVAE_TF_STACK="pinned")
  assert "pip install -r requirements.txt\n" in out


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


def test_a_venv_holding_the_other_tf_wheel_is_rebuilt_not_refreshed(tree):
  """Before tensorflow-cpu, the current stack's CPU build was the `tensorflow` wheel: both install
  the same files, so installing one over the other would leave a mix."""
  nvidia_smi(tree, NO_DRIVER)
  venv = tree / ".venv"
  (venv / "bin").mkdir(parents=True)
  _executable(venv / "bin" / "python", "echo 3.13")
  (venv / ".lievae_tf_stack").write_text("current\n")
  (venv / ".lievae_tf_build").write_text("cpu\n")
  site_packages = venv / "lib" / "python3.13" / "site-packages"
  (site_packages / "tensorflow_cpu-2.21.0.dist-info").mkdir(parents=True)
  result = setup_env(tree, "--plan")
  assert "setup_env: .venv: refresh\n" in result.stderr, result.stderr
  (site_packages / "tensorflow-2.21.0.dist-info").mkdir()
  result = setup_env(tree, "--plan")
  assert ".venv: recreate (it holds the tensorflow wheel, not the cpu build's)" in result.stderr


def test_unknown_build_is_one_line(tree):
  result = setup_env(tree, "--plan", LIEVAE_TF_BUILD="tpu")
  assert result.returncode == 1
  assert result.stderr.count("\n") == 1
  assert "LIEVAE_TF_BUILD=tpu is neither cpu nor gpu" in result.stderr


def _tools_without_python(tmp_path):
  """A PATH of the commands setup_env.sh uses and no interpreter."""
  tools = tmp_path / "tools"
  tools.mkdir(exist_ok=True)
  for name in ["bash", "cat", "cut", "dirname", "find", "grep", "sed", "sha256sum", "sort", "tail",
               "timeout", "xargs"]:
    if not (tools / name).exists():
      os.symlink(shutil.which(name), tools / name)
  return str(tools)


def _tools_and_pythons(tmp_path, python3_version, *other_versions):
  """That PATH with stand-ins: python3 answering as `python3_version` (and python3.X as itself),
  and a python3.Y for each of `other_versions`; returns the PATH."""
  for version in (python3_version, *other_versions):
    _executable(tmp_path / "stand_ins" / f"python{version}", f"echo {version}")
  _executable(tmp_path / "stand_ins" / "python3", f"echo {python3_version}")
  return _tools_without_python(tmp_path)


def _only_python(tmp_path, version):
  """Stand-ins python3 and python3.X that answer every call as Python `version`; logs calls."""
  calls = tmp_path / "interpreter_calls"
  for name in ("python3", f"python{version}"):
    _executable(tmp_path / "stand_ins" / name, f'echo "$@" >> {calls}\necho {version}')
  return calls


def test_only_python_313_gets_the_current_stack(tree, tmp_path):
  _only_python(tmp_path, "3.13")
  nvidia_smi(tree, NO_DRIVER)
  tools = _tools_without_python(tmp_path)
  result = setup_env(tree, "--plan", path=tools)
  assert result.returncode == 0, result.stderr
  assert "Python: python3.13 (3.13; the newest Python on PATH" in result.stderr
  assert "stack: current (the default" in result.stderr
  assert "pip install -r requirements-current.txt\n" in result.stderr
  # tf-keras and hub name `tensorflow`: with their deps pip would add TF's CUDA wheel to tensorflow-cpu.
  assert "pip install --no-deps -r requirements-current-nodeps.txt\n" in result.stderr
  assert "pip install -e .[test]\n" in result.stderr  # no torch: a CUDA build on 3.13
  nvidia_smi(tree, "echo 'GPU 0: Tesla T4 (UUID: GPU-0)'")
  gpu = setup_env(tree, "--plan", path=tools)
  assert "pip install -r requirements-current-gpu.txt\n" in gpu.stderr


def test_an_unsupported_python_stops_before_installing_with_one_line(tree, tmp_path):
  calls = _only_python(tmp_path, "3.14")
  nvidia_smi(tree, NO_DRIVER)
  result = setup_env(tree, path=_tools_without_python(tmp_path))  # the real install path
  assert result.returncode == 1
  line = result.stderr
  assert line.count("\n") == 1, line
  assert "python3 (Python 3.14) cannot run this project: it needs Python 3.9-3.13" in line
  for way in ("PYTHON=", "pyenv install 3.13", "uv python install 3.13", "conda create"):
    assert way in line
  assert line.rstrip().endswith("Interpreters on PATH: python3 (3.14), python3.14 (3.14).")
  assert not (tree / ".venv").exists()
  assert "-m" not in calls.read_text().split()  # never asked to make a venv or run pip


def test_python_and_stack_variables_are_checked(tree, tmp_path):
  nvidia_smi(tree, NO_DRIVER)
  for version in ("3.11", "3.13", "3.14"):
    _executable(tmp_path / "stand_ins" / f"python{version}", f"echo {version}")
  result = setup_env(tree, PYTHON="python3.14")
  assert result.returncode == 1 and result.stderr.count("\n") == 1
  assert "python3.14 (Python 3.14) cannot run this project" in result.stderr
  assert "python3.14 (3.14)" in result.stderr.split("Interpreters on PATH:")[1]
  result = setup_env(tree, PYTHON="python3.99-missing")
  assert result.returncode == 1 and result.stderr.count("\n") == 1
  assert "PYTHON=python3.99-missing is not an interpreter" in result.stderr
  pinned_plan = plan(tree, PYTHON="python3.11", LIEVAE_TF_STACK="pinned")
  assert "stack: pinned (LIEVAE_TF_STACK=pinned)" in pinned_plan
  assert "requirements-current-nodeps.txt" not in pinned_plan
  assert "stack: current (the default" in plan(tree, PYTHON="python3.13")
  current_on_311 = plan(tree, PYTHON="python3.11")  # the default on every Python 3.10+
  assert "Python: python3.11 (3.11; PYTHON=python3.11)" in current_on_311
  assert "stack: current (the default" in current_on_311
  assert "pip install -r requirements-current.txt\n" in current_on_311
  result = setup_env(tree, "--plan", PYTHON="python3.13", LIEVAE_TF_STACK="pinned")
  assert result.returncode == 1 and result.stderr.count("\n") == 1
  assert "it needs Python 3.9-3.11 (the pinned stack, TF 2.15)" in result.stderr
  assert "pyenv install 3.11" in result.stderr  # a Python that stack can use
  result = setup_env(tree, "--plan", LIEVAE_TF_STACK="latest")
  assert result.returncode == 1 and result.stderr.count("\n") == 1
  assert "LIEVAE_TF_STACK=latest is neither pinned nor current" in result.stderr


def test_the_current_stack_on_the_newest_python_beside_an_older_one(tree, tmp_path):
  """A machine whose python3 is 3.13 and which also has 3.11 and 3.12: the current stack, on 3.13;
  the pinned stack only when asked for, on the newest Python it supports."""
  nvidia_smi(tree, NO_DRIVER)
  tools = _tools_and_pythons(tmp_path, "3.13", "3.11", "3.12")
  out = plan(tree, path=tools)
  assert "Python: python3.13 (3.13; the newest Python on PATH that the current stack" in out
  assert "stack: current (the default; LIEVAE_TF_STACK=pinned gives TF 2.15" in out
  assert "pip install -r requirements-current.txt\n" in out
  out = plan(tree, path=tools, LIEVAE_TF_STACK="pinned")
  assert "Python: python3.11 (3.11; the newest Python on PATH that the pinned stack" in out
  assert "stack: pinned (LIEVAE_TF_STACK=pinned)" in out
  assert "pip install -r requirements.txt\n" in out


def test_a_python_that_is_not_what_its_name_says_is_passed_over(tree, tmp_path):
  nvidia_smi(tree, NO_DRIVER)
  tools = _tools_and_pythons(tmp_path, "3.12", "3.11")
  _executable(tmp_path / "stand_ins" / "python3.13", "exit 1")  # a broken 3.13
  out = plan(tree, path=tools)
  assert "Python: python3.12 (3.12; the newest" in out


def test_only_python_39_gets_the_pinned_stack_and_says_why(tree, tmp_path):
  nvidia_smi(tree, NO_DRIVER)
  out = plan(tree, path=_tools_and_pythons(tmp_path, "3.9"))
  assert "Python: python3.9 (3.9; the newest" in out
  assert "stack: pinned (Python 3.9: the current stack needs 3.10+)" in out


def _fake_venv(tree, version, stack):
  venv = tree / ".venv"
  (venv / "bin").mkdir(parents=True)
  _executable(venv / "bin" / "python", f"echo {version}")
  (venv / ".lievae_tf_stack").write_text(f"{stack}\n")
  (venv / ".lievae_tf_build").write_text("cpu\n")
  return venv


def test_a_pinned_venv_of_the_old_default_is_rebuilt_as_the_current_stack(tree, tmp_path):
  nvidia_smi(tree, NO_DRIVER)
  tools = _tools_and_pythons(tmp_path, "3.11")
  _fake_venv(tree, "3.11", "pinned")
  out = setup_env(tree, "--plan", path=tools).stderr
  assert ("setup_env: .venv: recreate (it holds the pinned stack, the old default on Python 3.11: "
          "the default is now the current stack; LIEVAE_TF_STACK=pinned keeps the pinned one)"
          in out), out
  assert "pip install -r requirements-current.txt\n" in out
  kept = setup_env(tree, "--plan", path=tools, LIEVAE_TF_STACK="pinned").stderr
  assert "setup_env: .venv: refresh\n" in kept, kept
  assert "pip install -r requirements.txt\n" in kept


def test_torch_is_installed_as_its_cpu_build_only(tree, tmp_path):
  """Plain `torch` from PyPI is a CUDA build of several GB: only the `+cpu` build, where pip
  finds it, on either stack."""
  nvidia_smi(tree, NO_DRIVER)
  tools = _tools_and_pythons(tmp_path, "3.13", "3.11")
  for stack in ("current", "pinned"):
    out = plan(tree, path=tools, LIEVAE_TF_STACK=stack)
    assert "pip install --only-binary=:all: torch==2.13.0+cpu (if pip finds it" in out
    assert "torch,\n" not in out and "[test,torch]" not in out


def test_one_tensorflow_release_for_both_builds():
  def pins(name):
    with open(os.path.join(REPO, name)) as f:
      return re.findall(r"^(tensorflow(?:-cpu|\[and-cuda\])?)==(\S+)", f.read(), re.M)

  for common, cpu, gpu, cpu_distribution in (
      ("requirements-common.txt", "requirements.txt", "requirements-gpu.txt", "tensorflow-cpu"),
      ("requirements-current-common.txt", "requirements-current.txt",
       "requirements-current-gpu.txt", "tensorflow-cpu")):
    assert pins(common) == []  # shared pins hold no TF build
    (cpu_name, cpu_version), = pins(cpu)
    (gpu_name, gpu_version), = pins(gpu)
    assert (cpu_name, gpu_name) == (cpu_distribution, "tensorflow[and-cuda]")
    assert cpu_version == gpu_version

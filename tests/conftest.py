"""Shared test set-up: a tiny SYNTHETIC dSprites-format dataset, and running the real commands.

disentanglement_lib reads DISENTANGLEMENT_LIB_DATA when its data modules are imported, so it is
set here, before any test module imports them.
"""

import atexit
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from lievae_tf.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_CONFIGS = os.path.join(REPO, "gin_configs")
BIN = os.path.dirname(sys.executable)  # the environment's console scripts

# 3 shapes x 2 scales x 4 orientations x 4 x 4 positions = 384 images.
TINY_GRID = (1, 3, 2, 4, 4, 4)
DATA_ROOT = tempfile.mkdtemp(prefix="lievae_test_data_")
atexit.register(shutil.rmtree, DATA_ROOT, ignore_errors=True)
synthetic.write_synthetic_dsprites(DATA_ROOT, TINY_GRID)
os.environ["DISENTANGLEMENT_LIB_DATA"] = DATA_ROOT
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# One thread per TF op, here and in every command a test runs: the suite runs tests side by side
# (pytest-xdist) on few cores, where TF's spinning thread pools would burn the cores the other
# tests need. The tests' models are tiny; no test depends on the thread count.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

# A short run of the paper's dSprites setting: the bindings every training test starts from.
SMALL_RUN = [
    "model.training_steps = 6",
    "model.batch_size = 8",
    "model.eval_steps = 2",
    "training.checkpoint_every = 3",
    "training.log_every = 2",
]


def command(name, *args, env=None, timeout=600):
  """Runs the environment's console script `name`; returns the CompletedProcess."""
  return subprocess.run([os.path.join(BIN, name), *args], env=env or dict(os.environ),
                        capture_output=True, text=True, timeout=timeout)


def train_args(model_dir, *bindings, config="dsprites.gin"):
  args = [f"--model_dir={model_dir}", f"--gin_config={os.path.join(GIN_CONFIGS, config)}"]
  return args + [f"--gin_bindings={b}" for b in list(SMALL_RUN) + list(bindings)]


def wait_for_logged_step(process, model_dir, earlier_runs_events=(), timeout=300):
  """Returns once the run of `process` has written TensorBoard scalars (past its first log step);
  `earlier_runs_events` are event files of earlier runs in the same model_dir."""
  deadline = time.time() + timeout
  while True:
    events = set(glob.glob(os.path.join(model_dir, "logs", "train", "events.*")))
    ours = events - set(earlier_runs_events)
    if ours and os.path.getsize(ours.pop()) > 200:  # more than the file header
      return
    assert process.poll() is None and time.time() < deadline, "training was never seen"
    time.sleep(0.05)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
  """A model trained and exported by the real `lievae_train` (shared, treat as read-only)."""
  model_dir = str(tmp_path_factory.mktemp("trained") / "model")
  result = command("lievae_train", *train_args(model_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


SHAPES3D_GRID = (3, 2, 2, 2, 4, 3)  # 288 images


@pytest.fixture(scope="session")
def shapes3d_h5(tmp_path_factory):
  """A tiny SYNTHETIC 3dshapes.h5, alone in its data root's `3dshapes/` (treat as read-only)."""
  path = tmp_path_factory.mktemp("shapes3d_h5_root") / "3dshapes" / "3dshapes.h5"
  return synthetic.write_synthetic_shapes3d_h5(str(path), SHAPES3D_GRID)


@pytest.fixture(scope="session")
def shapes3d_model_dir(shapes3d_h5, tmp_path_factory):
  """A 3DShapes model trained from `shapes3d_h5` by the real `lievae_train` (read-only)."""
  model_dir = str(tmp_path_factory.mktemp("trained_shapes3d") / "model")
  result = command("lievae_train", *train_args(
      model_dir, f"lievae_data.shapes3d_h5 = '{shapes3d_h5}'",
      "LieGroupVAE.subgroup_sizes = [16]", "LieGroupVAE.subspace_sizes = [4]",
      config="shapes3d.gin"))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


_RUNS_COMMANDS = ("command(", "subprocess")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items):
  """Marks `commands` every test that runs a real command in a subprocess, itself or through a
  fixture (e.g. a model trained by `lievae_train`), so that `pytest -m "not commands"` runs the
  fast in-process tests alone.

  For parallel runs (scripts/test.sh: pytest-xdist, --dist=loadgroup), the tests of a module that
  share a module-scoped fixture are grouped onto one worker, so that the fixture is built once;
  every other test may run on any worker. The `commands` tests, the long ones, go first, so that
  the quick in-process tests fill the workers' gaps at the end instead of a long test running alone.
  """
  import inspect  # pylint: disable=g-import-not-at-top
  for item in items:
    functions = [getattr(item, "function", None)]
    module_scoped = False
    for definitions in item._fixtureinfo.name2fixturedefs.values():  # pylint: disable=protected-access
      functions += [definition.func for definition in definitions]
      module_scoped |= any(definition.scope == "module" for definition in definitions)
    sources = [inspect.getsource(f) for f in functions if f is not None and inspect.isfunction(f)]
    if any(marker in source for source in sources for marker in _RUNS_COMMANDS):
      item.add_marker(pytest.mark.commands)
    if module_scoped:
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
  items.sort(key=lambda item: item.get_closest_marker("commands") is None)


# torch's CPU build is installed where pip finds its wheel (scripts/setup_env.sh; here, Python 3.11);
# the registry's torch for other Pythons is a CUDA build of several GB. The tests that need it are
# marked `torch` and skip visibly without it (`pytest.importorskip("torch", reason=TORCH_MISSING)`
# where they need it, so the skip names their file); .ci/run runs them on both stacks in Python 3.11
# venvs.
TORCH_MISSING = ("torch is not installed here: scripts/setup_env.sh installs its CPU build only "
                 "where pip finds that wheel (Python 3.11 on this project's machines)")


def _stack_line():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_version = torch.__version__
  except ImportError:
    torch_version = "not installed (the `torch` tests skip)"
  return (f"TensorFlow {tf.__version__}, Python {sys.version.split()[0]}, "
          f"torch {torch_version}")


def pytest_report_header(config):
  del config
  return _stack_line()


def pytest_terminal_summary(terminalreporter):
  # Also under -q, which hides the header: what ran, for CI's log (.ci/run checks it).
  terminalreporter.write_line("stack: " + _stack_line())

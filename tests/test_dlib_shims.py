"""lievae_tf.dlib.shims: in a fresh process of the environment (its `.pth` hook calls `shims.apply()`),
every name disentanglement_lib needs is there on this stack, the speed-ups follow their one switch,
and `import lievae_tf` alone changes nothing."""

import json
import os
import subprocess
import sys
import sysconfig

import pytest

from lievae_tf.dlib import shims

PROBE = r"""
import json, sys
import numpy as np
import gin.tf
import tensorflow as tf
import tensorflow_hub as hub
from tensorflow.contrib import framework
from disentanglement_lib.evaluation import evaluate
from disentanglement_lib.data.ground_truth import shapes3d

@gin.configurable("probe_configurable", blacklist=["hidden"])
def probe(hidden=1, shown=2):
  return hidden, shown

gin.parse_config("probe_configurable.shown = 5")
try:
  gin.parse_config("probe_configurable.hidden = 5")
  blacklist_honoured = False
except ValueError:
  blacklist_honoured = True
print(json.dumps({
    "configured": list(probe()),
    "blacklist_honoured": blacklist_honoured,
    "float_": np.float_ is np.float64,
    "session_run_hook": issubclass(tf.estimator.SessionRunHook, object),
    "assign_from_checkpoint_fn": framework.assign_from_checkpoint_fn.__module__,
    "eval_function_for_module": hub.eval_function_for_module.__module__,
    "hub_module": hub.Module.__module__,
    "evaluate_hub": type(evaluate.hub).__name__,
    "lean_shapes3d": shapes3d.Shapes3D.__module__,
}))
"""


def _probe(**env):
  result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _hub_has_tf1_api():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  return int(importlib.metadata.version("tensorflow-hub").split(".")[1]) < 16


def test_the_stock_commands_find_every_name_they_use():
  found = _probe()
  assert found["configured"] == [1, 5] and found["blacklist_honoured"]
  assert found["float_"] and found["session_run_hook"]
  assert found["assign_from_checkpoint_fn"] == "lievae_tf.dlib.shims"
  if _hub_has_tf1_api():  # pinned stack: tensorflow_hub's own TF1 API, untouched
    assert found["eval_function_for_module"].startswith("tensorflow_hub")
    assert found["hub_module"].startswith("tensorflow_hub")
  else:  # current stack: ours, lent to tensorflow_hub
    assert found["eval_function_for_module"] == found["hub_module"] == "lievae_tf.dlib.tf1_hub"


def test_speedups_follow_their_one_switch():
  on = _probe()
  assert on["evaluate_hub"] == "HubForScoring"
  assert on["lean_shapes3d"] == "lievae_tf.dlib.lean_shapes3d"
  off = _probe(**{shims.SPEEDUPS_SWITCH: "0"})
  assert off["evaluate_hub"] == "module"  # tensorflow_hub itself
  assert off["lean_shapes3d"] == "disentanglement_lib.data.ground_truth.shapes3d"


def test_no_process_of_the_environment_prints_hubs_pkg_resources_warning():
  """tensorflow_hub imports the deprecated pkg_resources; that warning is silenced for hub alone."""
  hub = subprocess.run([sys.executable, "-c", "import tensorflow_hub"], capture_output=True,
                       text=True, timeout=300)
  assert hub.returncode == 0, hub.stderr[-2000:]
  assert "pkg_resources" not in hub.stderr, hub.stderr[-2000:]
  # Anyone else's use of pkg_resources still warns: the filter is not a blanket one.
  other = subprocess.run([sys.executable, "-W", "always::UserWarning", "-c",
                          "import pkg_resources"], capture_output=True, text=True, timeout=300)
  assert "pkg_resources is deprecated" in other.stderr, other.stderr[-2000:]


def test_importing_the_package_applies_nothing():
  # -S: no site start-up, so no .pth hook; the environment's packages put on the path by hand.
  code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import lievae_tf, "
          "lievae_tf.dlib.shims; print('wrapt' in sys.modules, lievae_tf.dlib.shims._applied)")
  result = subprocess.run(
      [sys.executable, "-S", "-c", code, os.path.dirname(os.path.dirname(os.path.dirname(shims.__file__))),
       sysconfig.get_paths()["purelib"]], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["False", "False"]


# Moved into lievae_tf/dlib/; the old names stay importable.
OLD_NAMES = {"lievae_tf.compat": "lievae_tf.dlib.shims",
             "lievae_tf.evaluation.speedups": "lievae_tf.dlib.speedups",
             "lievae_tf.evaluation.frozen_module": "lievae_tf.dlib.frozen_scoring",
             "lievae_tf.interop.tf1_hub": "lievae_tf.dlib.tf1_hub"}


def test_an_earlier_installs_pth_and_the_old_module_names_still_work(tmp_path):
  """The `.pth` of an environment set up before the move says `import lievae_tf.compat`: `site`
  runs it (here from a directory of its own, in a process without the environment's hook), and
  it applies the shims; each old name is the moved module itself (one state), not a copy."""
  (tmp_path / "lievae_tf_dlib_compat.pth").write_text("import lievae_tf.compat as _c; _c.apply()\n")
  code = ("import importlib, json, site, sys; sys.path[:0] = sys.argv[1:3]; "
          "site.addsitedir(sys.argv[3]); shims = sys.modules.get('lievae_tf.dlib.shims'); "
          "print(json.dumps([shims is not None and shims._applied] + "
          "[importlib.import_module(old) is importlib.import_module(new) "
          "for old, new in json.loads(sys.argv[4]).items()]))")
  result = subprocess.run(
      [sys.executable, "-S", "-c", code,
       os.path.dirname(os.path.dirname(os.path.dirname(shims.__file__))),
       sysconfig.get_paths()["purelib"], str(tmp_path), json.dumps(OLD_NAMES)],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0 and "Error processing" not in result.stderr, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == [True] * (1 + len(OLD_NAMES))


@pytest.mark.parametrize("module_name, shim", [(m, s) for m, s in shims.SHIMS])
def test_every_shim_is_documented(module_name, shim):
  docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                      "environment.md")
  with open(docs) as f:
    text = f.read()
  assert f"`{shim.__name__}` | `{module_name}`" in text

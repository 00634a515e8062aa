"""Shims that let disentanglement_lib 1.5 (TF 1.14 era) run on Python 3.11 and TF 2.15.

1. gin-config 0.4.0 (the last release that accepts dlib's `blacklist=`) uses `collections.Mapping`
   and friends, which Python 3.10 removed: alias them from `collections.abc`.
2. `disentanglement_lib/utils/convolute_hub.py` (used by `dlib_postprocess`) imports
   `tensorflow.contrib.framework` for `assign_from_checkpoint_fn`; TF 2 has no contrib: register a
   small module that restores with `tf.compat.v1.train.Saver`.

`apply()` runs when `lievae_tf` is imported and, through the `.pth` hook that `install_site_hook()`
writes, at the start of every Python process of the environment, so that the unmodified `dlib_*`
commands work. It must therefore stay cheap: no TensorFlow import at module import time.
"""

import collections
import collections.abc
import os
import sys
import sysconfig
import types

PTH_NAME = "lievae_tf_dlib_compat.pth"


def _alias_collections_abc():
  for name in collections.abc.__all__:
    if not hasattr(collections, name):
      setattr(collections, name, getattr(collections.abc, name))


def assign_from_checkpoint_fn(model_path, var_list, ignore_missing_vars=False,
                              reshape_variables=False):
  """The subset of TF 1's `contrib.framework.assign_from_checkpoint_fn` that dlib uses."""
  del ignore_missing_vars  # dlib never sets it
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  saver = tf.train.Saver(var_list, reshape=reshape_variables)

  def restore(session):
    saver.restore(session, model_path)

  return restore


def _register_contrib_framework():
  if "tensorflow.contrib.framework" in sys.modules:
    return
  contrib = sys.modules.get("tensorflow.contrib") or types.ModuleType("tensorflow.contrib")
  framework = types.ModuleType("tensorflow.contrib.framework")
  framework.assign_from_checkpoint_fn = assign_from_checkpoint_fn
  contrib.framework = framework
  sys.modules["tensorflow.contrib"] = contrib
  sys.modules["tensorflow.contrib.framework"] = framework


class _RegisterMetricsAfterDlibEvaluate:
  """Registers our own metrics with gin (`evaluation.registry.import_own_metrics`) right after
  `disentanglement_lib.evaluation.evaluate` is imported: the stock `dlib_evaluate` then accepts
  their gin configs, and no other process pays for the import."""
  TARGET = "disentanglement_lib.evaluation.evaluate"

  def find_spec(self, name, path=None, target=None):
    if name != self.TARGET:
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, "find_spec"):
        continue
      spec = finder.find_spec(name, path, target)
      if spec is not None:
        break
    else:
      return None
    loader = spec.loader
    original_exec = loader.exec_module

    def exec_module(module):
      original_exec(module)
      from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
      registry.import_own_metrics()

    loader.exec_module = exec_module
    return spec


def _register_metrics_lazily():
  if not any(isinstance(f, _RegisterMetricsAfterDlibEvaluate) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterMetricsAfterDlibEvaluate())


def apply():
  """Installs both shims and the lazy metric registration; idempotent."""
  _alias_collections_abc()
  _register_contrib_framework()
  _register_metrics_lazily()


def install_site_hook(site_packages=None):
  """Writes the `.pth` file that applies the shims in every process of this environment."""
  site_packages = site_packages or sysconfig.get_paths()["purelib"]
  path = os.path.join(site_packages, PTH_NAME)
  with open(path, "w") as f:
    # A .pth line that starts with `import` is executed by `site` at start-up.
    f.write("import lievae_tf.compat as _c; _c.apply()\n")
  return path


"""Shims that let disentanglement_lib 1.5 (TF 1.14 era) run on Python 3.11 and TF 2.15.

1. gin-config 0.4.0 (the last release that accepts dlib's `blacklist=`) uses `collections.Mapping`
   and friends, which Python 3.10 removed: alias them from `collections.abc`.
2. `disentanglement_lib/utils/convolute_hub.py` (used by `dlib_postprocess`) imports
   `tensorflow.contrib.framework` for `assign_from_checkpoint_fn`; TF 2 has no contrib: register a
   small module that restores with `tf.compat.v1.train.Saver`.

3. dlib's `Shapes3D` converts the whole 3DShapes grid to float32 (~24 GB, 29.5 GB at peak): when
   dlib's module is imported, its class is replaced by a subclass that holds uint8 and converts
   each sampled batch as dlib converts the array, so observations (and scores) are bit-identical
   (`lievae_tf.data.shapes3d.lean_dlib_shapes3d`).

4. When dlib's `evaluate` is imported, its `hub` becomes `tensorflow_hub` with a weights-frozen
   `eval_function_for_module` (`lievae_tf.evaluation.frozen_module`): scoring encodes faster on CPU,
   scores move by float rounding only; LIEVAE_TF_FROZEN_SCORING=0 keeps the stock function.

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


def _prepare_dlib_evaluate(module):
  # Our metrics' gin configurables, for the stock `dlib_evaluate`.
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  registry.import_own_metrics()
  # Its `hub` encodes through the module with constant weights (faster on CPU, same scores to
  # float rounding); `tensorflow_hub` itself stays stock.
  from lievae_tf.evaluation import frozen_module  # pylint: disable=g-import-not-at-top
  frozen_module.use_in_dlib_evaluate(module)


def _use_lean_shapes3d(module):
  # dlib's Shapes3D holds a float32 copy of the grid (~24 GB): hold uint8, bit-identical batches.
  from lievae_tf.data import shapes3d  # pylint: disable=g-import-not-at-top
  shapes3d.use_lean_dlib_shapes3d(module)


# What runs right after a dlib module is imported; no other process pays for it.
AFTER_IMPORT = {
    "disentanglement_lib.evaluation.evaluate": _prepare_dlib_evaluate,
    "disentanglement_lib.data.ground_truth.shapes3d": _use_lean_shapes3d,
}


class _AfterDlibImports:
  """An import hook that runs `AFTER_IMPORT[name](module)` once module `name` has executed."""

  def find_spec(self, name, path=None, target=None):
    if name not in AFTER_IMPORT:
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
      AFTER_IMPORT[name](module)

    loader.exec_module = exec_module
    return spec


def _hook_dlib_imports():
  if any(isinstance(f, _AfterDlibImports) for f in sys.meta_path):
    return
  sys.meta_path.insert(0, _AfterDlibImports())
  for name, after_import in AFTER_IMPORT.items():
    if name in sys.modules:  # imported before the hook existed
      after_import(sys.modules[name])


def apply():
  """Installs both shims and the import hooks (our metrics and frozen scoring in dlib's evaluate,
  the lean Shapes3D); idempotent."""
  _alias_collections_abc()
  _register_contrib_framework()
  _hook_dlib_imports()


def install_site_hook(site_packages=None):
  """Writes the `.pth` file that applies the shims in every process of this environment."""
  site_packages = site_packages or sysconfig.get_paths()["purelib"]
  path = os.path.join(site_packages, PTH_NAME)
  with open(path, "w") as f:
    # A .pth line that starts with `import` is executed by `site` at start-up.
    f.write("import lievae_tf.compat as _c; _c.apply()\n")
  return path


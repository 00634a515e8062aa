"""What disentanglement_lib 1.5 (2020, TF 1.14 era) cannot run without on either supported stack.

Needed by: disentanglement-lib 1.5 with gin-config 0.4 and tensorflow-hub 0.15 on the pinned stack
(TF 2.15), gin-config 0.5, numpy 2 and tensorflow-hub 0.16 on the current one (TF 2.21). Each shim
is one function below, with one line on what it fixes and which versions need it; the table in
docs/environment.md lists the same. `apply()` registers them: a shim for module M runs once M has
been imported (wrapt's post-import hooks; at once if M already is), and does nothing where the
installed version does not need it. The `.pth` file that `install_site_hook()` writes (and that a
wheel installs) calls `apply()` at the start of every Python process of the project's
environment, which is what makes the unmodified `dlib_*` commands run there; our own commands call
it themselves (`lievae_tf.cli.run`), so they do not depend on the hook. `apply()` imports no
TensorFlow. This module was `lievae_tf.compat`, a name that still imports it (existing `.pth`
files say `import lievae_tf.compat`).

The speed-ups for dlib's own code (weights-frozen scoring, the lean Shapes3D) are no shims: dlib
runs without them. Our commands choose them explicitly (`lievae_tf.dlib.speedups`); for the
stock commands the one switch LIEVAE_TF_DLIB_SPEEDUPS (default 1; 0 runs dlib as shipped) says
whether `apply()` registers them too.
"""

import collections
import collections.abc
import importlib.metadata
import os
import sys
import sysconfig
import types
import warnings

PTH_NAME = "lievae_tf_dlib_compat.pth"
SPEEDUPS_SWITCH = "LIEVAE_TF_DLIB_SPEEDUPS"


def _at_least(module, version):
  """Whether imported `module`'s `__version__` is `version` (major, minor) or later."""
  return tuple(int(p) for p in module.__version__.split(".")[:2]) >= version


def _gin_at_least_0_5():
  try:
    return int(importlib.metadata.version("gin-config").split(".")[1]) >= 5
  except importlib.metadata.PackageNotFoundError:
    return False


# --- The shims -------------------------------------------------------------------------------


def alias_collections_abc():
  """gin-config 0.4 (pinned stack) uses `collections.Mapping` etc., removed in Python 3.10."""
  for name in collections.abc.__all__:
    if not hasattr(collections, name):
      setattr(collections, name, getattr(collections.abc, name))


def use_legacy_keras():
  """dlib's architectures (its `dlib_train` models) call `tf.compat.v1.layers`, which TF 2.16+
  (current stack) builds on Keras 3 and refuses ("not available with Keras 3") unless
  TF_USE_LEGACY_KERAS=1 makes them use tf_keras; it must be set before TF is imported."""
  try:
    importlib.metadata.version("tf-keras")
  except importlib.metadata.PackageNotFoundError:
    return  # the pinned stack: TF 2.15's own Keras 2
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def quiet_hub_pkg_resources_warning():
  """tensorflow-hub 0.15/0.16 import `pkg_resources` (for one version comparison), which setuptools
  80 deprecates with a UserWarning in every process that imports hub; only hub's import of it is
  silenced, so that other code's use of pkg_resources still warns."""
  warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning,
                          module="tensorflow_hub")


def assign_from_checkpoint_fn(model_path, var_list, ignore_missing_vars=False,
                              reshape_variables=False):
  """The subset of TF 1's `contrib.framework.assign_from_checkpoint_fn` that dlib uses."""
  del ignore_missing_vars  # dlib never sets it
  import tensorflow.compat.v1 as tf1  # pylint: disable=g-import-not-at-top
  saver = tf1.train.Saver(var_list, reshape=reshape_variables)

  def restore(session):
    saver.restore(session, model_path)

  return restore


def add_contrib_framework(tensorflow):
  """dlib's convolute_hub imports `tensorflow.contrib.framework`, gone since TF 2.0 (both stacks)."""
  del tensorflow
  if "tensorflow.contrib.framework" in sys.modules:
    return
  contrib = types.ModuleType("tensorflow.contrib")
  contrib.framework = types.ModuleType("tensorflow.contrib.framework")
  contrib.framework.assign_from_checkpoint_fn = assign_from_checkpoint_fn
  sys.modules["tensorflow.contrib"] = contrib
  sys.modules["tensorflow.contrib.framework"] = contrib.framework


def add_estimator_session_run_hook(tensorflow):
  """gin-config's `gin.tf` subclasses `tf.estimator.SessionRunHook`; TF 2.16 removed tf.estimator
  (current stack). The class itself lives on as `tf.compat.v1.train.SessionRunHook`."""
  if not _at_least(tensorflow, (2, 16)) or "estimator" in vars(tensorflow):
    return
  tensorflow.estimator = types.SimpleNamespace(
      SessionRunHook=tensorflow.compat.v1.train.SessionRunHook)


def accept_gin_blacklist(gin):
  """dlib passes `blacklist=`/`whitelist=` to `gin.configurable`; gin-config 0.5 (current stack)
  names them `denylist=`/`allowlist=`."""
  import inspect  # pylint: disable=g-import-not-at-top
  original = gin.config.configurable
  if "blacklist" in inspect.signature(original).parameters:
    return  # gin-config 0.4, or already shimmed

  def configurable(name_or_fn=None, *args, blacklist=None, whitelist=None, **kwargs):
    if blacklist is not None:
      kwargs["denylist"] = blacklist
    if whitelist is not None:
      kwargs["allowlist"] = whitelist
    return original(name_or_fn, *args, **kwargs)

  configurable.__doc__ = original.__doc__
  gin.config.configurable = gin.configurable = configurable


def add_numpy_float_(numpy):
  """dlib's results writer tests `isinstance(x, np.float_)`; numpy 2 (current stack) removed it."""
  if _at_least(numpy, (2, 0)) and "float_" not in vars(numpy):
    numpy.float_ = numpy.float64


def add_tf1_hub_api(hub):
  """dlib calls `hub.Module`, `create_module_spec` (and the spec's `export`), `add_signature`,
  `eval_function_for_module`; tensorflow-hub 0.16 (current stack) removed them: ours
  (`lievae_tf.dlib.tf1_hub`)."""
  if not _at_least(hub, (0, 16)) or hasattr(hub, "eval_function_for_module"):
    return
  from lievae_tf.dlib import tf1_hub  # pylint: disable=g-import-not-at-top
  for name in ("Module", "ModuleSpec", "create_module_spec", "add_signature",
               "load_module_spec", "eval_function_for_module"):
    setattr(hub, name, getattr(tf1_hub, name))


# Each shim and the module whose import triggers it; a shim checks that the version needs it.
SHIMS = (
    ("tensorflow", add_contrib_framework),
    ("tensorflow", add_estimator_session_run_hook),
    ("gin", accept_gin_blacklist),
    ("numpy", add_numpy_float_),
    ("tensorflow_hub", add_tf1_hub_api),
)


def speedups_enabled():
  """LIEVAE_TF_DLIB_SPEEDUPS: whether the stock commands use lievae_tf's speed-ups (default 1)."""
  return os.environ.get(SPEEDUPS_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


_applied = False


def apply():
  """Registers every shim the installed versions need (idempotent), and, if
  `speedups_enabled()`, the speed-ups for dlib's evaluate and Shapes3D."""
  global _applied
  if _applied:
    return
  _applied = True
  import wrapt  # pylint: disable=g-import-not-at-top
  # These two must act before their modules execute: no post-import hook can.
  if not _gin_at_least_0_5():
    alias_collections_abc()
  use_legacy_keras()
  quiet_hub_pkg_resources_warning()
  for module_name, shim in SHIMS:
    wrapt.register_post_import_hook(shim, module_name)
  if speedups_enabled():
    from lievae_tf.dlib import speedups  # pylint: disable=g-import-not-at-top
    speedups.register_for_stock_commands()


def install_site_hook(site_packages=None):
  """Writes the `.pth` file that calls `apply()` in every process of this environment.

  A wheel install has it already (setup.py puts the package's copy into site-packages); an
  editable one (scripts/setup_env.sh) gets it here. Its one line starts with `import`, which
  `site` executes at start-up."""
  import importlib.resources  # pylint: disable=g-import-not-at-top (the hook's imports stay few)
  site_packages = site_packages or sysconfig.get_paths()["purelib"]
  path = os.path.join(site_packages, PTH_NAME)
  with open(path, "w") as f:
    f.write((importlib.resources.files("lievae_tf") / PTH_NAME).read_text())
  return path

"""lievae_tf's speed-ups for disentanglement_lib's own code, and where they hook into dlib.

Needed by: no version. disentanglement-lib 1.5 runs without them, on either stack; with them,
scores are dlib's (bit for bit for the lean Shapes3D, to float rounding for frozen scoring):

- frozen scoring: dlib's `evaluate` encodes through the module with its weights frozen to
  constants (`lievae_tf.dlib.frozen_scoring`), about 10-20 % faster on CPU;
- lean Shapes3D: dlib's `Shapes3D` holds the grid as uint8 instead of a ~24 GB float32 copy
  (`lievae_tf.dlib.lean_shapes3d`), observations bit-identical.

Our commands choose them where they load dlib (`lievae_evaluate`'s suite, `lievae_train`'s data);
the stock `dlib_*` commands get them through `shims.apply()` unless LIEVAE_TF_DLIB_SPEEDUPS=0.
This module was `lievae_tf.evaluation.speedups`, a name that still imports it.
"""

import importlib

EVALUATE_MODULE = "disentanglement_lib.evaluation.evaluate"
SHAPES3D_MODULE = "disentanglement_lib.data.ground_truth.shapes3d"


def use_frozen_scoring(evaluate_module):
  """dlib's `evaluate` scores through the weights-frozen module."""
  from lievae_tf.dlib import frozen_scoring  # pylint: disable=g-import-not-at-top
  frozen_scoring.use_in_dlib_evaluate(evaluate_module)


def use_lean_shapes3d(shapes3d_module):
  """dlib's `Shapes3D` holds uint8."""
  from lievae_tf.dlib import lean_shapes3d  # pylint: disable=g-import-not-at-top
  lean_shapes3d.use_lean_dlib_shapes3d(shapes3d_module)


SPEEDUPS = ((EVALUATE_MODULE, use_frozen_scoring), (SHAPES3D_MODULE, use_lean_shapes3d))


def apply_now(*module_names):
  """Imports dlib's modules `module_names` (default: both) and applies their speed-ups now."""
  for name, speedup in SPEEDUPS:
    if not module_names or name in module_names:
      speedup(importlib.import_module(name))


def register_for_stock_commands():
  """Applies each speed-up when (if ever) its dlib module is imported."""
  import wrapt  # pylint: disable=g-import-not-at-top
  for name, speedup in SPEEDUPS:
    wrapt.register_post_import_hook(speedup, name)

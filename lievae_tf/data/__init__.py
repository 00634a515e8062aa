"""Ground-truth data, as disentanglement_lib reads it: `ground_truth` (loading any dlib dataset,
the training input pipeline), `shapes3d` (the public `3dshapes.h5`), `synthetic` (stand-ins in
the real file formats). What they share is here; importing it does not import TensorFlow."""

import os

import gin

DATA_ENV = "DISENTANGLEMENT_LIB_DATA"  # where dlib (and we) look for every dataset
PAPER_NUM_CHANNELS = {"dsprites": 1, "shapes3d": 3}  # the paper code's dataset names
SHAPES3D_H5_FILENAME = "3dshapes.h5"  # the public 3DShapes file
SHAPES3D_FULL_FACTOR_SIZES = (10, 10, 10, 8, 4, 15)  # its factor grid (480,000 images)


def data_root():
  return os.environ.get(DATA_ENV, ".")


def record_dataset_name(name):
  """Marks `dataset.name = name` operative, as calling dlib's loader would have.

  dlib's later steps read `dataset.name` from the saved train.gin, which is gin's operative
  config; gin records a configurable's parameters only when it is called, and calling dlib's
  `dataset` loads the whole dataset. gin 0.4.0 (pinned) has no public API for this, hence its
  private registry.
  """
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import (registers `dataset`)
  selector = gin.config._REGISTRY.get_match("dataset").selector  # pylint: disable=protected-access
  with gin.config._OPERATIVE_CONFIG_LOCK:  # pylint: disable=protected-access
    gin.config._OPERATIVE_CONFIG.setdefault(("", selector), {})["name"] = name  # pylint: disable=protected-access

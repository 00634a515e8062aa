"""dlib's `Shapes3D` holding its images as uint8: 5.9 GB for the public grid, not ~24 GB.

Needed by: no version (a speed-up, `speedups`). disentanglement-lib 1.5's
`data/ground_truth/shapes3d.py` loads the whole grid and keeps a float32 copy of it, which a
24 GB machine cannot hold beside the model; this subclass keeps dlib's sampling and reads the
grid with `lievae_tf.data.shapes3d`'s loaders (from the public `3dshapes.h5` when it is beside
dlib's npz, else from the npz). It was `lievae_tf.data.shapes3d.lean_dlib_shapes3d`.
"""

import numpy as np

from lievae_tf.data import shapes3d


def lean_dlib_shapes3d(dlib_shapes3d_module):
  """dlib's `Shapes3D` (from `dlib_shapes3d_module`), holding the images as uint8.

  The class keeps dlib's sampling: `sample_factors` is dlib's, and
  `sample_observations_from_factors` runs dlib's own (same random draws, same index arithmetic)
  on the uint8 grid, then converts the batch as dlib converts its whole array,
  `.astype(np.float32) / 255.`: elementwise, hence bit-identical. The factor sizes are the file's
  (dlib hard-codes the full grid, which the public file is), so smaller synthetic grids work too.
  """
  from disentanglement_lib.data.ground_truth import util  # pylint: disable=g-import-not-at-top
  dlib_class = dlib_shapes3d_module.Shapes3D
  if getattr(dlib_class, "dlib_class", None) is not None:
    return dlib_class  # already the lean one

  class Shapes3D(dlib_class):
    """dlib's Shapes3D with uint8 images (see `lievae_tf.dlib.lean_shapes3d`)."""

    def __init__(self):  # pylint: disable=super-init-not-called (dlib's loads the float32 copy)
      images, sizes, self.data_file = shapes3d.load_shapes3d_grid(
          dlib_shapes3d_module.SHAPES3D_PATH)
      # As dlib's __init__, with the grid read from the file.
      self.images = images
      self.factor_sizes = list(sizes)
      self.latent_factor_indices = list(range(6))
      self.num_total_factors = 6
      self.state_space = util.SplitDiscreteStateSpace(self.factor_sizes,
                                                      self.latent_factor_indices)
      self.factor_bases = np.prod(self.factor_sizes) / np.cumprod(self.factor_sizes)

    def sample_observations_from_factors(self, factors, random_state):
      uint8_batch = super().sample_observations_from_factors(factors, random_state)
      return uint8_batch.astype(np.float32) / 255.

  Shapes3D.dlib_class = dlib_class
  Shapes3D.__module__, Shapes3D.__qualname__ = __name__, "Shapes3D"
  return Shapes3D


def use_lean_dlib_shapes3d(dlib_shapes3d_module):
  """Puts the lean class in place of dlib's (`named_data` looks it up at each call)."""
  dlib_shapes3d_module.Shapes3D = lean_dlib_shapes3d(dlib_shapes3d_module)

"""Ground-truth data through disentanglement_lib's `named_data`, and the training input pipeline.

Datasets are chosen by dlib's own `dataset.name` binding, so every dataset dlib knows trains here.
The pipeline is a pure function of (seed, step): a resumed run reads what an uninterrupted one
would have, and N replicas together read exactly the global batch one device would.

- Datasets that keep every image of their factor grid in memory (dSprites, 3DShapes) are sampled
  uniformly from that array, one batched gather per step; uniform over the full grid is what
  dlib's factor sampling amounts to for them.
- Any other dataset (dlib's noisy/colour/scream dSprites variants, cars3d, ...) is sampled with
  its own vectorised `sample_observations`, one call per batch.
Neither runs Python per example, unlike dlib's `tf_data_set_from_ground_truth_data`.
"""

import os
import pickle
import zipfile

import numpy as np
import tensorflow as tf

from lievae_tf import random_streams
from lievae_tf.data import DATA_ENV
from lievae_tf.data import shapes3d as shapes3d_h5  # registers `lievae_data` with gin
from lievae_tf.errors import UserError

# How training batches are drawn (`training.batch_order`, `make_input_fn`'s `order`).
BATCH_ORDERS = ("uniform", "epochs")


def _expected_path(name):
  """Where dlib looks for the file of dataset `name` (None where not known here)."""
  # Imported lazily: dlib reads DISENTANGLEMENT_LIB_DATA when these modules are imported.
  from disentanglement_lib.data.ground_truth import dsprites, shapes3d  # pylint: disable=g-import-not-at-top
  if "dsprites" in name:
    return dsprites.DSPRITES_PATH
  if name == "shapes3d":
    return shapes3d.SHAPES3D_PATH
  return None


def _how_to_get(name):
  if name in ("dsprites_full", "dsprites_noshape", "color_dsprites", "noisy_dsprites"):
    return ("download it with `dlib_download_data`, or write a small SYNTHETIC stand-in in the "
            f"same format with `lievae_make_data --output_dir=${DATA_ENV}`")
  return "download it with `dlib_download_data` (see disentanglement_lib's README)"


def load_ground_truth_data():
  """dlib's `named_data.get_named_ground_truth_data()` (bound by `dataset.name`), with errors
  that say which file was looked for and how to get it. dlib's own Shapes3D class is whichever
  is in place: `lievae_tf.dlib.speedups` puts the lean one there (`lievae_train` does)."""
  import gin  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top
  name = gin.query_parameter("dataset.name")
  h5_path = shapes3d_h5.training_h5(name)  # the public 3dshapes.h5, held as uint8
  if h5_path:
    return shapes3d_h5.load_h5_ground_truth_data(h5_path)
  try:
    ground_truth_data = named_data.get_named_ground_truth_data()
  except (FileNotFoundError, tf.errors.NotFoundError) as e:
    path = _expected_path(name) or getattr(e, "filename", None) or str(e)
    raise UserError(
        f"dataset {name!r}: no data file at {path} ({DATA_ENV}="
        f"{os.environ.get(DATA_ENV, '<unset>')!r}). Set {DATA_ENV} to the directory that holds "
        f"the datasets, or {_how_to_get(name)}.") from None
  except (KeyError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError) as e:
    path = _expected_path(name) or "its data file"
    raise UserError(
        f"dataset {name!r}: {path} is not a valid data file ({type(e).__name__}: {e}). Replace "
        f"it: {_how_to_get(name)}.") from None
  except ValueError as e:
    if "Invalid data set name" in str(e):
      raise UserError(
          f"dataset.name = {name!r} is not a dataset disentanglement_lib knows; use one of "
          "dsprites_full, dsprites_noshape, color_dsprites, noisy_dsprites, scream_dsprites, "
          "smallnorb, cars3d, mpi3d_toy, mpi3d_realistic, mpi3d_real, shapes3d, dummy_data."
      ) from None
    # e.g. dlib's Shapes3D reshaping images of the wrong size.
    path = _expected_path(name) or "its data file"
    raise UserError(
        f"dataset {name!r}: {path} is not a valid data file (ValueError: {e}). Replace it: "
        f"{_how_to_get(name)}.") from None
  return validate_images(ground_truth_data, name)


def validate_images(ground_truth_data, name):
  """dlib loads a dSprites image array of any shape; check it before it fails deep in training.

  A dSprites or 3DShapes dataset, which keeps its factor grid in memory must hold one image per grid point,
  N = prod(factor sizes), of the observation's height and width: (N, H, W) or (N, H, W, C).
  """
  from disentanglement_lib.data.ground_truth import dsprites, shapes3d  # pylint: disable=g-import-not-at-top
  # The formats known here (others, e.g. smallnorb, keep images in other layouts).
  if not isinstance(ground_truth_data, (dsprites.DSprites, shapes3d.Shapes3D)):
    return ground_truth_data
  images, factor_sizes = ground_truth_data.images, ground_truth_data.factor_sizes
  count = int(np.prod(factor_sizes))
  height, width = list(ground_truth_data.observation_shape)[:2]
  if images.ndim in (3, 4) and images.shape[0] == count and images.shape[1:3] == (height, width):
    return ground_truth_data
  path = _expected_path(name) or "its data file"
  raise UserError(
      f"dataset {name!r}: the images in {path} have shape {images.shape}; expected "
      f"({count}, {height}, {width}) or ({count}, {height}, {width}, channels): one "
      f"{height}x{width} image per point of the factor grid {list(map(int, factor_sizes))} "
      f"(N = {count}). Replace the file: {_how_to_get(name)}.")


def image_grid(ground_truth_data):
  """The in-memory array of every image of the factor grid, or None for other datasets."""
  from disentanglement_lib.data.ground_truth import dsprites, shapes3d  # pylint: disable=g-import-not-at-top
  if shapes3d_h5.is_h5_ground_truth_data(ground_truth_data):
    return ground_truth_data.images
  # Exact types: dlib's dSprites variants transform images when sampling.
  if type(ground_truth_data) not in (dsprites.DSprites, shapes3d.Shapes3D):  # pylint: disable=unidiomatic-typecheck
    return None
  images = ground_truth_data.images
  if len(images) != int(np.prod(ground_truth_data.factor_sizes)):
    return None
  return images


def observation_shape(ground_truth_data):
  shape = list(ground_truth_data.observation_shape)
  if len(shape) != 3:
    raise UserError(f"the dataset's observations have shape {shape}; this model needs images "
                    "(height, width, channels), e.g. dataset.name = 'dsprites_full'.")
  return shape


def epoch_batch_indices(seed, step, num_images, global_batch_size, begin, end):
  """Indices [begin, end) of step `step`'s global batch when batches are shuffled epochs.

  Epoch e = step // (num_images // global_batch_size) is a fresh permutation of every image,
  keyed by (seed, e), read in consecutive batches: the paper code's DataLoader(shuffle=True)
  over the whole dataset. Each epoch leaves out the num_images % global_batch_size images that
  would make a short batch (none for the paper's datasets at batch 256). A pure function of
  (seed, step), computed per index without materialising the permutation.
  """
  steps_per_epoch = num_images // global_batch_size
  epoch, position = step // steps_per_epoch, step % steps_per_epoch
  slots = position * global_batch_size + tf.range(begin, end, dtype=tf.int64)
  key = random_streams.step_draw_key(random_streams.step_key(seed, epoch),
                                     random_streams.EPOCH_PERMUTATION)
  return tf.random.experimental.index_shuffle(slots, seed=key, max_index=num_images - 1)


def make_input_fn(ground_truth_data, global_batch_size, seed, start_step=0, order="uniform"):
  """An `input_fn(input_context)` for `strategy.distribute_datasets_from_function`.

  Element k of a pipeline is the batch of one replica at one step: pipelines take consecutive
  elements for their replicas in turn, and each replica's batch is its slice of the global batch.
  `order`: 'uniform' draws each global batch uniformly with replacement from the whole dataset
  (as dlib's sampling does); 'epochs' reads shuffled epochs (`epoch_batch_indices`).
  """
  shape = observation_shape(ground_truth_data)
  images = image_grid(ground_truth_data)
  if order not in BATCH_ORDERS:
    raise ValueError(f"order {order!r} is not one of {BATCH_ORDERS}")
  if order == "epochs":
    if images is None:
      raise UserError(
          "training.batch_order = 'epochs' needs a dataset whose images are all in memory as a "
          f"factor grid (dsprites_full, shapes3d); {type(ground_truth_data).__name__} is sampled "
          "by its own sampler: use training.batch_order = 'uniform'.")
    if len(images) < global_batch_size:
      raise UserError(f"training.batch_order = 'epochs': the dataset has {len(images)} images, "
                      f"fewer than one batch (model.batch_size = {global_batch_size}).")
  # uint8 0..255 grids are scaled per batch: the 3dshapes.h5 by its `pixel_scale`, dlib's
  # Shapes3D (uint8: `load_ground_truth_data` loads the lean one) divided by 255 as dlib does.
  # dlib's other arrays are in [0, 1].
  pixel_scale = getattr(ground_truth_data, "pixel_scale", None)
  # dSprites' uint8 grid is already 0/1: only the lean Shapes3D (it has `dlib_class`) is divided.
  divide_by_255 = (images is not None and pixel_scale is None and
                   getattr(ground_truth_data, "dlib_class", None) is not None)

  def input_fn(input_context=None):
    input_context = input_context or tf.distribute.InputContext()
    batch = input_context.get_per_replica_batch_size(global_batch_size)
    local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    first_replica = input_context.input_pipeline_id * local_replicas

    def replica_batches(step):
      replicas = tf.data.Dataset.range(first_replica, first_replica + local_replicas)
      return replicas.map(lambda replica: (step, replica))

    elements = tf.data.Dataset.counter(start_step).flat_map(replica_batches)
    if images is not None:
      def gather(step, replica):
        if order == "epochs":
          indices = epoch_batch_indices(seed, step, len(images), global_batch_size,
                                        replica * batch, (replica + 1) * batch)
        else:
          indices = tf.random.stateless_uniform(
              [global_batch_size], seed=random_streams.step_key(seed, step), minval=0,
              maxval=len(images), dtype=tf.int64)[replica * batch:(replica + 1) * batch]
        # One batched gather in numpy: the grid (up to GBs) never enters the graph.
        return tf.numpy_function(lambda i: images[i], [indices], images.dtype, stateful=False)
    else:
      def gather(step, replica):
        def sample(step, replica):
          random_state = np.random.RandomState([int(seed) % 2**32, int(step) % 2**32])
          observations = ground_truth_data.sample_observations(global_batch_size, random_state)
          return np.asarray(observations[replica * batch:(replica + 1) * batch], np.float32)
        return tf.numpy_function(sample, [step, replica], tf.float32, stateful=False)

    def to_images(step, replica):
      # The reshape also adds dSprites' channel axis.
      batch_images = tf.cast(gather(step, replica), tf.float32)
      if pixel_scale is not None and images is not None:
        batch_images = batch_images * pixel_scale
      elif divide_by_255:
        batch_images = batch_images / 255.
      return tf.reshape(batch_images, [batch] + shape)

    return elements.map(to_images, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)

  return input_fn

"""Every random stream of a run, named in one place.

A run has one seed, `model.random_seed`. Everything random is a pure function of it (and of the
training step), so that a resumed run draws exactly what an uninterrupted one would have, and N
replicas draw what one device draws. The values below are part of that promise: changing one
changes what every seed trains on.
"""

import tensorflow as tf

# Streams of batches (`data.ground_truth.make_input_fn`), as offsets added to the run's seed.
TRAINING_BATCHES = 0
EVALUATION_BATCHES = 1  # the final z = mu evaluation: batches the training did not draw
SAMPLE_IMAGES = 2  # the fixed images of the reconstruction and traversal pictures
# With `training.batch_order = 'epochs'`, epoch e's permutation of the dataset: a fold-in key of
# the (batch seed, e) key.
EPOCH_PERMUTATION = 2

# Draws of one training step inside the model: fold-in keys of its (seed, step) key.
PATH_CHOICE = 0  # LieGroupVAE: reconstruct from gE or from expmap(z) (one draw per step)
REPARAMETERISATION_NOISE = 1


def batch_seed(random_seed, stream):
  """The seed of one stream of batches."""
  return random_seed + stream


def step_key(random_seed, step):
  """The stateless key of one training step, from which its draws are folded in."""
  return tf.stack([tf.cast(random_seed, tf.int64), tf.cast(step, tf.int64)])


def step_draw_key(key, stream):
  return tf.random.experimental.stateless_fold_in(key, stream)

"""The gin-configured options of a run that are not the model: how training runs, and Adam."""

import gin
import tensorflow as tf

from lievae_tf.errors import UserError


@gin.configurable("training")
def training_options(checkpoint_every=1000, keep_checkpoints=3, log_every=100, strategy="auto",
                     deterministic=False, image_every=1000, collective_timeout=600):
  """How training runs, as opposed to what it trains.

  Args:
    checkpoint_every: steps between checkpoints (a checkpoint is also written at the end).
    keep_checkpoints: how many of the latest checkpoints to keep.
    log_every: steps between TensorBoard scalars (means over those steps) and progress updates.
    strategy: 'auto' (MultiWorkerMirroredStrategy if TF_CONFIG is set, else MirroredStrategy over
      the visible GPUs if any, else the default strategy), 'default', 'one_device', 'mirrored'
      or 'multi_worker' (the cluster from TF_CONFIG).
    deterministic: enable TF's op determinism, so that a run (and a resumed run) reproduces its
      weights bit for bit; may be slower.
    image_every: steps between TensorBoard images (reconstructions and latent traversals), also
      drawn at the last step; 0 turns them off.
    collective_timeout: under 'multi_worker', seconds a worker waits in one collective operation
      (a step's gradient all-reduce, a checkpoint) before it gives up on the others with an
      error; 0 waits forever. (A worker that dies is noticed sooner, by TF's heartbeats.)
  """
  for name, value in (("checkpoint_every", checkpoint_every), ("keep_checkpoints",
                                                                keep_checkpoints),
                      ("log_every", log_every)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"training.{name} = {value!r} must be a positive integer.")
  if not isinstance(image_every, int) or image_every < 0:
    raise UserError(f"training.image_every = {image_every!r} must be a positive integer "
                    "(or 0 for no images).")
  if (not isinstance(collective_timeout, (int, float)) or isinstance(collective_timeout, bool)
      or collective_timeout < 0):
    raise UserError(f"training.collective_timeout = {collective_timeout!r} must be a number of "
                    "seconds (0: wait forever).")
  return dict(collective_timeout=float(collective_timeout), checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
              log_every=log_every, strategy=strategy, deterministic=bool(deterministic),
              image_every=image_every)


@gin.configurable("optimizer")
def make_optimizer(learning_rate=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
  """Adam with the reference's (PyTorch's default) settings."""
  return tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

"""The gin-configured options of a run that are not the model: how training runs, and Adam."""

import gin
import tensorflow as tf

from lievae_tf.errors import UserError
from lievae_tf.models.base import PRECISIONS


@gin.configurable("training")
def training_options(checkpoint_every=1000, keep_checkpoints=3, log_every=100, strategy="auto",
                     deterministic=False, image_every=1000, precision="float32"):
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
    precision: 'float32', or a Keras mixed-precision policy: 'mixed_bfloat16' (CPUs with
      bfloat16 units, TPUs, recent GPUs) or 'mixed_float16' (GPUs; with Keras' loss scaling).
      The networks compute in the lower precision; the variables, the optimiser state, the Lie
      algebra and its exponential map, the KL and every loss stay float32, and the exported
      module is float32.
  """
  for name, value in (("checkpoint_every", checkpoint_every), ("keep_checkpoints",
                                                                keep_checkpoints),
                      ("log_every", log_every)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"training.{name} = {value!r} must be a positive integer.")
  if not isinstance(image_every, int) or image_every < 0:
    raise UserError(f"training.image_every = {image_every!r} must be a positive integer "
                    "(or 0 for no images).")
  if precision not in PRECISIONS:
    raise UserError(f"training.precision = {precision!r} is not one of {', '.join(PRECISIONS)}.")
  return dict(checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
              log_every=log_every, strategy=strategy, deterministic=bool(deterministic),
              image_every=image_every, precision=precision)


def optimizer_for(precision, optimizer):
  """float16 needs loss scaling (its gradients underflow); Keras' LossScaleOptimizer does it
  under every strategy. bfloat16 has float32's exponent range and needs none."""
  if precision == "mixed_float16":
    return tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer


@gin.configurable("optimizer")
def make_optimizer(learning_rate=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
  """Adam with the reference's (PyTorch's default) settings."""
  return tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

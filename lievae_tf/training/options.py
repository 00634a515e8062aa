"""The gin-configured options of a run that are not the model: how training runs, and Adam."""

import gin

from lievae_tf.errors import UserError
from lievae_tf.training import adam

BATCH_ORDERS = ("uniform", "epochs")


@gin.configurable("training")
def training_options(checkpoint_every=1000, keep_checkpoints=3, log_every=100, strategy="auto",
                     deterministic=False, image_every=1000, batch_order="uniform"):
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
    batch_order: 'uniform' (each batch drawn uniformly with replacement, as dlib samples) or
      'epochs' (shuffled epochs over the whole dataset, as the paper code's DataLoader; datasets
      held in memory as a factor grid only). Either is a pure function of (seed, step).
  """
  for name, value in (("checkpoint_every", checkpoint_every), ("keep_checkpoints",
                                                                keep_checkpoints),
                      ("log_every", log_every)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"training.{name} = {value!r} must be a positive integer.")
  if not isinstance(image_every, int) or image_every < 0:
    raise UserError(f"training.image_every = {image_every!r} must be a positive integer "
                    "(or 0 for no images).")
  if batch_order not in BATCH_ORDERS:
    raise UserError(f"training.batch_order = {batch_order!r} is not one of {BATCH_ORDERS}: "
                    "'uniform' samples each batch with replacement, 'epochs' reads shuffled "
                    "epochs of the whole dataset (the paper code's order).")
  return dict(checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
              log_every=log_every, strategy=strategy, deterministic=bool(deterministic),
              image_every=image_every, batch_order=batch_order)


@gin.configurable("optimizer")
def make_optimizer(learning_rate=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                   epsilon_placement="keras"):
  """Adam with the reference's (PyTorch's default) settings.

  `epsilon_placement`: 'keras' (tf.keras.optimizers.Adam, which adds epsilon before the bias
  correction of sqrt(v)) or 'pytorch' (steps as torch.optim.Adam, the paper code's optimiser;
  see `adam.PyTorchAdam`). Both keep the same slots, so a checkpoint resumes under either.
  """
  return adam.make_adam(learning_rate, beta_1, beta_2, epsilon, epsilon_placement)

"""The gin-configured options of a run that are not the model: how training runs, and Adam."""

import gin
import tensorflow as tf

from lievae_tf.data.ground_truth import BATCH_ORDERS
from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras
from lievae_tf.models.base import PRECISIONS
from lievae_tf.training import adam


@gin.configurable("training")
def training_options(checkpoint_every=1000, keep_checkpoints=3, log_every=100, strategy="auto",
                     deterministic=False, image_every=1000, batch_order="uniform",
                     collective_timeout=600, precision="float32", jit_compile=False,
                     progress_seconds=30):
  """How training runs, as opposed to what it trains.

  Args:
    checkpoint_every: steps between checkpoints (a checkpoint is also written at the end).
    keep_checkpoints: how many of the latest checkpoints to keep.
    log_every: steps between TensorBoard scalars (means over those steps) and progress updates.
    progress_seconds: at least this many seconds between two lines of the progress bar where
      stderr is not a terminal (a log file, a cluster job's output); a terminal's bar is redrawn
      twice a second.
    strategy: 'auto' (MultiWorkerMirroredStrategy if TF_CONFIG is set or this process is one
      task of a SLURM job step of several tasks, else MirroredStrategy over the visible GPUs if
      any, else the default strategy), 'default', 'one_device', 'mirrored' or 'multi_worker'
      (the cluster from TF_CONFIG, else from SLURM's job step: docs/clusters.md).
    deterministic: enable TF's op determinism, so that a run (and a resumed run) reproduces its
      weights bit for bit; may be slower.
    image_every: steps between TensorBoard images (reconstructions and latent traversals), also
      drawn at the last step; 0 turns them off.
    batch_order: 'uniform' (each batch drawn uniformly with replacement, as dlib samples) or
      'epochs' (shuffled epochs over the whole dataset, as the paper code's DataLoader; datasets
      held in memory as a factor grid only). Either is a pure function of (seed, step).
    collective_timeout: under 'multi_worker', seconds a worker waits in one collective operation
      (a step's gradient all-reduce, a checkpoint) before it gives up on the others with an
      error; 0 waits forever. (A worker that dies is noticed sooner, by TF's heartbeats.)
    precision: 'float32', or a Keras mixed-precision policy: 'mixed_bfloat16' (CPUs with
      bfloat16 units, TPUs, recent GPUs) or 'mixed_float16' (GPUs; with Keras' loss scaling).
      The networks compute in the lower precision; the variables, the optimiser state, the Lie
      algebra and its exponential map, the KL and every loss stay float32, and the exported
      module is float32.
    jit_compile: compile the training (and evaluation) step's losses and gradients with XLA, as
      one program; its random draws are made before it, uncompiled, so that it draws what the
      uncompiled step draws. Needs LieGroupVAE.expm = 'fixed'. Meant for GPUs, where it
      replaces hundreds of kernel launches a step by a few dozen (docs/speed.md); slower on CPUs.
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
  if (not isinstance(collective_timeout, (int, float)) or isinstance(collective_timeout, bool)
      or collective_timeout < 0):
    raise UserError(f"training.collective_timeout = {collective_timeout!r} must be a number of "
                    "seconds (0: wait forever).")
  if (not isinstance(progress_seconds, (int, float)) or isinstance(progress_seconds, bool)
      or progress_seconds <= 0):
    raise UserError(f"training.progress_seconds = {progress_seconds!r} must be a positive number "
                    "of seconds.")
  if not isinstance(jit_compile, bool):
    raise UserError(f"training.jit_compile = {jit_compile!r} must be True or False.")
  if precision not in PRECISIONS:
    raise UserError(f"training.precision = {precision!r} is not one of {', '.join(PRECISIONS)}.")
  return dict(checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
              log_every=log_every, strategy=strategy, deterministic=bool(deterministic),
              image_every=image_every, batch_order=batch_order,
              collective_timeout=float(collective_timeout), precision=precision,
              jit_compile=jit_compile, progress_seconds=float(progress_seconds))


def optimizer_for(precision, optimizer):
  """float16 needs loss scaling (its gradients underflow); Keras' LossScaleOptimizer does it
  under every strategy. bfloat16 has float32's exponent range and needs none."""
  if precision == "mixed_float16":
    return keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer


@gin.configurable("optimizer")
def make_optimizer(learning_rate=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                   epsilon_placement="keras"):
  """Adam with the reference's (PyTorch's default) settings.

  `epsilon_placement`: 'keras' (keras.optimizers.Adam, which adds epsilon before the bias
  correction of sqrt(v)) or 'pytorch' (steps as torch.optim.Adam, the paper code's optimiser;
  see `adam.PyTorchAdam`). Both keep the same slots, so a checkpoint resumes under either.
  """
  return adam.make_adam(learning_rate, beta_1, beta_2, epsilon, epsilon_placement)

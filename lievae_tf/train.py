"""Training: `lievae_train`'s gin-configured protocol, with dlib's `model.*` bindings.

A run trains under a `tf.distribute` strategy with Keras `fit`, checkpoints every
`training.checkpoint_every` steps, resumes an unfinished `model_dir` from its latest checkpoint,
and at the end exports `model_dir/tfhub` and `model_dir/results` as dlib's `dlib_train` does.
"""

import math
import os
import shutil
import sys
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf
import tqdm

from lievae_tf import baselines  # pylint: disable=unused-import (registers BetaVAE)
from lievae_tf import data as data_lib
from lievae_tf import export
from lievae_tf import model as model_lib  # pylint: disable=unused-import (registers LieGroupVAE)
from lievae_tf.errors import UserError

CHECKPOINT_DIR = "tf_checkpoint"
FINISHED_MARKER = os.path.join("results", "aggregate", "train.json")


def parse_gin(gin_config_files=(), gin_bindings=()):
  """Parses gin files and bindings; a mistake in them becomes a UserError that names it."""
  # The configurables must be registered before parsing: dlib's `dataset` ...
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import
  for path in gin_config_files:
    if not os.path.isfile(path):
      raise UserError(f"gin config file {path} does not exist.")
    # `include 'x.gin'` resolves beside the including file, not only in the working directory.
    gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
  try:
    gin.parse_config_files_and_bindings(list(gin_config_files), list(gin_bindings))
  except SyntaxError as e:
    where = "--gin_bindings" if e.filename in (None, "<string>") else e.filename
    raise UserError(f"gin syntax error in {where}, line {e.lineno}: {e.msg}: "
                    f"{(e.text or '').strip()!r}") from None
  except (ValueError, KeyError) as e:
    raise UserError(f"gin config: {e}\nCheck the spelling against the configurables of "
                    "gin_configs/*.gin (e.g. LieGroupVAE.hy_hes, model.training_steps, "
                    "dataset.name, training.checkpoint_every).") from None


def train_with_gin(model_dir, overwrite=False, gin_config_files=None, gin_bindings=None):
  """Parses the gin configuration, trains, exports, clears the configuration; returns the model."""
  parse_gin(gin_config_files or [], gin_bindings or [])
  try:
    return train(model_dir, overwrite)
  except RuntimeError as e:
    if "Required bindings" in str(e):
      raise UserError(f"gin config: {e}; bind them in a gin file or with --gin_bindings.") from None
    raise
  finally:
    gin.clear_config()


@gin.configurable("training")
def training_options(checkpoint_every=1000, keep_checkpoints=3, log_every=100, strategy="auto"):
  """How training runs, as opposed to what it trains.

  Args:
    checkpoint_every: steps between checkpoints (a checkpoint is also written at the end).
    keep_checkpoints: how many of the latest checkpoints to keep.
    log_every: steps between TensorBoard scalars (means over those steps) and progress updates.
    strategy: 'auto' (MirroredStrategy over the visible GPUs if any, else the default strategy),
      'default', 'one_device' or 'mirrored'.
  """
  for name, value in (("checkpoint_every", checkpoint_every), ("keep_checkpoints",
                                                                keep_checkpoints),
                      ("log_every", log_every)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"training.{name} = {value!r} must be a positive integer.")
  return dict(checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
              log_every=log_every, strategy=strategy)


def make_strategy(name):
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "mirrored" if gpus else "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  raise UserError(f"training.strategy = {name!r} is not one of 'auto', 'default', 'one_device', "
                  "'mirrored'.")


@gin.configurable("optimizer")
def make_optimizer(learning_rate=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
  """Adam with the reference's (PyTorch's default) settings."""
  return tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def is_finished(model_dir):
  return os.path.isfile(os.path.join(model_dir, FINISHED_MARKER))


def _prepare_model_dir(model_dir, overwrite):
  """Refuses a finished model_dir without overwrite; creates or cleans it otherwise."""
  if os.path.isdir(model_dir) and overwrite:
    shutil.rmtree(model_dir)
  elif is_finished(model_dir):
    raise UserError(
        f"{model_dir} already holds a finished model ({FINISHED_MARKER} exists); nothing was "
        "changed. Pass --overwrite to train it again from scratch, or choose another --model_dir.")
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, ".write-probe")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to --model_dir {model_dir}: {e.strerror}. Choose a directory "
                    "you can write to.") from None
  export.remove_partial_outputs(model_dir)
  # An export that was interrupted after the module but before the results is redone.
  shutil.rmtree(os.path.join(model_dir, "tfhub"), ignore_errors=True)


@gin.configurable("model", denylist=["model_dir", "overwrite"])
def train(model_dir,
          overwrite=False,
          model=gin.REQUIRED,
          training_steps=gin.REQUIRED,
          random_seed=gin.REQUIRED,
          batch_size=gin.REQUIRED,
          eval_steps=100,
          name="",
          model_num=None):
  """Trains `model` on `dataset.name` and exports it, as dlib's `train` does.

  Args:
    model_dir: directory for checkpoints, TensorBoard logs, `tfhub` and `results`.
    overwrite: delete an existing model_dir first (a finished one is refused otherwise).
    model: the model class, e.g. `@LieGroupVAE`.
    training_steps: total optimizer steps.
    random_seed: seeds weights, data order and per-step randomness.
    batch_size: the global batch size (split over the replicas).
    eval_steps: batches of the final evaluation (z = mu) recorded in the results.
    name, model_num: unused; they name runs in the saved gin config, as in dlib.
  """
  del name, model_num
  for key, value in (("training_steps", training_steps), ("batch_size", batch_size)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"model.{key} = {value!r} must be a positive integer.")
  options = training_options()
  _prepare_model_dir(model_dir, overwrite)
  timer = time.time()

  tf.keras.utils.set_random_seed(random_seed)
  ground_truth_data = data_lib.load_ground_truth_data()
  image_shape = data_lib.observation_shape(ground_truth_data)
  strategy = make_strategy(options["strategy"])
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise UserError(f"model.batch_size = {batch_size} does not split evenly over {replicas} "
                    f"replicas: use a multiple of {replicas}.")

  with strategy.scope():
    vae = model(num_channels=image_shape[-1], seed=random_seed)
    model_lib.build(vae, image_shape)
    vae.compile(optimizer=make_optimizer())
    vae.optimizer.build(vae.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=vae, optimizer=vae.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, CHECKPOINT_DIR),
                                         max_to_keep=options["keep_checkpoints"])
    if manager.latest_checkpoint:
      checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
  start_step = int(vae.optimizer.iterations.numpy())
  if start_step:
    logging.info("Resuming from %s at step %d.", manager.latest_checkpoint, start_step)
    print(f"lievae_train: resuming from step {start_step} ({manager.latest_checkpoint})",
          file=sys.stderr)

  remaining = training_steps - start_step
  if remaining > 0:
    dataset = strategy.distribute_datasets_from_function(
        data_lib.make_input_fn(ground_truth_data, batch_size, random_seed, start_step))
    summary_writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "train"))
    scalars = ScalarLogger(summary_writer, options["log_every"])
    progress = ProgressBar(training_steps, start_step, options["log_every"], batch_size)
    callbacks = [StopOnNonFiniteLoss(), scalars,
                 PeriodicCheckpoint(manager, options["checkpoint_every"]), progress]
    try:
      vae.fit(dataset, epochs=1, steps_per_epoch=remaining, verbose=0, callbacks=callbacks)
    finally:
      progress.bar.close()  # before any error message, not after it
    train_seconds = time.time() - timer
    final_training_terms = scalars.last_logged
  else:
    train_seconds, final_training_terms = 0.0, {}
  if not (manager.latest_checkpoint or "").endswith(f"-{training_steps}"):
    save_checkpoint(manager, vae)

  # Final evaluation with z = mu, on batches the training did not draw (another seed).
  eval_input = strategy.distribute_datasets_from_function(
      data_lib.make_input_fn(ground_truth_data, batch_size, random_seed + 1))
  evaluation = vae.evaluate(eval_input, steps=eval_steps, verbose=0, return_dict=True)

  results_dict = {f"train_{k}": float(v) for k, v in final_training_terms.items()}
  results_dict.update({f"eval_{k}": float(v) for k, v in evaluation.items()})
  results_dict.update(
      training_steps=training_steps, resumed_from_step=start_step,
      images_per_second=(remaining * batch_size / train_seconds) if train_seconds else None)
  export.export_tfhub(vae, image_shape, os.path.join(model_dir, "tfhub"))
  results_dict["elapsed_time"] = time.time() - timer
  # Written last: its presence marks the model finished.
  export.write_results(os.path.join(model_dir, "results"), results_dict)
  return vae


def save_checkpoint(manager, vae):
  """Saves, unless the weights went non-finite (a checkpoint must always be a good one)."""
  bad = [w.name for w in vae.trainable_weights if not np.all(np.isfinite(w.numpy()))]
  if bad:
    raise UserError(f"training diverged: non-finite weights {bad[:3]}; the last checkpoint "
                    f"({manager.latest_checkpoint}) is kept. Lower the learning rate "
                    "(optimizer.learning_rate) or the loss weights, then re-run to resume.")
  manager.save(checkpoint_number=int(vae.optimizer.iterations.numpy()))


class StopOnNonFiniteLoss(tf.keras.callbacks.Callback):
  """Stops with a UserError that names the non-finite terms; no checkpoint is written after."""

  def __init__(self):
    super().__init__()
    self._supports_tf_logs = True

  def on_train_batch_end(self, batch, logs=None):
    loss = float(logs["loss"])
    if math.isfinite(loss):
      return
    bad = [k for k, v in logs.items() if not math.isfinite(float(v))]
    step = int(self.model.optimizer.iterations.numpy())
    raise UserError(
        f"non-finite loss at step {step}: {', '.join(bad)} went non-finite. Training stopped; "
        "the last good checkpoint is kept and a re-run resumes from it. Lower the learning rate "
        "(optimizer.learning_rate) or check the data.")


class ScalarLogger(tf.keras.callbacks.Callback):
  """Every `every` steps: TensorBoard scalars of each tracked term (its mean over those steps)."""

  def __init__(self, writer, every):
    super().__init__()
    self._supports_tf_logs = True
    self.writer, self.every = writer, every
    self.last_logged = {}

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if step % self.every and batch + 1 != self.params["steps"]:
      return
    self.last_logged = {k: float(v) for k, v in logs.items()}
    with self.writer.as_default(step=step):
      for name, value in self.last_logged.items():
        tf.summary.scalar(name, value)
    self.writer.flush()
    self.model.reset_metrics()


class PeriodicCheckpoint(tf.keras.callbacks.Callback):

  def __init__(self, manager, every):
    super().__init__()
    self._supports_tf_logs = True
    self.manager, self.every = manager, every

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) % self.every == 0:
      save_checkpoint(self.manager, self.model)


class ProgressBar(tf.keras.callbacks.Callback):
  """A tqdm bar over all training steps: steps/s, images/s and the recent mean loss."""

  def __init__(self, total_steps, start_step, every, batch_size):
    super().__init__()
    self._supports_tf_logs = True
    self.every, self.batch_size = every, batch_size
    interactive = sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         mininterval=0.5 if interactive else 30.0, desc="lievae_train")
    self.window_start = None

  def on_train_batch_end(self, batch, logs=None):
    self.bar.update(1)
    if self.window_start is None:  # the first step includes tracing: leave it out of the rate
      self.window_start = (time.time(), batch)
    elif (batch + 1) % self.every == 0:
      started, first = self.window_start
      images_per_second = (batch - first) * self.batch_size / max(time.time() - started, 1e-9)
      self.bar.set_postfix(loss=f"{float(logs['loss']):.2f}", img_s=f"{images_per_second:.0f}",
                           refresh=False)
      self.window_start = (time.time(), batch)


"""Training: `lievae_train`'s gin-configured protocol, with dlib's `model.*` bindings.

A run trains under a `tf.distribute` strategy with Keras `fit`, checkpoints every
`training.checkpoint_every` steps, resumes an unfinished `model_dir` from its latest checkpoint,
and at the end exports `model_dir/tfhub` and `model_dir/results` as dlib's `dlib_train` does.
"""

import contextlib
import json
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
from lievae_tf import visualize
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
def training_options(checkpoint_every=1000, keep_checkpoints=3, log_every=100, strategy="auto",
                     deterministic=False, image_every=1000):
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
  """
  for name, value in (("checkpoint_every", checkpoint_every), ("keep_checkpoints",
                                                                keep_checkpoints),
                      ("log_every", log_every)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"training.{name} = {value!r} must be a positive integer.")
  if not isinstance(image_every, int) or image_every < 0:
    raise UserError(f"training.image_every = {image_every!r} must be a positive integer "
                    "(or 0 for no images).")
  return dict(checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
              log_every=log_every, strategy=strategy, deterministic=bool(deterministic),
              image_every=image_every)


STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def parse_tf_config(raw):
  """Validates a TF_CONFIG for MultiWorkerMirroredStrategy; returns (cluster, task type, index).

  TF itself reports a malformed TF_CONFIG late and obscurely (or hangs waiting for a worker that
  cannot exist), so it is checked here first.
  """
  fix = (f"Set TF_CONFIG to JSON like {_TF_CONFIG_EXAMPLE}, the same cluster on every worker "
         "and each its own task index (or unset it to train on one machine).")
  try:
    config = json.loads(raw)
  except ValueError as e:
    raise UserError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}. {fix}") from None
  cluster = config.get("cluster") if isinstance(config, dict) else None
  if not isinstance(cluster, dict) or not cluster:
    raise UserError(f"TF_CONFIG {raw!r} has no \"cluster\" of jobs. {fix}")
  for job, addresses in cluster.items():
    if job not in ("chief", "worker"):
      raise UserError(f"TF_CONFIG job {job!r}: multi-worker training has only 'chief' and "
                      f"'worker' jobs. {fix}")
    if (not isinstance(addresses, list) or not addresses or not all(
        isinstance(a, str) and a.rpartition(":")[0] and a.rpartition(":")[2].isdigit()
        for a in addresses)):
      raise UserError(f"TF_CONFIG cluster job {job!r} = {addresses!r} is not a list of "
                      f"'host:port' addresses. {fix}")
  task = config.get("task")
  task_type = task.get("type") if isinstance(task, dict) else None
  index = task.get("index", 0) if isinstance(task, dict) else None
  if task_type not in cluster or not isinstance(index, int) or not (
      0 <= index < len(cluster[task_type])):
    raise UserError(f"TF_CONFIG task {task!r} is not one of its cluster's tasks "
                    f"{ {job: len(a) for job, a in cluster.items()} } (type and 0-based index). "
                    f"{fix}")
  return cluster, task_type, index


def make_strategy(name):
  """The tf.distribute strategy called `name` (see `training_options`)."""
  if name not in STRATEGIES:
    raise UserError(f"training.strategy = {name!r} is not one of {', '.join(STRATEGIES)}.")
  tf_config = os.environ.get("TF_CONFIG", "").strip()
  if name == "auto" and tf_config:
    name = "multi_worker"
  if name == "multi_worker":
    if not tf_config:
      raise UserError("training.strategy = 'multi_worker' needs TF_CONFIG, which is not set. "
                      f"Set it on each worker, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'.")
    parse_tf_config(tf_config)
    # Must come before any other TF op: it configures the collective ops of this process.
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "mirrored" if gpus else "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  return tf.distribute.MirroredStrategy()


def is_chief(strategy):
  """Whether this process writes the outputs (always, except on non-chief workers)."""
  return strategy.extended.should_checkpoint


def sync_workers(strategy):
  """Returns once every worker got here (a collective all-reduce); no-op on one machine."""
  if getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
    strategy.reduce("SUM", strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)


def checkpoint_write_dir(model_dir, strategy):
  """Where this process saves: the chief in model_dir; other workers in a temporary directory.

  Every worker must save (saving reduces the loss trackers across workers), but only the chief's
  copy is kept, as TF's multi-worker guide recommends.
  """
  if is_chief(strategy):
    return os.path.join(model_dir, CHECKPOINT_DIR)
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, CHECKPOINT_DIR,
                      f".{resolver.task_type}-{resolver.task_id}-tmp")


def restore_latest(checkpoint, checkpoint_dir):
  """Restores the newest readable checkpoint in `checkpoint_dir`; returns its path or None.

  An unreadable one (truncated or corrupt files, e.g. a disk that filled up) is skipped with a
  warning and the one before it is used: every checkpoint restores the complete state.
  """
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  paths = list(state.all_model_checkpoint_paths) if state else []
  if state and state.model_checkpoint_path and state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  if not state:
    # No (readable) `checkpoint` state file: find the checkpoints by their names instead of
    # silently starting over them.
    indexes = tf.io.gfile.glob(os.path.join(checkpoint_dir, "ckpt-*.index"))
    steps = sorted(int(p[:-len(".index")].rsplit("-", 1)[1]) for p in indexes
                   if p[:-len(".index")].rsplit("-", 1)[1].isdigit())
    paths = [os.path.join(checkpoint_dir, f"ckpt-{step}") for step in steps]
  failures = []
  for path in reversed(paths):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
      return path
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
      # (a truncated file raises IndexError from the reader, a corrupt one DataLossError)
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      failures.append(path)
      logging.warning("Checkpoint %s is unreadable (%s).", path, reason)
      print(f"lievae_train: warning: checkpoint {path} is unreadable ({type(e).__name__}: "
            f"{reason[:200]}); falling back to the one before it.", file=sys.stderr)
  if failures:
    raise UserError(f"no readable checkpoint in {checkpoint_dir} (tried {', '.join(failures)}). "
                    "Pass --overwrite to train from scratch, or restore the files from a backup.")
  return None


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
  if options["deterministic"]:
    tf.config.experimental.enable_op_determinism()
  # The strategy comes first: MultiWorkerMirroredStrategy must start before any other TF op.
  strategy = make_strategy(options["strategy"])
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise UserError(f"model.batch_size = {batch_size} does not split evenly over {replicas} "
                    f"replicas: use a multiple of {replicas}.")
  chief = is_chief(strategy)
  if chief:
    _prepare_model_dir(model_dir, overwrite)
  elif is_finished(model_dir) and not overwrite:
    raise UserError(f"{model_dir} already holds a finished model ({FINISHED_MARKER} exists); "
                    "pass --overwrite (on every worker) to train it again.")
  # No worker reads model_dir before the chief has prepared it.
  sync_workers(strategy)
  timer = time.time()

  tf.keras.utils.set_random_seed(random_seed)
  ground_truth_data = data_lib.load_ground_truth_data()
  image_shape = data_lib.observation_shape(ground_truth_data)

  with strategy.scope():
    vae = model(num_channels=image_shape[-1], seed=random_seed)
    model_lib.build(vae, image_shape)
    vae.compile(optimizer=make_optimizer())
    vae.optimizer.build(vae.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=vae, optimizer=vae.optimizer)
    # Every worker resumes from the chief's checkpoints (model_dir must be shared).
    restored = restore_latest(checkpoint, os.path.join(model_dir, CHECKPOINT_DIR))
    write_dir = checkpoint_write_dir(model_dir, strategy)
    if not chief:
      shutil.rmtree(write_dir, ignore_errors=True)  # a killed worker's stale copy
    manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                         max_to_keep=options["keep_checkpoints"] if chief else 1)
  start_step = int(vae.optimizer.iterations.numpy())
  if restored:
    logging.info("Resuming from %s at step %d.", restored, start_step)
    print(f"lievae_train: resuming from step {start_step} ({restored})", file=sys.stderr)

  remaining = training_steps - start_step
  if remaining > 0:
    dataset = strategy.distribute_datasets_from_function(
        data_lib.make_input_fn(ground_truth_data, batch_size, random_seed, start_step))
    # Only the chief writes TensorBoard logs; the others still reset their trackers in step.
    summary_writer = (tf.summary.create_file_writer(os.path.join(model_dir, "logs", "train"))
                      if chief else tf.summary.create_noop_writer())
    scalars = ScalarLogger(summary_writer, options["log_every"])
    progress = ProgressBar(training_steps, start_step, options["log_every"], batch_size)
    callbacks = [StopOnNonFiniteLoss(), scalars,
                 PeriodicCheckpoint(manager, options["checkpoint_every"]), progress]
    if chief and options["image_every"]:
      callbacks.append(visualize.ImageLogger(
          summary_writer, options["image_every"],
          visualize.sample_images(ground_truth_data, random_seed)))
    fit_started = time.time()
    try:
      vae.fit(dataset, epochs=1, steps_per_epoch=remaining, verbose=0, callbacks=callbacks)
    finally:
      progress.bar.close()  # before any error message, not after it
    train_seconds = time.time() - fit_started
    final_training_terms = scalars.last_logged
    # The same decision on every worker: saving is a collective operation.
    if training_steps % options["checkpoint_every"]:
      save_checkpoint(manager, vae)
  else:
    train_seconds, final_training_terms = 0.0, {}

  # Final evaluation with z = mu, on batches the training did not draw (another seed).
  eval_input = strategy.distribute_datasets_from_function(
      data_lib.make_input_fn(ground_truth_data, batch_size, random_seed + 1))
  evaluation = vae.evaluate(eval_input, steps=eval_steps, verbose=0, return_dict=True)
  if not chief:
    shutil.rmtree(write_dir, ignore_errors=True)
    return vae

  results_dict = {f"train_{k}": float(v) for k, v in final_training_terms.items()}
  results_dict.update({f"eval_{k}": float(v) for k, v in evaluation.items()})
  results_dict.update(
      training_steps=training_steps, resumed_from_step=start_step,
      images_per_second=(remaining * batch_size / train_seconds) if train_seconds else None)
  with _op_determinism_off():
    export.export_tfhub(vae, image_shape, os.path.join(model_dir, "tfhub"))
  results_dict["elapsed_time"] = time.time() - timer
  # Written last: its presence marks the model finished.
  export.write_results(os.path.join(model_dir, "results"), results_dict,
                       extra_files=visualize.result_images(vae, ground_truth_data, random_seed))
  return vae


@contextlib.contextmanager
def _op_determinism_off():
  """Op determinism refuses the unseeded random op of the module's `reconstructions` signature;
  the export only copies weights, so it runs without (TF 2.15 has no public switch back)."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  enabled = tf_config.is_op_determinism_enabled()
  if enabled:
    tf_config.disable_op_determinism()
  try:
    yield
  finally:
    if enabled:
      tf_config.enable_op_determinism()


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


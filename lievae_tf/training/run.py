"""Training: `lievae_train`'s gin-configured run, with dlib's `model.*` bindings.

A run trains under a `tf.distribute` strategy with Keras `fit`, checkpoints every
`training.checkpoint_every` steps, resumes an unfinished `model_dir` from its latest checkpoint,
and at the end exports `model_dir/tfhub` and `model_dir/results` as dlib's `dlib_train` does.
"""

import contextlib
import dataclasses
import logging as std_logging
import os
import shutil
import sys
import time

from absl import logging
import gin
import tensorflow as tf

from lievae_tf import gin_configs
from lievae_tf import model_dir as model_dir_lib
from lievae_tf import models  # pylint: disable=unused-import (registers every model with gin)
from lievae_tf import random_streams
from lievae_tf import visualize
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.dlib import speedups
from lievae_tf.errors import UserError
from lievae_tf.interop import export
from lievae_tf.keras2 import keras
from lievae_tf.training import callbacks as callbacks_lib
from lievae_tf.training import checkpoints
from lievae_tf.training import devices as devices_lib
from lievae_tf.training import options as options_lib
from lievae_tf.training import strategy as strategy_lib


def parse_gin(gin_config_files=(), gin_bindings=()):
  """Parses gin files and bindings; a mistake in them becomes a UserError that names it."""
  # The configurables must be registered before parsing: dlib's `dataset` ...
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import
  # A bare name not in the working directory is a shipped config (`dsprites.gin` outside a checkout).
  gin_config_files = [gin_configs.resolve(path) for path in gin_config_files]
  for path in gin_config_files:
    if not os.path.isfile(path):
      raise UserError(f"gin config file {path} does not exist; give a path, or the name of a "
                      f"shipped one ({', '.join(gin_configs.names())}).")
    # `include 'x.gin'` resolves beside the including file, not only in the working directory.
    gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
  _add_shipped_configs_search_path()
  gin_logger = std_logging.getLogger()  # gin's resource reader logs to the root logger
  gin_logger.addFilter(_hide_gin_search_misses)
  try:
    gin.parse_config_files_and_bindings(list(gin_config_files), list(gin_bindings))
  except OSError as e:  # an `include` that no search path holds
    raise UserError(f"gin config: {e} Give the include's path relative to the including file, "
                    "or an absolute one, or a shipped config's name.") from None
  except SyntaxError as e:
    where = "--gin_bindings" if e.filename in (None, "<string>") else e.filename
    raise UserError(f"gin syntax error in {where}, line {e.lineno}: {e.msg}: "
                    f"{(e.text or '').strip()!r}") from None
  except (ValueError, KeyError) as e:
    # gin's message spans lines (the binding, then where it is): one line here.
    raise UserError(f"gin config: {' '.join(str(e).split())}. Check the spelling against the configurables of "
                    "gin_configs/*.gin (e.g. LieGroupVAE.hy_hes, model.training_steps, "
                    "dataset.name, training.checkpoint_every).") from None
  finally:
    gin_logger.removeFilter(_hide_gin_search_misses)


_shipped_configs_searched = False


def _add_shipped_configs_search_path():
  """`include 'dsprites.gin'` in a gin file of one's own, anywhere, finds the shipped config, as
  `--gin_config=dsprites.gin` does. Searched after the including files' directories (of a
  process's first parse; gin's search path only grows), so a file of that name beside them wins."""
  global _shipped_configs_searched
  if not _shipped_configs_searched:
    gin.add_config_file_search_path(gin_configs.directory())
    _shipped_configs_searched = True


def _hide_gin_search_misses(record):
  """gin-config 0.4 logs an ERROR "Path not found: x.gin" for every search path that lacks an
  included file before it tries the next one, also when the next one has it (an `include`
  resolved beside its file, as gin_configs/quickstart.gin does). A file that is not found
  anywhere still fails, as a UserError; only that one log line is dropped."""
  return not (record.filename == "resource_reader.py" and
              record.getMessage().startswith("Path not found:"))


def train_with_gin(model_dir, overwrite=False, gin_config_files=None, gin_bindings=None,
                   allow_config_change=False):
  """Parses the gin configuration, trains, exports, clears the configuration; returns the model.

  Resuming a model_dir under changed gin settings is refused unless `allow_config_change`
  (see `checkpoints.check_config_unchanged`).
  """
  parse_gin(gin_config_files or [], gin_bindings or [])
  try:
    return train(model_dir, overwrite, allow_config_change=allow_config_change)
  except RuntimeError as e:
    if "Required bindings" in str(e):
      raise UserError(f"gin config: {' '.join(str(e).split())}; bind them in a gin file or with --gin_bindings.") from None
    raise
  finally:
    gin.clear_config()


@gin.configurable("model", denylist=["model_dir", "overwrite", "allow_config_change"])
def train(model_dir,
          overwrite=False,
          model=gin.REQUIRED,
          training_steps=gin.REQUIRED,
          random_seed=gin.REQUIRED,
          batch_size=gin.REQUIRED,
          eval_steps=100,
          name="",
          model_num=None,
          allow_config_change=False):
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
    allow_config_change: resume a model_dir even if its gin settings changed.
  """
  del name, model_num
  for key, value in (("training_steps", training_steps), ("batch_size", batch_size)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"model.{key} = {value!r} must be a positive integer.")
  try:
    run = set_up(model_dir, overwrite, model, random_seed, batch_size, allow_config_change)
    fit_result = fit(run, training_steps)
    return finish(run, training_steps, eval_steps, *fit_result)
  except strategy_lib.PEER_FAILURES as e:
    if strategy_lib.current_cluster() is None:  # not a multi-worker run
      raise
    raise strategy_lib.lost_worker_error(
        e, options_lib.training_options()["collective_timeout"],
        os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR)) from None


@dataclasses.dataclass
class TrainingSetup:
  """What `set_up` makes for one training run and its later stages (`fit`, `finish`) use."""
  model_dir: str
  options: dict
  strategy: tf.distribute.Strategy
  chief: bool  # this process writes the outputs
  started: float  # time.time() at set-up
  random_seed: int
  batch_size: int  # global
  devices: dict  # what trains (devices_lib.report), recorded in the results
  ground_truth_data: object
  image_shape: list
  vae: keras.Model
  manager: tf.train.CheckpointManager
  write_dir: str  # where this process saves checkpoints
  start_step: int  # restored from a checkpoint, else 0


def set_up(model_dir, overwrite, model_class, random_seed, batch_size, allow_config_change=False):
  """Strategy, model_dir, data and the model, restored from the latest checkpoint if any."""
  options = options_lib.training_options()
  if options["deterministic"]:
    tf.config.experimental.enable_op_determinism()
  # The strategy comes first: MultiWorkerMirroredStrategy must start before any other TF op.
  strategy = strategy_lib.make_strategy(options["strategy"], options["collective_timeout"])
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise UserError(f"model.batch_size = {batch_size} does not split evenly over {replicas} "
                    f"replicas: use a multiple of {replicas}.")
  devices = devices_lib.announce(strategy, batch_size, options["precision"])
  problem = devices_lib.precision_problem(options["precision"], strategy)
  if problem:  # before model_dir is touched
    raise UserError(problem + ".")
  warning = devices_lib.fallback_warning(options["precision"], strategy)
  if warning:  # it runs, correctly, but a user who asked for speed should hear the cost first
    print(warning, file=sys.stderr)
  chief = strategy_lib.is_chief(strategy)
  if chief:
    model_dir_lib.prepare(model_dir, overwrite, resume=True,
                          overwrite_does="train it again from scratch")
  elif model_dir_lib.is_finished(model_dir) and not overwrite:
    raise UserError(f"{model_dir} already holds a finished model ({model_dir_lib.FINISHED_MARKER} "
                    "exists); pass --overwrite (on every worker) to train it again.")
  # No worker reads model_dir before the chief has prepared it.
  strategy_lib.sync_workers(strategy)
  started = time.time()

  keras.utils.set_random_seed(random_seed)
  speedups.apply_now(speedups.SHAPES3D_MODULE)  # dlib's Shapes3D as uint8 (no 24 GB float copy)
  ground_truth_data = data_lib.load_ground_truth_data()
  image_shape = data_lib.observation_shape(ground_truth_data)

  with strategy.scope():
    vae = build_model(model_class, image_shape, random_seed, options["precision"],
                      jit_compile=options["jit_compile"])
    vae.optimizer.build(vae.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=vae, optimizer=vae.optimizer)
    # Every configurable has been called by now. Every worker checks (they stop together).
    config_text = checkpoints.check_config_unchanged(model_dir, allow_config_change)
    # Every worker resumes from the chief's checkpoints (model_dir must be shared).
    restored = checkpoints.restore_latest(
        checkpoint, os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR))
    if chief:  # only now: a run that fails before this point leaves the model_dir untouched
      checkpoints.record_config(model_dir, config_text)
    write_dir = checkpoints.checkpoint_write_dir(model_dir, strategy)
    if not chief:
      shutil.rmtree(write_dir, ignore_errors=True)  # a killed worker's stale copy
    manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                         max_to_keep=options["keep_checkpoints"] if chief else 1)
  start_step = int(vae.optimizer.iterations.numpy())
  if restored:
    logging.info("Resuming from %s at step %d.", restored, start_step)
    print(f"lievae_train: resuming from step {start_step} ({restored})", file=sys.stderr)
  return TrainingSetup(model_dir=model_dir, options=options, strategy=strategy, chief=chief,
                       started=started, random_seed=random_seed, batch_size=batch_size,
                       devices=devices, ground_truth_data=ground_truth_data,
                       image_shape=image_shape, vae=vae, manager=manager, write_dir=write_dir,
                       start_step=start_step)


def build_model(model_class, image_shape, random_seed, precision="float32", **compile_args):
  """The model with its variables and its (loss-scaled for float16) Adam, compiled."""
  with models.base.precision_policy(precision):
    vae = model_class(num_channels=image_shape[-1], seed=random_seed)
    vae.build_variables(image_shape)
  blocker = vae.jit_compile_blocker() if compile_args.get("jit_compile") else None
  if blocker:
    raise UserError(f"training.jit_compile = True cannot compile this model's step: {blocker}.")
  vae.compile(optimizer=options_lib.optimizer_for(precision, options_lib.make_optimizer()),
              **compile_args)
  return vae


def fit(run, training_steps):
  """Trains from the restored step to `training_steps`; returns (seconds, last logged terms)."""
  remaining = training_steps - run.start_step
  if remaining <= 0:
    return 0.0, {}
  options, strategy = run.options, run.strategy
  dataset = strategy.distribute_datasets_from_function(data_lib.make_input_fn(
      run.ground_truth_data, run.batch_size,
      random_streams.batch_seed(run.random_seed, random_streams.TRAINING_BATCHES),
      run.start_step, order=options["batch_order"]))
  # Only the chief writes TensorBoard logs; the others still reset their trackers in step.
  summary_writer = (tf.summary.create_file_writer(os.path.join(run.model_dir, "logs", "train"))
                    if run.chief else tf.summary.create_noop_writer())
  scalars = callbacks_lib.ScalarLogger(summary_writer, options["log_every"], run.batch_size)
  progress = callbacks_lib.ProgressBar(training_steps, run.start_step, options["log_every"],
                                       run.batch_size, options["progress_seconds"])
  fit_started = time.time()
  with callbacks_lib.stop_signals_caught() as stop_signal:
    checkpoint_on_stop = callbacks_lib.CheckpointOnStopSignal(stop_signal, run.manager,
                                                              strategy)
    callbacks = [callbacks_lib.StopOnNonFiniteLoss(), scalars,
                 callbacks_lib.PeriodicCheckpoint(run.manager, options["checkpoint_every"]),
                 checkpoint_on_stop, progress]
    if run.chief and options["image_every"]:
      callbacks.append(callbacks_lib.ImageLogger(
          summary_writer, options["image_every"],
          visualize.sample_images(run.ground_truth_data, run.random_seed)))
    try:
      run.vae.fit(dataset, epochs=1, steps_per_epoch=remaining, verbose=0, callbacks=callbacks)
    finally:
      progress.bar.close()  # before any error message, not after it
    train_seconds = time.time() - fit_started
    # The same decision on every worker: saving is a collective operation.
    if training_steps % options["checkpoint_every"]:
      checkpoints.save_checkpoint(run.manager, run.vae)
    # A signal after the last step's check still stops before the export.
    if checkpoint_on_stop.any_worker(stop_signal.is_set()):
      checkpoint_on_stop.stop()
  return train_seconds, scalars.last_logged


def finish(run, training_steps, eval_steps, train_seconds, final_training_terms):
  """Evaluates with z = mu, then (the chief) exports `tfhub/` and writes `results/`."""
  vae = run.vae
  eval_input = run.strategy.distribute_datasets_from_function(data_lib.make_input_fn(
      run.ground_truth_data, run.batch_size,
      random_streams.batch_seed(run.random_seed, random_streams.EVALUATION_BATCHES)))
  evaluation = vae.evaluate(eval_input, steps=eval_steps, verbose=0, return_dict=True)
  if not run.chief:
    shutil.rmtree(run.write_dir, ignore_errors=True)
    return vae

  remaining = training_steps - run.start_step
  results_dict = {f"train_{k}": float(v) for k, v in final_training_terms.items()}
  results_dict.update({f"eval_{k}": float(v) for k, v in evaluation.items()})
  results_dict.update(
      training_steps=training_steps, resumed_from_step=run.start_step,
      images_per_second=(remaining * run.batch_size / train_seconds) if train_seconds else None,
      **run.devices)
  tfhub_dir = os.path.join(run.model_dir, model_dir_lib.TFHUB_DIR)
  try:
    with _op_determinism_off():
      export.export_tfhub(vae, run.image_shape, tfhub_dir)
    results_dict["elapsed_time"] = time.time() - run.started
    # Written last: its presence marks the model finished.
    export.write_results(os.path.join(run.model_dir, model_dir_lib.RESULTS_DIR), results_dict,
                         extra_files=visualize.result_images(vae, run.ground_truth_data,
                                                             run.random_seed))
  except (tf.errors.OpError, OSError) as e:
    # e.g. a full disk. Each output is renamed into place only when complete; a module without
    # its results is removed too, so that nothing looks finished.
    shutil.rmtree(tfhub_dir, ignore_errors=True)
    raise UserError(
        f"the export to {run.model_dir} failed ({checkpoints.one_line_reason(e)}); no tfhub/ or "
        f"results/ was left. The last checkpoint ({run.manager.latest_checkpoint}) is kept: make "
        "room (or fix the disk) and re-run the same command to export it.") from None
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

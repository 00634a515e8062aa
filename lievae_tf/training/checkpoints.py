"""Checkpoints in the model_dir: where each worker saves, restoring the newest readable one,
saving only finite weights, and the gin config a resume must match."""

import errno
import os
import sys

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from lievae_tf import model_dir as model_dir_lib
from lievae_tf.errors import UserError
from lievae_tf.model_dir import CHECKPOINT_DIR
from lievae_tf.training import strategy as strategy_lib


def checkpoint_write_dir(model_dir, strategy):
  """Where this process saves: the chief in model_dir; other workers in a temporary directory.

  Every worker must save (saving reduces the loss trackers across workers), but only the chief's
  copy is kept, as TF's multi-worker guide recommends.
  """
  if strategy_lib.is_chief(strategy):
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


def one_line_reason(error):
  """The first line of an OSError's or TF error's message (TF's own can run to many lines)."""
  if isinstance(error, OSError) and error.strerror:
    return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
  text = getattr(error, "message", None) or str(error)
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  # A graph error's first line is "Graph execution error:"; the disk's reason comes later.
  disk_reasons = [os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                 errno.EIO, errno.EACCES)]
  for line in lines:
    if any(reason in line for reason in disk_reasons):
      return line[:300]
  return lines[0][:300] if lines else type(error).__name__


def save_checkpoint(manager, vae):
  """Saves, unless the weights went non-finite (a checkpoint must always be a good one)."""
  bad = [w.name for w in vae.trainable_weights if not np.all(np.isfinite(w.numpy()))]
  if bad:
    raise UserError(f"training diverged: non-finite weights {bad[:3]}; the last checkpoint "
                    f"({manager.latest_checkpoint}) is kept. Lower the learning rate "
                    "(optimizer.learning_rate) or the loss weights, then re-run to resume.")
  step = int(vae.optimizer.iterations.numpy())
  try:
    manager.save(checkpoint_number=step)
  except (tf.errors.OpError, OSError) as e:
    # e.g. a full disk: the `checkpoint` state file still names the last complete checkpoint;
    # the pieces of this one only take space.
    prefix = os.path.join(manager.directory, f"ckpt-{step}")
    for partial in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp*"):
      if tf.io.gfile.isdir(partial):
        tf.io.gfile.rmtree(partial)
      else:
        tf.io.gfile.remove(partial)
    raise UserError(
        f"the checkpoint of step {step} could not be written in {manager.directory} "
        f"({one_line_reason(e)}). The last good checkpoint ({manager.latest_checkpoint}) is "
        "kept: make room (or fix the disk) and re-run the same command to resume from it."
    ) from None


# The operative gin config of the run that wrote the checkpoints, beside them.
CONFIG_FILE = "operative_config.gin"


def _may_change_on_resume(key):
  """How long a run trains and how (checkpoints, logs, devices), but not what it trains."""
  return key == "model.training_steps" or key.startswith("training.")


def gin_bindings(config_text):
  """{'scope/configurable.parameter': repr(value)} of a gin config text."""
  parser = gin.config_parser.ConfigParser(config_text,
                                          gin.config.ParserDelegate(skip_unknown=True))
  bindings = {}
  for statement in parser:
    if isinstance(statement, gin.config_parser.BindingStatement):
      scope = f"{statement.scope}/" if statement.scope else ""
      bindings[f"{scope}{statement.selector}.{statement.arg_name}"] = repr(statement.value)
  return bindings


def check_config_unchanged(model_dir, allow_change):
  """Refuses to resume `model_dir` under gin settings that differ from those it was started
  with (other than model.training_steps and training.*), unless `allow_change`. Returns this
  run's operative config, for `record_config` once the run has restored its checkpoint.

  Call it once every configurable of the run has been called (gin records a configurable's
  parameters when it is called).
  """
  path = os.path.join(model_dir, CHECKPOINT_DIR, CONFIG_FILE)
  current_text = gin.operative_config_str()
  if os.path.isfile(path):
    with open(path) as f:
      saved = gin_bindings(f.read())
    current = gin_bindings(current_text)
    changed = [f"{key}: {saved.get(key, '(unset)')} -> {current.get(key, '(unset)')}"
               for key in sorted(set(saved) | set(current))
               if saved.get(key) != current.get(key) and not _may_change_on_resume(key)]
    if changed and not allow_change:
      raise UserError(
          f"{model_dir} was started with other gin settings; resuming it would mix two "
          f"configurations. Changed: {'; '.join(changed)}. Re-run with the settings it was "
          "started with (saved in " + path + "), pass --allow_config_change to resume with the "
          "new ones, or --overwrite to start again from scratch.")
    if changed:
      logging.warning("Resuming %s with changed gin settings: %s", model_dir, "; ".join(changed))
  return current_text


def record_config(model_dir, config_text):
  """Keeps `config_text` beside the checkpoints for the next resume's check (atomically; an
  unchanged file is left as it is)."""
  path = os.path.join(model_dir, CHECKPOINT_DIR, CONFIG_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      if f.read() == config_text:
        return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with model_dir_lib.atomic_file(path) as tmp:
    with open(tmp, "w") as f:
      f.write(config_text)

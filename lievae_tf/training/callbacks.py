"""The Keras callbacks of a run: stop on a non-finite loss, TensorBoard scalars and images
(`visualize`), periodic checkpoints, a checkpoint on a stop signal (preemption, a time limit,
Ctrl-C) and the progress bar."""

import contextlib
import math
import signal
import sys
import threading
import time

from absl import logging
import tensorflow as tf
import tqdm

from lievae_tf import errors
from lievae_tf import visualize
from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras
from lievae_tf.training import checkpoints
from lievae_tf.training import strategy as strategy_lib


class StopOnNonFiniteLoss(keras.callbacks.Callback):
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


class StepCounting(keras.callbacks.Callback):
  """`self.step(batch)`: the training step (`optimizer.iterations`) after batch `batch` of `fit`,
  counted from the value read once an epoch: a callback that acts every N steps then reads no
  variable on the others (an eager read cost about as much as all its other work a step)."""

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start_step = int(self.model.optimizer.iterations.numpy())

  def step(self, batch):
    # One optimizer step a batch (a skipped float16 step counts too: Keras' loss-scale optimizer
    # increments the iterations then as well).
    return self._epoch_start_step + batch + 1


class ScalarLogger(StepCounting):
  """Every `every` steps: TensorBoard scalars of each tracked term (its mean over those steps)
  and, given `batch_size` (global), `images_per_second`: the training rate since the previous
  log, everything a step costs in this run included (callbacks, checkpoints, images). The first
  window starts after this process's first step, which includes tracing."""

  def __init__(self, writer, every, batch_size=None):
    super().__init__()
    self._supports_tf_logs = True
    self.writer, self.every, self.batch_size = writer, every, batch_size
    self.last_logged = {}
    self._window = None  # (time.perf_counter(), step) where the current rate window began

  def on_train_batch_end(self, batch, logs=None):
    step = self.step(batch)
    if self._window is None:
      self._window = (time.perf_counter(), step)
    if step % self.every and batch + 1 != self.params["steps"]:
      return
    now = time.perf_counter()  # the next window starts here: it pays for this log's writing
    started, first = self._window
    self.last_logged = {k: float(v) for k, v in logs.items()}
    with self.writer.as_default(step=step):
      for name, value in self.last_logged.items():
        tf.summary.scalar(name, value)
      if self.batch_size and step > first:
        tf.summary.scalar("images_per_second", (step - first) * self.batch_size / (now - started))
    self.writer.flush()
    self.model.reset_metrics()
    self._window = (now, step)


class PeriodicCheckpoint(StepCounting):

  def __init__(self, manager, every):
    super().__init__()
    self._supports_tf_logs = True
    self.manager, self.every = manager, every

  def on_train_batch_end(self, batch, logs=None):
    if self.step(batch) % self.every == 0:
      checkpoints.save_checkpoint(self.manager, self.model)


class ImageLogger(StepCounting):
  """Every `every` steps and at the last one: TensorBoard images `reconstructions` and
  `latent_traversals` of fixed images."""

  def __init__(self, writer, every, images):
    super().__init__()
    self._supports_tf_logs = True
    self.writer, self.every, self.images = writer, every, images

  def on_train_batch_end(self, batch, logs=None):
    step = self.step(batch)
    if step % self.every and batch + 1 != self.params["steps"]:
      return
    with self.writer.as_default(step=step):
      tf.summary.image("reconstructions",
                       visualize.reconstructions(self.model, self.images)[None])
      tf.summary.image("latent_traversals",
                       visualize.traversals(self.model, self.images[0])[None])
    self.writer.flush()


class ProgressBar(keras.callbacks.Callback):
  """A tqdm bar over all training steps: steps/s, images/s and the recent mean loss."""

  def __init__(self, total_steps, start_step, every, batch_size, log_seconds=30.0):
    super().__init__()
    self._supports_tf_logs = True
    self.every, self.batch_size = every, batch_size
    interactive = sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         mininterval=0.5 if interactive else log_seconds, desc="lievae_train")
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


class Preempted(errors.Stopped):
  """Training stopped on a signal after saving a checkpoint; re-running resumes from it."""


# SIGUSR1/SIGUSR2: the warning a batch system sends before a time limit or a preemption (SLURM's
# `--signal=USR2@90`, which submitit requests); SIGTERM: a preempted VM, `kill`; SIGINT: Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def stop_signals_caught():
  """Within: the STOP_SIGNALS set the yielded Event instead of killing the process, so that
  training can save the current step first. A second SIGINT interrupts at once (Ctrl-C twice).
  Only the main thread can take signals; elsewhere the Event is never set."""
  received = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield received
    return

  def on_signal(signum, frame):
    del frame
    if received.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt
    received.signal_name = signal.Signals(signum).name
    received.set()

  previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
  try:
    yield received
  finally:
    for s, handler in previous.items():
      # None: a handler installed outside Python, which signal.signal cannot reinstall.
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class CheckpointOnStopSignal(keras.callbacks.Callback):
  """After the step during which a stop signal came (to any worker): every worker saves a
  checkpoint at that step, then training stops with `Preempted`.

  Under MultiWorkerMirroredStrategy the workers agree on the step with one scalar all-reduce per
  step: a preempted VM signals only its own process, and a save is collective.
  """

  def __init__(self, received, manager, strategy):
    super().__init__()
    self._supports_tf_logs = True
    self.received, self.manager = received, manager
    self.any_worker = strategy_lib.AnyWorker(strategy)

  def on_train_batch_end(self, batch, logs=None):
    if self.any_worker(self.received.is_set()):
      self.model.stop_training = True
      self.stop()

  def stop(self):
    step = int(self.model.optimizer.iterations.numpy())
    signal_name = getattr(self.received, "signal_name", "a stop signal")
    latest = self.manager.latest_checkpoint
    if not (latest and latest.endswith(f"ckpt-{step}")):  # not already saved at this step
      checkpoints.save_checkpoint(self.manager, self.model)
    path = self.manager.latest_checkpoint
    logging.info("%s: saved checkpoint %s at step %d.", signal_name, path, step)
    raise Preempted(f"stopped by {signal_name} at step {step}, after saving the checkpoint "
                    f"{path}. Re-run the same command to resume from step {step}.")

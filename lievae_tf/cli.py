"""What the `bin/lievae_*` commands share: quiet TF start-up and errors printed as one line."""

import os
import re
import sys

from lievae_tf.errors import UserError


def quiet_tensorflow():
  """Hides TF's C++ INFO start-up lines (oneDNN notices); warnings and errors still show."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _in_a_multi_worker_run():
  """Whether this process joined a TF cluster (its coordination service was configured)."""
  if "tensorflow" not in sys.modules:
    return False
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  return context.context().coordination_service is not None


def _end_of_output_in_a_multi_worker_run():
  """Closes stderr once a worker of a multi-worker run has said its last line.

  While a worker's interpreter tears down (seconds under TF), its coordination agent keeps sending
  heartbeats; once the chief has exited they fail and TF's C++ logs `UNAVAILABLE: failed to connect`
  errors after the command's own last line, which is what schedulers and log collectors show of a
  job. Nothing said after the command has finished is news to the user.
  """
  if not _in_a_multi_worker_run():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, sys.stderr.fileno())
  os.close(devnull)


def run(main):
  """`absl.app.run(main)` with the disentanglement_lib shims applied (`lievae_tf.dlib.shims`, also
  where no `.pth` hook did), printing a UserError as `prog: error: message` with its exit status
  (1; `errors.EXIT_STOPPED` for a run stopped by a signal, to be resumed)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from lievae_tf.dlib import shims  # pylint: disable=g-import-not-at-top
  shims.apply()

  def guarded_main(argv):
    try:
      status = main(argv)
    except UserError as e:
      # gin appends "In call to configurable ..." to exceptions raised under a configurable.
      message = re.sub(r"\n\s*In call to configurable .*", "", str(e))
      # One line, whatever a message quotes (e.g. a multi-line library error): log collectors
      # and schedulers show the last line of a failed job.
      message = " ".join(line.strip() for line in message.splitlines() if line.strip())
      print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
      _end_of_output_in_a_multi_worker_run()
      sys.exit(e.exit_status)
    _end_of_output_in_a_multi_worker_run()
    return status

  app.run(guarded_main)

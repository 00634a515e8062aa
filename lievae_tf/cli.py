"""What the `bin/lievae_*` commands share: quiet TF start-up and errors printed as one line."""

import os
import re
import sys

from lievae_tf.errors import UserError


def quiet_tensorflow():
  """Hides TF's C++ INFO start-up lines (oneDNN notices); warnings and errors still show."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def run(main):
  """`absl.app.run(main)` with the disentanglement_lib shims applied (`lievae_tf.compat`, also
  where no `.pth` hook did), printing a UserError as `prog: error: message` with its exit status
  (1; `errors.EXIT_STOPPED` for a run stopped by a signal, to be resumed)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from lievae_tf import compat  # pylint: disable=g-import-not-at-top
  compat.apply()

  def guarded_main(argv):
    try:
      return main(argv)
    except UserError as e:
      # gin appends "In call to configurable ..." to exceptions raised under a configurable.
      message = re.sub(r"\n\s*In call to configurable .*", "", str(e))
      # One line, whatever a message quotes (e.g. a multi-line library error): log collectors
      # and schedulers show the last line of a failed job.
      message = " ".join(line.strip() for line in message.splitlines() if line.strip())
      print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
      sys.exit(e.exit_status)

  app.run(guarded_main)

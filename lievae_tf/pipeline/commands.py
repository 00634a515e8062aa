"""Running the pipeline's steps as the real commands, in subprocesses."""

import os
import shlex
import subprocess
import sys

from lievae_tf.errors import UserError


def console_command(name):
  """The console script `name` of this environment."""
  path = os.path.join(os.path.dirname(sys.executable), name)
  return [path] if os.path.exists(path) else [name]


def run_logged(args, env, log_path):
  """Runs a pipeline step with its output (after the command line) in `log_path`; a failure is
  a UserError that shows the log's tail."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log:
    log.write("$ " + shlex.join(args) + "\n")
    log.flush()
    returncode = subprocess.call(args, env=env, stdout=log, stderr=subprocess.STDOUT)
  if returncode:
    with open(log_path) as log:
      tail = "".join(log.readlines()[-15:])
    raise UserError(f"{os.path.basename(args[0])} failed (exit {returncode}); its log is "
                    f"{log_path}:\n{tail}")

"""Running the pipeline's steps as the real commands, in subprocesses."""

import os
import re
import shlex
import subprocess
import sys

from lievae_tf import errors
from lievae_tf.errors import UserError


def console_command(name):
  """The console script `name` of this environment."""
  path = os.path.join(os.path.dirname(sys.executable), name)
  return [path] if os.path.exists(path) else [name]


def run_logged(args, env, log_path, show=None):
  """Runs a pipeline step with its output (after the command line) in `log_path`, and each output
  line that matches the regex `show` on the console too; a failure is a UserError that shows the
  log's tail, a step stopped by a signal (exit `errors.EXIT_STOPPED`, its work saved) an
  `errors.Stopped`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log:
    log.write("$ " + shlex.join(args) + "\n")
    log.flush()
    if show is None:
      returncode = subprocess.call(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    else:
      # Text mode splits on a progress bar's carriage returns too: each update is a line.
      with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace") as process:
        for line in process.stdout:
          log.write(line)
          if re.match(show, line):
            print("  " + line.strip(), flush=True)
      returncode = process.returncode
  if returncode:
    with open(log_path) as log:
      tail = "".join(log.readlines()[-15:])
    if returncode == errors.EXIT_STOPPED:
      raise errors.Stopped(f"{os.path.basename(args[0])} was stopped (exit {returncode}) after "
                           f"saving its work; its log is {log_path}:\n{tail}")
    raise UserError(f"{os.path.basename(args[0])} failed (exit {returncode}); its log is "
                    f"{log_path}:\n{tail}")

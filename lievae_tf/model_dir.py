"""What a run leaves in its `--model_dir`, named once for every stage, how a command prepares
it, and the atomic writes of every file and directory we write (no TensorFlow import)."""

import contextlib
import os
import shutil
import tempfile

from lievae_tf.errors import UserError

CHECKPOINT_DIR = "tf_checkpoint"
TFHUB_DIR = "tfhub"
RESULTS_DIR = "results"


def finished_marker(output_dir, step):
  """dlib writes `<output_dir>/results/aggregate/<step>.json` last: it marks the step finished."""
  return os.path.join(output_dir, RESULTS_DIR, "aggregate", f"{step}.json")


# A model_dir's, relative to it: training (and its export) finished.
FINISHED_MARKER = finished_marker("", "train")
# In the names of the temporaries of `atomic_directory`, which `remove_partial_outputs` finds.
_PARTIAL = ".partial-"


def is_finished(model_dir):
  """Whether `model_dir` holds a finished (trained and exported) model."""
  return os.path.isfile(os.path.join(model_dir, FINISHED_MARKER))


def prepare(model_dir, overwrite, resume, overwrite_does):
  """Makes `model_dir` ready for a command to write a model into it.

  A finished model is refused without `overwrite`; with it the whole directory is removed. The
  temporaries of an interrupted atomic write are removed. With `resume` (training) the rest is
  kept for the run to resume from, except an unfinished export; without it anything left there
  is refused, as it would be mixed with the new model. `overwrite_does` ends the refusals'
  "Pass --overwrite to ...".
  """
  if os.path.isdir(model_dir) and overwrite:
    shutil.rmtree(model_dir)
  elif is_finished(model_dir):
    raise UserError(f"{model_dir} already holds a finished model ({FINISHED_MARKER} exists); "
                    f"nothing was changed. Pass --overwrite to {overwrite_does}, or choose "
                    "another --model_dir.")
  if os.path.isdir(model_dir):
    remove_partial_outputs(model_dir)
    if resume:
      # An export that was interrupted after the module but before the results is redone.
      shutil.rmtree(os.path.join(model_dir, TFHUB_DIR), ignore_errors=True)
    elif os.listdir(model_dir):
      raise UserError(f"{model_dir} is not empty ({', '.join(sorted(os.listdir(model_dir))[:5])})"
                      f"; nothing was changed. Pass --overwrite to {overwrite_does}, or choose "
                      "another --model_dir.")
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, ".write-probe")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to --model_dir {model_dir}: {e.strerror}. Choose a directory "
                    "you can write to.") from None


def remove_partial_outputs(model_dir):
  """Deletes the temporaries that an interrupted `atomic_directory` may have left in `model_dir`."""
  for entry in os.listdir(model_dir):
    if entry.startswith(".") and _PARTIAL in entry:
      shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final_path):
  """Yields a fresh temporary directory beside `final_path`; renames it there on success."""
  parent = os.path.dirname(os.path.abspath(final_path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final_path)}{_PARTIAL}", dir=parent)
  try:
    yield tmp
    if os.path.exists(final_path):
      shutil.rmtree(final_path)
    os.rename(tmp, final_path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path):
  """Yields a temporary path beside `path`, renamed to `path` when the block succeeds.

  The temporary file is in the same directory so that os.replace is atomic: an
  interrupted write never leaves a partial file under the final name.
  """
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    yield tmp_path
    # mkstemp creates the file 0600; give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise

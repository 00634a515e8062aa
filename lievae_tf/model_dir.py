"""What a run leaves in its `--model_dir`, named once for every stage (no TensorFlow import)."""

import contextlib
import os
import shutil
import tempfile

CHECKPOINT_DIR = "tf_checkpoint"
TFHUB_DIR = "tfhub"
RESULTS_DIR = "results"
# dlib writes `results/aggregate/<step>.json` last: it marks the step finished.
FINISHED_MARKER = os.path.join(RESULTS_DIR, "aggregate", "train.json")


def is_finished(model_dir):
  """Whether `model_dir` holds a finished (trained and exported) model."""
  return os.path.isfile(os.path.join(model_dir, FINISHED_MARKER))


@contextlib.contextmanager
def atomic_directory(final_path):
  """Yields a fresh temporary directory beside `final_path`; renames it there on success."""
  parent = os.path.dirname(os.path.abspath(final_path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final_path)}.partial-", dir=parent)
  try:
    yield tmp
    if os.path.exists(final_path):
      shutil.rmtree(final_path)
    os.rename(tmp, final_path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

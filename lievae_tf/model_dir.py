"""What a run leaves in its `--model_dir`, named once for every stage (no TensorFlow import)."""

import os

CHECKPOINT_DIR = "tf_checkpoint"
TFHUB_DIR = "tfhub"
RESULTS_DIR = "results"
# dlib writes `results/aggregate/<step>.json` last: it marks the step finished.
FINISHED_MARKER = os.path.join(RESULTS_DIR, "aggregate", "train.json")


def is_finished(model_dir):
  """Whether `model_dir` holds a finished (trained and exported) model."""
  return os.path.isfile(os.path.join(model_dir, FINISHED_MARKER))

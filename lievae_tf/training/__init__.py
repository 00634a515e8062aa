"""Training, by job: `train` (the run: set-up -> fit -> finish, and gin parsing), `strategy`
(devices and clusters), `devices` (what a run says it trains on), `checkpoints` (the model_dir,
checkpoints, the finished marker), `callbacks` (what runs after every step) and `options`
(`training.*`, `optimizer.*`)."""

from lievae_tf.model_dir import CHECKPOINT_DIR
from lievae_tf.model_dir import FINISHED_MARKER
from lievae_tf.model_dir import is_finished
from lievae_tf.training.options import make_optimizer
from lievae_tf.training.options import training_options
from lievae_tf.training.strategy import make_strategy
from lievae_tf.training.strategy import parse_tf_config
from lievae_tf.training.run import build_model
from lievae_tf.training.run import parse_gin
from lievae_tf.training.run import train
from lievae_tf.training.run import train_with_gin

__all__ = ["CHECKPOINT_DIR", "FINISHED_MARKER", "is_finished", "make_optimizer", "training_options",
           "make_strategy", "parse_tf_config", "parse_gin", "train", "train_with_gin"]

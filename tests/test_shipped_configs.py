"""The published settings' gin files train as the paper code does: `lievae_train` with
gin_configs/dsprites.gin and shapes3d.gin steps with `PyTorchAdam` (torch.optim.Adam's epsilon
placement) and reads the data in shuffled epochs, not dlib's uniform draws."""

import json
import os
import subprocess
import sys

import pytest

import conftest

# The real bin/lievae_train, with two observers (they call through, changing nothing): the
# optimiser the built model steps with, and the order every input pipeline is made with.
OBSERVED_TRAIN = r"""
import json, runpy, sys
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.training import run as run_lib

seen = dict(orders=[])
make_input_fn, build_model = data_lib.make_input_fn, run_lib.build_model

def observed_input_fn(*args, order="uniform", **kwargs):
  seen["orders"].append(order)
  return make_input_fn(*args, order=order, **kwargs)

def observed_build_model(*args, **kwargs):
  vae = build_model(*args, **kwargs)
  optimizer = vae.optimizer
  seen["optimizer"] = type(optimizer).__module__ + "." + type(optimizer).__name__
  seen["epsilon"] = float(optimizer.epsilon)
  seen["learning_rate"] = float(optimizer.learning_rate.numpy())
  seen["betas"] = [float(optimizer.beta_1), float(optimizer.beta_2)]
  return vae

data_lib.make_input_fn, run_lib.build_model = observed_input_fn, observed_build_model
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
  runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
  if e.code:
    raise
print("RESULT " + json.dumps(seen))
"""


@pytest.mark.parametrize("config", ["dsprites.gin", "shapes3d.gin"])
def test_the_shipped_gin_files_train_with_pytorch_adam_and_shuffled_epochs(
    config, tmp_path, shapes3d_h5):
  bindings = ["training.image_every = 0"]
  if config == "shapes3d.gin":
    bindings += [f"lievae_data.shapes3d_h5 = '{shapes3d_h5}'",
                 "LieGroupVAE.subgroup_sizes = [16]", "LieGroupVAE.subspace_sizes = [4]"]
  args = conftest.train_args(str(tmp_path / "m"), *bindings, config=config)
  completed = subprocess.run(
      [sys.executable, "-c", OBSERVED_TRAIN, os.path.join(conftest.REPO, "bin", "lievae_train"),
       *args], capture_output=True, text=True, timeout=600)
  assert completed.returncode == 0, completed.stderr[-4000:]
  seen = json.loads([l for l in completed.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
  assert seen["optimizer"] == "lievae_tf.training.adam.PyTorchAdam", seen
  assert seen["epsilon"] == 1e-8 and seen["betas"] == [0.9, 0.999], seen
  assert abs(seen["learning_rate"] - 1e-4) <= 1e-4 * 2**-23, seen  # a float32 variable
  # The training stream (made first) in epochs; the evaluation batches after it are dlib's draws.
  assert seen["orders"][0] == "epochs" and seen["orders"].count("epochs") == 1, seen
  with open(tmp_path / "m" / "results" / "aggregate" / "train.json") as f:
    recorded = json.load(f)
  assert recorded["train_config.optimizer.epsilon_placement"] == "'pytorch'"
  assert recorded["train_config.training.batch_order"] == "'epochs'"

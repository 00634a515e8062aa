"""`lievae_train` as users run it: bad input is one clear line and loses nothing; resume."""

import hashlib
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import conftest
from conftest import command, train_args


def _assert_clean_error(result, *words):
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if "lievae_train: error:" in l]
  assert len(lines) == 1, result.stderr[-3000:]
  message = result.stderr[result.stderr.index("lievae_train: error:"):]
  for word in words:
    assert word in message, message
  return message


def _snapshot(directory):
  """{relative path: (size, mtime, sha256)} of every file below `directory`."""
  snapshot = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      stat = os.stat(path)
      snapshot[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns, digest)
  return snapshot


def test_missing_data_names_the_path_and_the_fix(tmp_path):
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=str(tmp_path / "nowhere"))
  result = command("lievae_train", *train_args(str(tmp_path / "m")), env=env)
  _assert_clean_error(result, str(tmp_path / "nowhere" / "dsprites"), "DISENTANGLEMENT_LIB_DATA",
                      "lievae_make_data")


def test_malformed_data_file_is_named(tmp_path):
  path = tmp_path / "data" / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
  path.parent.mkdir(parents=True)
  np.savez(path, images=np.zeros((2, 64, 64), np.uint8))  # wrong keys
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=str(tmp_path / "data"))
  result = command("lievae_train", *train_args(str(tmp_path / "m")), env=env)
  _assert_clean_error(result, str(path), "not a valid data file")


@pytest.mark.parametrize("bindings, words", [
    (["LieGroupVAE.subgroup_sizes = [99]"], ["99", "not a perfect square"]),
    (["LieGroupVAE.subspace_sizes = [5, 5]"], ["[100]", "[5, 5]", "different lengths"]),
    (["LieGroupVAE.hy_hess = 1.0"], ["hy_hess"]),
    (["LieGrupVAE.hy_hes = 1.0"], ["LieGrupVAE"]),
    (["dataset.name = 'dsprite'"], ["'dsprite'", "dsprites_full"]),
    (["model.batch_size = 0"], ["model.batch_size = 0", "positive"]),
])
def test_bad_configuration_is_one_clear_line(tmp_path, bindings, words):
  result = command("lievae_train", *train_args(str(tmp_path / "m"), *bindings))
  _assert_clean_error(result, *words)
  assert not os.path.exists(tmp_path / "m" / "tf_checkpoint")


def test_gin_syntax_error_names_file_and_line(tmp_path):
  config = tmp_path / "broken.gin"
  config.write_text("model.training_steps = 5\nLieGroupVAE.hy_hes = = 2\n")
  result = command("lievae_train", f"--model_dir={tmp_path / 'm'}", f"--gin_config={config}")
  _assert_clean_error(result, str(config), "2")


def test_finished_model_dir_is_refused_untouched_then_overwritten(trained_model_dir):
  before = _snapshot(trained_model_dir)
  result = command("lievae_train", *train_args(trained_model_dir))
  _assert_clean_error(result, trained_model_dir, "--overwrite")
  assert _snapshot(trained_model_dir) == before


def test_overwrite_retrains(tmp_path):
  model_dir = str(tmp_path / "m")
  assert command("lievae_train", *train_args(model_dir)).returncode == 0
  uuid_before = _uuid(model_dir)
  result = command("lievae_train", *train_args(model_dir), "--overwrite")
  assert result.returncode == 0, result.stderr[-3000:]
  assert _uuid(model_dir) != uuid_before


def _uuid(model_dir):
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(model_dir, "results", "json", "train_results.json")) as f:
    return json.load(f)["uuid"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  model_dir = str(tmp_path / "m")
  result = command("lievae_train", *train_args(
      model_dir, "optimizer.learning_rate = 1000.0", "model.training_steps = 30",
      "training.checkpoint_every = 1"))
  _assert_clean_error(result, "non-finite loss", "total_kl", "checkpoint")
  latest = tf.train.latest_checkpoint(os.path.join(model_dir, "tf_checkpoint"))
  assert latest is not None
  reader = tf.train.load_checkpoint(latest)
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      assert np.all(np.isfinite(value)), name
  assert not os.path.exists(os.path.join(model_dir, "tfhub"))


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
  model_dir = str(tmp_path / "m")
  args = train_args(model_dir, "model.training_steps = 400", "training.checkpoint_every = 5",
                    "training.log_every = 50")
  process = subprocess.Popen([os.path.join(conftest.BIN, "lievae_train"), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint_dir = os.path.join(model_dir, "tf_checkpoint")
  deadline = time.time() + 300
  while tf.train.latest_checkpoint(checkpoint_dir) is None:
    assert process.poll() is None and time.time() < deadline, "no checkpoint was written"
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = int(tf.train.latest_checkpoint(checkpoint_dir).rsplit("-", 1)[1])
  assert 5 <= killed_at < 400

  result = command("lievae_train", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed_from = int(result.stderr.split("resuming from step ")[1].split()[0])
  assert resumed_from >= killed_at
  assert tf.train.latest_checkpoint(checkpoint_dir).endswith("ckpt-400")
  assert os.path.isfile(os.path.join(model_dir, "results", "aggregate", "train.json"))

"""`lievae_train` as users run it: bad input is one clear line and loses nothing; resume."""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import conftest
from conftest import command, train_args, wait_for_logged_step
import machine


def _assert_clean_error(result, *words, status=1):
  assert result.returncode == status, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if "lievae_train: error:" in l]
  assert len(lines) == 1, result.stderr[-3000:]
  message = result.stderr[result.stderr.index("lievae_train: error:"):]
  # The whole message is one line, and the last line of the output.
  assert "\n" not in message.rstrip("\n"), message
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


def _dsprites_file(tmp_path, images, factor_sizes):
  """A dSprites-format npz under tmp_path/data with the given images and metadata grid."""
  path = tmp_path / "data" / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
  path.parent.mkdir(parents=True)
  metadata = np.array({"latents_sizes": np.array(factor_sizes)}, dtype=object)
  np.savez(path, imgs=images, metadata=metadata, latents_classes=np.zeros((len(images), 6)),
           latents_values=np.zeros((len(images), 6)))
  return path


@pytest.mark.parametrize("shape, words", [
    ((384, 32, 32), ["(384, 32, 32)", "(384, 64, 64)"]),    # images of the wrong size
    ((100, 64, 64), ["(100, 64, 64)", "N = 384"]),          # not one image per grid point
])
def test_data_file_with_wrong_image_shape_is_named(tmp_path, shape, words):
  path = _dsprites_file(tmp_path, np.zeros(shape, np.uint8), conftest.TINY_GRID)
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=str(tmp_path / "data"))
  result = command("lievae_train", *train_args(str(tmp_path / "m")), env=env)
  _assert_clean_error(result, str(path), *words)
  assert not os.path.exists(tmp_path / "m" / "tf_checkpoint")


def test_malformed_data_file_is_named(tmp_path):
  path = tmp_path / "data" / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
  path.parent.mkdir(parents=True)
  np.savez(path, images=np.zeros((2, 64, 64), np.uint8))  # wrong keys
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=str(tmp_path / "data"))
  result = command("lievae_train", *train_args(str(tmp_path / "m")), env=env)
  _assert_clean_error(result, str(path), "not a valid data file", "imgs")  # the missing key


@pytest.mark.parametrize("bindings, words", [
    (["LieGroupVAE.subgroup_sizes = [99]"], ["99", "not a perfect square"]),
    (["LieGroupVAE.subspace_sizes = [5, 5]"], ["[100]", "[5, 5]", "different lengths"]),
    (["LieGroupVAE.hy_hess = 1.0"], ["hy_hess"]),
    (["LieGrupVAE.hy_hes = 1.0"], ["LieGrupVAE"]),
    (["dataset.name = 'dsprite'"], ["'dsprite'", "dsprites_full"]),
    (["model.batch_size = 0"], ["model.batch_size = 0", "positive"]),
    (["model.training_steps = 0"], ["model.training_steps = 0", "positive"]),
    (["training.strategy = 'mirored'"], ["'mirored'", "mirrored"]),
])
def test_bad_configuration_is_one_clear_line(tmp_path, bindings, words):
  result = command("lievae_train", *train_args(str(tmp_path / "m"), *bindings))
  _assert_clean_error(result, *words)
  assert not os.path.exists(tmp_path / "m" / "tf_checkpoint")


def test_gin_syntax_error_names_file_and_line(tmp_path):
  config = tmp_path / "broken.gin"
  config.write_text("model.training_steps = 5\nLieGroupVAE.hy_hes = = 2\n")
  result = command("lievae_train", f"--model_dir={tmp_path / 'm'}", f"--gin_config={config}")
  _assert_clean_error(result, str(config), "line 2", "hy_hes = = 2")


def test_unwritable_model_dir_is_named(tmp_path):
  # Below a regular file: no directory can be made there, even by root (chmod does not stop root).
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  model_dir = str(blocker / "m")
  result = command("lievae_train", *train_args(model_dir))
  _assert_clean_error(result, model_dir, "cannot write", "Choose a directory")
  assert blocker.read_text() == "not a directory"


def test_malformed_tf_config_is_named(tmp_path):
  # training.strategy = 'auto' takes the cluster from TF_CONFIG whenever it is set.
  env = dict(os.environ, TF_CONFIG='{"cluster": {"worker": ["localhost:2222"]}, "task": ')
  result = command("lievae_train", *train_args(str(tmp_path / "m")), env=env)
  _assert_clean_error(result, "TF_CONFIG is not valid JSON", '"task"', "index")
  assert not os.path.exists(tmp_path / "m")


# The machine's own setting, oneDNN held to AVX2, and oneDNN off: on an AVX-512 CPU these give
# oneDNN's kernels, a refusal and the fallback; on an AVX2-only CPU the fallback all three times.
BFLOAT16_ENVIRONMENTS = {"as_set": {}, "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2",
                                                      "TF_ENABLE_ONEDNN_OPTS": "1"},
                         "onednn_off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


@pytest.mark.parametrize("setting", sorted(BFLOAT16_ENVIRONMENTS))
def test_bfloat16_on_the_cpu_trains_says_how_or_is_refused_before_model_dir(tmp_path, setting):
  # A GPU, which has bfloat16 convolutions of its own, is hidden: this is about the CPU.
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", **BFLOAT16_ENVIRONMENTS[setting])
  expected = machine.expected_bfloat16(env)
  if expected is None:
    pytest.skip("cannot tell this CPU's bfloat16 kernels apart (not x86 Linux)")
  model_dir = tmp_path / "m"
  result = command("lievae_train", *train_args(str(model_dir), "model.training_steps = 2",
                                               "training.precision = 'mixed_bfloat16'"), env=env)
  where = machine.describe(env)
  if expected == "refused":
    _assert_clean_error(result, "training.precision = 'mixed_bfloat16' cannot run on CPU:0",
                        "ONEDNN_MAX_CPU_ISA=AVX2", "could not create a primitive descriptor",
                        "AVX-512", "training.precision = 'float32'")
    assert not os.path.exists(model_dir)
    return
  assert result.returncode == 0, f"{where}: {result.stderr[-3000:]}"
  with open(model_dir / "results" / "json" / "train_results.json") as f:
    assert json.load(f)["bfloat16_kernels"] == expected, where
  warnings = [l for l in result.stderr.splitlines() if "WARNING: training.precision" in l]
  if expected == "fallback":
    assert "mixed_bfloat16 on TensorFlow's fallback bfloat16 kernels" in result.stderr, where
    assert len(warnings) == 1, f"{where}: {result.stderr[-3000:]}"
    for words in ("fallback bfloat16 kernels", "slower than float32",
                  "training.precision = 'float32'"):
      assert words in warnings[0], warnings[0]
  else:
    assert "mixed_bfloat16 on oneDNN's bfloat16 kernels" in result.stderr, where
    assert not warnings, f"{where}: {warnings}"


def test_finished_model_dir_is_refused_untouched_then_overwritten(trained_model_dir):
  before = _snapshot(trained_model_dir)
  result = command("lievae_train", *train_args(trained_model_dir))
  _assert_clean_error(result, trained_model_dir, "--overwrite")
  assert _snapshot(trained_model_dir) == before


def test_overwrite_retrains(trained_model_dir, tmp_path):
  # A copy of the shared finished run (made by the same command and bindings) instead of a second
  # training run of its own.
  model_dir = str(tmp_path / "m")
  shutil.copytree(trained_model_dir, model_dir)
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


def _checkpoint_values(path):
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_killed_run_resumes_exactly(tmp_path):
  """SIGKILL after a checkpoint, re-run: it resumes from that step, finishes at the target step,
  and (op determinism on) its final checkpoint equals an uninterrupted run's bit for bit."""
  bindings = ("model.training_steps = 60", "training.checkpoint_every = 5",
              "training.log_every = 50", "training.deterministic = True")
  model_dir = str(tmp_path / "killed")
  args = train_args(model_dir, *bindings)
  process = subprocess.Popen([os.path.join(conftest.BIN, "lievae_train"), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint_dir = os.path.join(model_dir, "tf_checkpoint")

  def latest_step():
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    return int(latest.rsplit("-", 1)[1]) if latest else 0

  deadline = time.time() + 300
  while latest_step() < 20:  # late enough that Adam's moments carry real state
    assert process.poll() is None and time.time() < deadline, "no checkpoint was written"
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = latest_step()
  assert 20 <= killed_at < 60
  assert not os.path.exists(os.path.join(model_dir, "results"))

  result = command("lievae_train", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed_from = int(result.stderr.split("resuming from step ")[1].split()[0])
  assert resumed_from == killed_at
  assert f"ckpt-{killed_at}" in result.stderr
  assert tf.train.latest_checkpoint(checkpoint_dir).endswith("ckpt-60")
  assert os.path.isfile(os.path.join(model_dir, "results", "aggregate", "train.json"))

  reference_dir = str(tmp_path / "uninterrupted")
  assert command("lievae_train", *train_args(reference_dir, *bindings)).returncode == 0
  resumed = _checkpoint_values(os.path.join(checkpoint_dir, "ckpt-60"))
  reference = _checkpoint_values(os.path.join(reference_dir, "tf_checkpoint", "ckpt-60"))
  assert set(resumed) == set(reference)
  # Weights, Adam's moments and step, and the loss trackers' running sums: all identical.
  assert any(name.startswith("optimizer/_variables/") for name in resumed)
  different = [name for name in reference
               if not np.array_equal(resumed[name], reference[name])]
  assert different == []


def test_stop_signals_save_the_current_step_and_the_rerun_resumes_exactly(tmp_path):
  """SIGTERM (a preempted VM) mid-run: a checkpoint at the step reached, a one-line message that
  says how to resume, a non-zero exit; the re-run resumes from that very step; SIGINT (Ctrl-C) the
  same; the final checkpoint equals an uninterrupted run's (op determinism on)."""
  bindings = ("model.training_steps = 40", "training.checkpoint_every = 1000",
              "training.log_every = 2", "training.deterministic = True")
  model_dir = str(tmp_path / "preempted")
  args = train_args(model_dir, *bindings)
  checkpoint_dir = os.path.join(model_dir, "tf_checkpoint")
  stopped_at = []
  for stop_signal in (signal.SIGTERM, signal.SIGINT):
    earlier_events = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
    process = subprocess.Popen([os.path.join(conftest.BIN, "lievae_train"), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_logged_step(process, model_dir, earlier_events)
    sent = time.time()
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=60)
    assert time.time() - sent < 10, "the checkpoint took too long"
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    message = _assert_clean_error(result, f"stopped by {stop_signal.name} at step",
                                  "Re-run the same command to resume", status=75)
    step = int(message.split(" at step ")[1].split(",")[0])
    assert step < 40 and step > (stopped_at[-1] if stopped_at else 0), message
    # The only checkpoint of the run (checkpoint_every is beyond the end) is the one the signal made.
    assert tf.train.latest_checkpoint(checkpoint_dir) == os.path.join(checkpoint_dir,
                                                                      f"ckpt-{step}")
    assert f"ckpt-{step}" in message
    assert not os.path.exists(os.path.join(model_dir, "results"))
    if stopped_at:
      assert f"resuming from step {stopped_at[-1]}" in stderr
    stopped_at.append(step)

  result = command("lievae_train", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resuming from step {stopped_at[-1]}" in result.stderr
  reference_dir = str(tmp_path / "uninterrupted")
  assert command("lievae_train", *train_args(reference_dir, *bindings)).returncode == 0
  resumed = _checkpoint_values(os.path.join(checkpoint_dir, "ckpt-40"))
  reference = _checkpoint_values(os.path.join(reference_dir, "tf_checkpoint", "ckpt-40"))
  assert set(resumed) == set(reference)
  # Everything but the number of saves (3 against 1) is identical.
  different = [name for name in reference if not np.array_equal(resumed[name], reference[name])]
  assert different == ["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]


def _copy_unfinished(trained_model_dir, destination):
  """A copy of a trained model_dir without its export: what a run killed while exporting leaves."""
  shutil.copytree(trained_model_dir, destination)
  shutil.rmtree(os.path.join(destination, "results"))
  shutil.rmtree(os.path.join(destination, "tfhub"))
  return str(destination)


def test_resuming_with_changed_settings_is_refused_unless_allowed(trained_model_dir, tmp_path):
  model_dir = _copy_unfinished(trained_model_dir, tmp_path / "m")
  changed = ("LieGroupVAE.hy_hes = 20.0", "optimizer.learning_rate = 0.001",
             "model.training_steps = 9", "training.log_every = 3")  # the last two may change
  before = _snapshot(model_dir)
  result = command("lievae_train", *train_args(model_dir, *changed))
  message = _assert_clean_error(result, "LieGroupVAE.hy_hes: 40.0 -> 20.0",
                                "optimizer.learning_rate: 0.0001 -> 0.001",
                                "--allow_config_change", "--overwrite")
  assert "training_steps" not in message and "log_every" not in message
  assert _snapshot(model_dir) == before

  result = command("lievae_train", *train_args(model_dir, *changed), "--allow_config_change")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming from step 6" in result.stderr
  assert tf.train.latest_checkpoint(os.path.join(model_dir, "tf_checkpoint")).endswith("ckpt-9")


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(trained_model_dir, tmp_path,
                                                                  damage):
  model_dir = _copy_unfinished(trained_model_dir, tmp_path / "m")
  data_file = os.path.join(model_dir, "tf_checkpoint", "ckpt-6.data-00000-of-00001")
  with open(data_file, "r+b") as f:
    if damage == "truncate":
      f.truncate(os.path.getsize(data_file) // 2)
    else:
      f.seek(os.path.getsize(data_file) // 2)
      f.write(b"\xff" * 64)
  result = command("lievae_train", *train_args(model_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "warning: checkpoint" in result.stderr and "ckpt-6 is unreadable" in result.stderr
  assert "resuming from step 3" in result.stderr
  # It trained steps 4..6 again and replaced the broken checkpoint with a good one.
  assert len(_checkpoint_values(os.path.join(model_dir, "tf_checkpoint", "ckpt-6"))) > 0
  assert os.path.isfile(os.path.join(model_dir, "results", "aggregate", "train.json"))


def test_lost_checkpoint_state_file_still_resumes_from_the_newest(trained_model_dir, tmp_path):
  model_dir = _copy_unfinished(trained_model_dir, tmp_path / "m")
  os.remove(os.path.join(model_dir, "tf_checkpoint", "checkpoint"))
  result = command("lievae_train", *train_args(model_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming from step 6" in result.stderr


def test_no_readable_checkpoint_is_an_error_that_keeps_the_files(trained_model_dir, tmp_path):
  model_dir = _copy_unfinished(trained_model_dir, tmp_path / "m")
  for step in (3, 6):
    with open(os.path.join(model_dir, "tf_checkpoint", f"ckpt-{step}.index"), "wb") as f:
      f.write(b"not an index")
  before = _snapshot(model_dir)
  result = command("lievae_train", *train_args(model_dir))
  _assert_clean_error(result, "no readable checkpoint", "ckpt-6", "ckpt-3", "--overwrite")
  assert _snapshot(model_dir) == before


def test_export_killed_midway_leaves_nothing_that_looks_finished(tmp_path):
  """SIGKILL while the module is being written: no half module is left or taken as finished; the
  re-run resumes at the last step, exports again and cleans up."""
  model_dir = str(tmp_path / "m")
  args = train_args(model_dir)
  process = subprocess.Popen([os.path.join(conftest.BIN, "lievae_train"), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300

  def partials():
    return [e for e in (os.listdir(model_dir) if os.path.isdir(model_dir) else [])
            if ".partial-" in e]

  while not partials():
    assert process.poll() is None and time.time() < deadline, "the export was never seen"
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  from lievae_tf import training  # pylint: disable=g-import-not-at-top
  assert not training.is_finished(model_dir)
  assert not os.path.exists(os.path.join(model_dir, "results"))

  result = command("lievae_train", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming from step 6" in result.stderr
  assert training.is_finished(model_dir)
  assert os.path.isfile(os.path.join(model_dir, "tfhub", "saved_model.pb"))
  assert partials() == []

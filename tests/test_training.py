"""Training: the loss goes down, seeds reproduce, the input pipeline, logs and checkpoints."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import conftest
from lievae_tf.data import ground_truth as data_lib
from lievae_tf import models
from lievae_tf import training
from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras


def _dsprites():
  import gin  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import
  gin.clear_config()
  gin.bind_parameter("dataset.name", "dsprites_full")
  try:
    return data_lib.load_ground_truth_data()
  finally:
    gin.clear_config()


def _elements(input_fn, count, context=None):
  return [x.numpy() for x in input_fn(context).take(count)]


def test_a_few_steps_lower_the_loss():
  data = _dsprites()
  images = next(iter(data_lib.make_input_fn(data, 32, seed=0)()))
  keras.utils.set_random_seed(0)
  vae = models.LieGroupVAE(num_channels=1, subgroup_sizes=[100], subspace_sizes=[10])
  vae.build_variables([64, 64, 1])
  vae.compile(optimizer=training.make_optimizer(learning_rate=1e-3))
  before = vae.evaluate(images, batch_size=32, verbose=0, return_dict=True)
  vae.fit(tf.data.Dataset.from_tensors(images).repeat(), steps_per_epoch=25, verbose=0)
  after = vae.evaluate(images, batch_size=32, verbose=0, return_dict=True)
  assert after["loss"] < 0.8 * before["loss"]
  assert after["recon_loss"] < before["recon_loss"]


def test_input_pipeline_samples_the_dataset_as_a_function_of_seed_and_step():
  data = _dsprites()
  first = _elements(data_lib.make_input_fn(data, 16, seed=7), 4)
  assert first[0].shape == (16, 64, 64, 1) and first[0].dtype == np.float32
  # Every image is one of the dataset's.
  grid = data.images.reshape(len(data.images), -1).astype(np.float32)
  for image in first[0]:
    assert np.any(np.all(grid == image.reshape(1, -1), axis=1))
  # The same seed reads the same; a later start step reads where an earlier run would be.
  np.testing.assert_array_equal(_elements(data_lib.make_input_fn(data, 16, seed=7), 1)[0],
                                first[0])
  resumed = _elements(data_lib.make_input_fn(data, 16, seed=7, start_step=2), 2)
  np.testing.assert_array_equal(resumed[0], first[2])
  np.testing.assert_array_equal(resumed[1], first[3])
  other_seed = _elements(data_lib.make_input_fn(data, 16, seed=8), 1)[0]
  assert not np.array_equal(other_seed, first[0])


def test_replicas_together_read_the_global_batch():
  data = _dsprites()
  single = _elements(data_lib.make_input_fn(data, 16, seed=3), 2)
  two_replicas = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                            num_replicas_in_sync=2)
  split = _elements(data_lib.make_input_fn(data, 16, seed=3), 4, two_replicas)
  assert split[0].shape == (8, 64, 64, 1)
  np.testing.assert_array_equal(np.concatenate(split[:2]), single[0])
  np.testing.assert_array_equal(np.concatenate(split[2:]), single[1])


def _epoch_indices(seed, steps, num_images, batch):
  return [data_lib.epoch_batch_indices(seed, tf.constant(step, tf.int64), num_images, batch, 0,
                                       batch).numpy() for step in steps]


def test_shuffled_epochs_read_every_image_once_per_epoch():
  # 384 images at batch 16: 24 steps per epoch.
  first, second = (np.concatenate(_epoch_indices(5, range(e * 24, (e + 1) * 24), 384, 16))
                   for e in (0, 1))
  for epoch in (first, second):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(384))
  assert not np.array_equal(first, second)  # a fresh permutation per epoch
  assert not np.array_equal(first, np.arange(384))
  assert not np.array_equal(first, np.concatenate(_epoch_indices(6, range(24), 384, 16)))
  # A batch that does not divide the dataset: 3 steps of 100 per epoch, 84 images left out.
  epoch = np.concatenate(_epoch_indices(5, range(3), 384, 100))
  assert len(np.unique(epoch)) == 300 and epoch.max() < 384


def test_shuffled_epochs_pipeline_resumes_and_splits_over_replicas_exactly():
  data = _dsprites()
  images = data.images.reshape(len(data.images), 64, 64, 1).astype(np.float32)
  pipeline = _elements(data_lib.make_input_fn(data, 16, seed=7, order="epochs"), 26)
  for step in (0, 23, 24, 25):  # across the epoch boundary
    (indices,) = _epoch_indices(7, [step], len(images), 16)
    np.testing.assert_array_equal(pipeline[step], images[indices])
  resumed = _elements(data_lib.make_input_fn(data, 16, seed=7, start_step=23, order="epochs"), 3)
  for k in range(3):
    np.testing.assert_array_equal(resumed[k], pipeline[23 + k])
  two_replicas = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                            num_replicas_in_sync=2)
  split = _elements(data_lib.make_input_fn(data, 16, seed=7, order="epochs"), 4, two_replicas)
  np.testing.assert_array_equal(np.concatenate(split[:2]), pipeline[0])
  np.testing.assert_array_equal(np.concatenate(split[2:]), pipeline[1])


def test_shuffled_epochs_need_a_dataset_held_in_memory_and_at_least_one_batch():
  import gin  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="batch_order = 'epochs': the dataset has 384 images, "
                                      "fewer than one batch"):
    data_lib.make_input_fn(_dsprites(), 512, seed=0, order="epochs")
  gin.bind_parameter("dataset.name", "noisy_dsprites")
  try:
    noisy = data_lib.load_ground_truth_data()
  finally:
    gin.clear_config()
  with pytest.raises(UserError, match="needs a dataset whose images are all in memory"):
    data_lib.make_input_fn(noisy, 4, seed=0, order="epochs")
  gin.bind_parameter("training.batch_order", "shuffled")
  try:
    with pytest.raises(UserError, match="batch_order = 'shuffled' is not one of"):
      training.training_options()
  finally:
    gin.clear_config()


@pytest.mark.parametrize("value", [0, -5, "5", True])
def test_progress_seconds_must_be_a_positive_number(value):
  with pytest.raises(UserError, match=f"training.progress_seconds = {value!r} must be a positive"):
    training.training_options(progress_seconds=value)
  assert training.training_options(progress_seconds=2)["progress_seconds"] == 2.0


def test_two_input_pipelines_together_read_the_global_batch():
  """Two workers (one input pipeline each), two replicas each: worker w draws the batches of its
  replicas 2w and 2w+1, and the four slices together are exactly the one-device batch."""
  data = _dsprites()
  single = _elements(data_lib.make_input_fn(data, 16, seed=5, start_step=3), 2)
  per_worker = []
  for pipeline in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=4)
    per_worker.append(_elements(data_lib.make_input_fn(data, 16, seed=5, start_step=3), 4,
                                context))
  assert per_worker[0][0].shape == (4, 64, 64, 1)
  for step in range(2):
    # Each pipeline yields its replicas' batches in turn, step after step.
    replicas = [per_worker[w][2 * step + r] for w in range(2) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(replicas), single[step])
  assert not np.array_equal(per_worker[0][0], per_worker[1][0])


def test_datasets_without_an_image_grid_use_their_own_sampler():
  import gin  # pylint: disable=g-import-not-at-top
  gin.bind_parameter("dataset.name", "noisy_dsprites")
  try:
    data = data_lib.load_ground_truth_data()
  finally:
    gin.clear_config()
  assert data_lib.image_grid(data) is None
  batches = _elements(data_lib.make_input_fn(data, 4, seed=1), 2)
  assert batches[0].shape == (4, 64, 64, 3)
  assert not np.array_equal(batches[0], batches[1])
  np.testing.assert_array_equal(_elements(data_lib.make_input_fn(data, 4, seed=1), 1)[0],
                                batches[0])


def _train(model_dir, *bindings):
  return training.train_with_gin(
      model_dir, gin_config_files=[os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")],
      gin_bindings=conftest.SMALL_RUN + list(bindings))


def _logged_scalars(model_dir):
  (events,) = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
  accumulator = event_accumulator.EventAccumulator(
      events, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  images = {"reconstructions", "latent_traversals"}  # see _logged_images
  return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in
                accumulator.Tensors(tag)] for tag in accumulator.Tags()["tensors"]
          if tag not in images}


def test_same_seed_reproduces_and_another_seed_differs(tmp_path):
  runs = {name: _train(str(tmp_path / name), f"model.random_seed = {seed}")
          for name, seed in (("a", 3), ("b", 3), ("c", 4))}
  scalars = {name: _logged_scalars(str(tmp_path / name)) for name in runs}
  assert [s for s, _ in scalars["a"]["loss"]] == [s for s, _ in scalars["b"]["loss"]]
  assert [v for _, v in scalars["a"]["loss"]] == pytest.approx([v for _, v in scalars["b"]["loss"]],
                                                               rel=1e-5)
  for wa, wb in zip(runs["a"].trainable_weights, runs["b"].trainable_weights):
    np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-5, atol=1e-6)
  assert scalars["a"]["loss"][0][1] != pytest.approx(scalars["c"]["loss"][0][1], rel=1e-6)


def test_tensorboard_scalars_and_checkpoints(trained_model_dir):
  scalars = _logged_scalars(trained_model_dir)
  expected = set(models.LieGroupVAE.loss_term_names) | {f"kl_{i}" for i in range(10)}
  assert expected <= set(scalars)
  assert [step for step, _ in scalars["loss"]] == [2, 4, 6]  # every training.log_every steps
  # The training rate of each window (the first from the end of step 1): steps x batch 8 over the
  # time between the logs, which the events' own wall times bracket (within the few ms that
  # writing a log takes; a factor 2 leaves room for a loaded machine).
  assert [step for step, _ in scalars["images_per_second"]] == [2, 4, 6]
  (events,) = glob.glob(os.path.join(trained_model_dir, "logs", "train", "events.*"))
  accumulator = event_accumulator.EventAccumulator(events, size_guidance={
      event_accumulator.TENSORS: 0})
  accumulator.Reload()
  wall_times = [e.wall_time for e in accumulator.Tensors("loss")]
  for (_, rate), begin, end in zip(scalars["images_per_second"][1:], wall_times, wall_times[1:]):
    assert 0.5 < rate * (end - begin) / (2 * 8) < 2.0
  checkpoints = tf.train.get_checkpoint_state(os.path.join(trained_model_dir, "tf_checkpoint"))
  assert [os.path.basename(p) for p in checkpoints.all_model_checkpoint_paths] == [
      "ckpt-3", "ckpt-6"]


def test_results_hold_dataset_name_and_final_metrics(trained_model_dir):
  from disentanglement_lib.utils import results  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  gin_dict = results.gin_dict(os.path.join(trained_model_dir, "results", "gin", "train.gin"))
  assert gin_dict["dataset.name"] == "'dsprites_full'"
  assert gin_dict["LieGroupVAE.hy_hes"] == "40.0"
  assert gin_dict["model.training_steps"] == "6"
  with open(os.path.join(trained_model_dir, "results", "aggregate", "train.json")) as f:
    aggregate = json.load(f)
  for term in ("loss", "recon_loss", "hessian_loss", "kl_9"):
    assert np.isfinite(aggregate[f"train_results.train_{term}"])
    assert np.isfinite(aggregate[f"train_results.eval_{term}"])
  assert aggregate["train_results.training_steps"] == 6


def _logged_images(model_dir):
  (events,) = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
  accumulator = event_accumulator.EventAccumulator(
      events, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  images = {}
  for tag in ("reconstructions", "latent_traversals"):
    # An image summary is a string tensor: [width, height, encoded PNG].
    images[tag] = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
  return images


def test_traversal_codes_sweep_one_latent_per_row():
  from lievae_tf import visualize  # pylint: disable=g-import-not-at-top
  base = np.arange(3, dtype=np.float32) / 10
  codes = visualize.traversal_codes(base, 4.0, 5)
  assert codes.shape == (15, 3)
  for i in range(3):
    block = codes[i * 5:(i + 1) * 5]
    np.testing.assert_allclose(block[:, i], [-4, -2, 0, 2, 4])
    np.testing.assert_array_equal(np.delete(block, i, axis=1), np.delete(np.tile(base, [5, 1]),
                                                                         i, axis=1))


def test_tensorboard_images_and_the_traversal_png(trained_model_dir):
  """TensorBoard holds both pictures at the last step (image_every > training_steps); the PNG in
  results/ is the exported module's decoder applied to the traversal codes around the fixed
  image's mean."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  from lievae_tf import visualize  # pylint: disable=g-import-not-at-top
  logged = _logged_images(trained_model_dir)
  assert [step for step, _ in logged["latent_traversals"]] == [6]
  assert [step for step, _ in logged["reconstructions"]] == [6]
  width, height = (int(v) for v in logged["latent_traversals"][0][1][:2])
  assert (height, width) == (10 * 65 - 1, 8 * 65 - 1)  # 10 latents x 8 steps of 64x64, 1px gaps
  width, height = (int(v) for v in logged["reconstructions"][0][1][:2])
  assert (height, width) == (2 * 65 - 1, 8 * 65 - 1)  # inputs above reconstructions

  results = os.path.join(trained_model_dir, "results")
  png = np.asarray(Image.open(os.path.join(results, visualize.TRAVERSALS_PNG)), np.float32) / 255
  assert os.path.isfile(os.path.join(results, visualize.RECONSTRUCTIONS_PNG))
  module = hub.load(os.path.join(trained_model_dir, "tfhub"), tags=[])
  images = visualize.sample_images(_dsprites(), seed=0)  # model.random_seed of the SMALL_RUN
  mean = module.signatures["gaussian_encoder"](images=tf.constant(images[:1]))["mean"].numpy()
  codes = visualize.traversal_codes(mean[0], 4.0, 8)
  decoded = tf.sigmoid(module.signatures["decoder"](latent_vectors=tf.constant(codes))["images"])
  expected = visualize.grid(decoded.numpy(), 8)[..., 0]
  assert png.shape == expected.shape
  np.testing.assert_allclose(png, expected, atol=1 / 255 + 1e-4)


def test_the_pictures_import_no_training_stage():
  # Training's image callback uses `visualize`; `visualize` must not import training back (an
  # import cycle once made it keep a copy of training's step counting).
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  check = ("import sys; import lievae_tf.visualize; "
           "print(sorted(m for m in sys.modules if m.startswith('lievae_tf.training')))")
  result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == "[]"


def test_a_train_gin_written_before_the_staged_layout_still_trains(tmp_path):
  """Gin names are the user's interface: a saved train.gin of lievae_tf 0.1.0 parses and trains,
  and the run it makes saves every one of its bindings again (new options may add more)."""
  old = os.path.join(conftest.REPO, "tests", "data", "train_gin_v0.1.0.gin")
  model_dir = str(tmp_path / "m")
  training.train_with_gin(model_dir, gin_config_files=[old])
  saved = os.path.join(model_dir, "results", "gin", "train.gin")

  def bindings(path):
    with open(path) as f:
      return {line.strip() for line in f if " = " in line and not line.startswith("#")}

  assert bindings(old) <= bindings(saved)

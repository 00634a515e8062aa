"""docs/extending.md, done as a user would: a new model is one class and one gin file, a new
metric one module, one gin file and one registry entry."""

import json
import os
import sys
import textwrap

import gin
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from lievae_tf import training
from lievae_tf.evaluation import registry

TOY_MODEL = textwrap.dedent('''
    """A toy VAE outside lievae_tf: linear encoder and decoder."""
    import gin
    import tensorflow as tf

    from lievae_tf.keras2 import keras
    from lievae_tf.models import base


    @gin.configurable("ToyVAE", denylist=["num_channels", "seed"])
    class ToyVAE(base.GaussianEncoderVAE):
      def __init__(self, num_channels=1, num_latents=3, seed=0, name="toy_vae"):
        super().__init__(num_latents=num_latents, seed=seed, name=name)
        self.num_channels = num_channels  # each argument kept by its name: get_config reads it
        self.encoder = keras.Sequential([keras.layers.Flatten(),
                                         keras.layers.Dense(2 * num_latents)])
        self.decoder = keras.Sequential([keras.layers.Dense(64 * 64 * num_channels),
                                         keras.layers.Reshape((64, 64, num_channels))])

      def gaussian_encoder(self, images):
        mean, logvar = tf.split(self.encoder(images), 2, axis=1)
        return mean, logvar

      def decode_latents(self, z):
        return self.decoder(z)

      def regularizer(self, kl_loss, z_mean, z_logvar, z_sampled):
        return kl_loss  # the plain VAE: the loss is Bernoulli reconstruction + KL
''')

TOY_GIN = textwrap.dedent('''
    import toy_vae
    dataset.name = 'dsprites_full'
    model.model = @ToyVAE
    model.training_steps = 3
    model.batch_size = 8
    model.random_seed = 0
    model.eval_steps = 1
    ToyVAE.num_latents = 3
    training.image_every = 0
''')


def test_a_model_defined_outside_the_package_trains_and_exports_through_gin(tmp_path):
  (tmp_path / "toy_vae.py").write_text(TOY_MODEL)
  (tmp_path / "toy.gin").write_text(TOY_GIN)
  sys.path.insert(0, str(tmp_path))
  try:
    vae = training.train_with_gin(str(tmp_path / "run"), gin_config_files=[str(tmp_path / "toy.gin")])
  finally:
    sys.path.remove(str(tmp_path))
  assert type(vae).__name__ == "ToyVAE" and int(vae.optimizer.iterations.numpy()) == 3
  assert {"loss", "recon_loss", "regularizer", "total_kl", "elbo", "kl_2"} <= {
      m.name for m in vae.metrics}
  module = hub.load(str(tmp_path / "run" / "tfhub"), tags=[])
  images = tf.random.uniform([2, 64, 64, 1])
  mean = module.signatures["gaussian_encoder"](images=images)["mean"]
  np.testing.assert_allclose(mean, vae.gaussian_encoder(images)[0], atol=1e-5)


TOY_METRIC = textwrap.dedent('''
    """A toy metric: the mean absolute code of the sampled points."""
    import gin
    import numpy as np


    @gin.configurable("toy_metric", denylist=["ground_truth_data", "representation_function",
                                              "random_state", "artifact_dir"])
    def compute_toy_metric(ground_truth_data, representation_function, random_state,
                           artifact_dir=None, num_points=gin.REQUIRED):
      del artifact_dir
      observations = ground_truth_data.sample_observations(num_points, random_state)
      return {"mean_abs_code": float(np.mean(np.abs(representation_function(observations))))}
''')


def test_a_registered_metric_runs_in_dlibs_evaluation(tmp_path, trained_model_dir):
  (tmp_path / "toy_metric.py").write_text(TOY_METRIC)
  (tmp_path / "toy_metric.gin").write_text(
      "evaluation.evaluation_fn = @toy_metric\ndataset.name = 'auto'\n"
      "evaluation.random_seed = 0\ntoy_metric.num_points = 16\n")
  sys.path.insert(0, str(tmp_path))
  entry = registry.register(registry.Metric(
      "toy", "mean_abs_code", ("toy_metric",), own_config=str(tmp_path / "toy_metric.gin"),
      module="toy_metric", small_bindings=("toy_metric.num_points = 8",)))
  try:
    from disentanglement_lib.evaluation import evaluate  # pylint: disable=g-import-not-at-top
    from disentanglement_lib.postprocessing import postprocess  # pylint: disable=g-import-not-at-top
    registry.import_own_metrics()
    representation = str(tmp_path / "mean")
    postprocess.postprocess_with_gin(trained_model_dir, representation, overwrite=True,
                                     gin_config_files=[os.path.join(
                                         registry.dlib_config_dir(), "postprocess_configs",
                                         "mean.gin")])
    gin.clear_config()
    evaluate.evaluate_with_gin(representation, str(tmp_path / "toy"), overwrite=True,
                               gin_config_files=[entry.gin_config],
                               gin_bindings=["evaluation.name = 'toy'", *entry.small_bindings])
  finally:
    gin.clear_config()
    sys.path.remove(str(tmp_path))
    registry._METRICS.pop("toy")  # pylint: disable=protected-access
  with open(tmp_path / "toy" / "results" / "aggregate" / "evaluation.json") as f:
    scores = json.load(f)
  # The score recomputed here as the metric defines it: the first 8 draws of dlib's
  # RandomState(evaluation.random_seed) through the representation module's stock TF-Hub path.
  # dlib's evaluate scores through the weights-frozen module (lievae_tf/dlib/frozen_scoring.py),
  # whose convolutions may sum in another order: each code is then within a few float32 steps
  # of its scale (eps 1.2e-7 times the ~1e3 terms of a layer's sums bounds it by ~1e-4 relative),
  # and so is their mean of absolute values.
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top
  observations = named_data.get_named_ground_truth_data("dsprites_full").sample_observations(
      8, np.random.RandomState(0))
  with hub.eval_function_for_module(os.path.join(representation, "tfhub")) as f:
    codes = np.array(f(dict(images=observations), signature="representation",
                       as_dict=True)["default"])
  assert codes.shape == (8, 10)
  expected = float(np.mean(np.abs(codes)))
  assert abs(scores["evaluation_results.mean_abs_code"] - expected) <= 1e-4 * expected, (
      scores["evaluation_results.mean_abs_code"], expected)
  assert scores["evaluation_config.toy_metric.num_points"] == "8"

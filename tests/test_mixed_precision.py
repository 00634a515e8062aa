"""`training.precision`: mixed bfloat16 trains with float32 losses and exports a float32 module;
mixed float16 steps through Keras' loss scaling; float32 stays the default."""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

import conftest
from lievae_tf import models
from lievae_tf import training
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.errors import UserError

tf1 = tf.compat.v1


def _images(batch):
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import
  gin.clear_config()
  gin.bind_parameter("dataset.name", "dsprites_full")
  try:
    data = data_lib.load_ground_truth_data()
  finally:
    gin.clear_config()
  return next(iter(data_lib.make_input_fn(data, batch, seed=0)()))


def test_bfloat16_trains_with_float32_loss_terms():
  images = _images(32)
  tf.keras.utils.set_random_seed(0)
  vae = training.build_model(models.LieGroupVAE, [64, 64, 1], 0, "mixed_bfloat16")
  assert vae.encoder.compute_dtype == "bfloat16" and vae.decoder.compute_dtype == "bfloat16"
  assert vae.exp_map.compute_dtype == "float32"
  assert all(w.dtype == tf.float32 for w in vae.trainable_weights)
  assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored after building
  vae.optimizer.learning_rate.assign(1e-3)
  before = vae.evaluate(images, batch_size=32, verbose=0, return_dict=True)
  vae.fit(tf.data.Dataset.from_tensors(images).repeat(), steps_per_epoch=25, verbose=0)
  after = vae.evaluate(images, batch_size=32, verbose=0, return_dict=True)
  assert after["loss"] < 0.8 * before["loss"]
  moments = [v for v in vae.optimizer.variables if v.dtype.is_floating]
  assert moments and all(v.dtype == tf.float32 for v in moments)
  terms = vae.loss_terms(images, tf.random.normal([32, vae.num_latents]))
  for name in models.lie_vae.LOSS_TERMS + ("kl_per_latent", "mu", "logvar", "logits"):
    assert terms[name].dtype == tf.float32, name
    assert np.all(np.isfinite(terms[name].numpy())), name


def test_bfloat16_run_exports_a_float32_module_equal_to_its_weights_in_float32(tmp_path):
  model_dir = str(tmp_path / "bf16")
  vae = training.train_with_gin(
      model_dir, gin_config_files=[os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")],
      gin_bindings=conftest.SMALL_RUN + ["training.precision = 'mixed_bfloat16'"])
  assert vae.encoder.compute_dtype == "bfloat16"
  reference = models.LieGroupVAE(**vae.get_config())  # built float32 (the default policy)
  reference.build_variables([64, 64, 1])
  reference.set_weights(vae.get_weights())
  images = _images(8).numpy()
  latents = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
  mean, logvar = reference.gaussian_encoder(images)
  decoded = reference.decode_latents(latents)
  with tf.Graph().as_default():
    module = hub.Module(os.path.join(model_dir, "tfhub"))
    assert all(v.dtype.base_dtype == tf.float32 for v in module.variables)
    for signature in module.get_signature_names():
      for info in list(module.get_input_info_dict(signature).values()) + list(
          module.get_output_info_dict(signature).values()):
        assert info.dtype == tf.float32, signature
    encoded = module(dict(images=images), signature="gaussian_encoder", as_dict=True)
    decoder = module(dict(latent_vectors=latents), signature="decoder", as_dict=True)
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      got = session.run(dict(encoded, decoded=decoder["images"]))
  np.testing.assert_allclose(got["mean"], mean.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["logvar"], logvar.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["decoded"], decoded.numpy(), rtol=1e-5, atol=1e-4)
  # The bfloat16 network is not the float32 one: the check above compares like with like.
  bf16_mean, _ = vae.gaussian_encoder(images)
  assert not np.array_equal(bf16_mean.numpy(), mean.numpy())


def test_float16_steps_through_keras_loss_scaling():
  images = _images(2)
  vae = training.build_model(models.LieGroupVAE, [64, 64, 1], 0, "mixed_float16")
  assert isinstance(vae.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
  assert vae.encoder.compute_dtype == "float16"
  history = vae.fit(tf.data.Dataset.from_tensors(images).repeat(), steps_per_epoch=1, verbose=0)
  assert np.isfinite(history.history["loss"][-1])
  assert int(vae.optimizer.iterations.numpy()) == 1


def test_float32_is_the_default_and_a_wrong_precision_is_refused():
  assert training.training_options()["precision"] == "float32"
  vae = training.build_model(models.LieGroupVAE, [64, 64, 1], 0)
  assert vae.encoder.compute_dtype == "float32"
  assert not isinstance(vae.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
  with pytest.raises(UserError, match="training.precision = 'bfloat16' is not one of"):
    training.training_options(precision="bfloat16")

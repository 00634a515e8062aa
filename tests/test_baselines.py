"""The β-VAE baseline: dlib's architecture and loss in Keras, trained and exported by lievae_train."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from conftest import command, train_args
from lievae_tf.keras2 import keras
from lievae_tf.models import beta_vae
from lievae_tf.interop import export

tf1 = tf.compat.v1


def _dlib_variable_shapes(num_channels, num_latents):
  from disentanglement_lib.methods.shared import architectures  # pylint: disable=g-import-not-at-top
  with tf.Graph().as_default():
    images = tf1.placeholder(tf.float32, [None, 64, 64, num_channels])
    means, _ = architectures.conv_encoder(images, num_latents)
    architectures.deconv_decoder(means, [64, 64, num_channels])
    return [tuple(v.shape.as_list()) for v in tf1.trainable_variables()]


@pytest.mark.parametrize("num_channels", [1, 3])
def test_architecture_is_dlibs_conv_encoder_and_deconv_decoder(num_channels):
  # dlib's graph first: Keras layers made in a TF1 graph invalidate eager ones made before.
  theirs = _dlib_variable_shapes(num_channels, 7)
  vae = beta_vae.BetaVAE(num_channels=num_channels, num_latents=7)
  vae.build_variables([64, 64, num_channels])
  ours = [tuple(w.shape) for w in vae.encoder.trainable_weights + vae.decoder.trainable_weights]
  assert ours == theirs
  assert vae.call(tf.zeros([2, 64, 64, num_channels])).shape == (2, 64, 64, num_channels)


def test_loss_is_bernoulli_plus_beta_kl():
  keras.utils.set_random_seed(1)
  vae = beta_vae.BetaVAE(num_channels=1, num_latents=4, beta=3.0)
  rng = np.random.default_rng(0)
  images = (rng.uniform(size=(5, 64, 64, 1)) > 0.5).astype(np.float32)
  noise = rng.normal(size=(5, 4)).astype(np.float32)
  terms = vae.loss_terms(images, noise)
  mean, logvar = [t.numpy() for t in vae.gaussian_encoder(images)]
  logits = vae.decode_latents(mean + np.exp(logvar / 2) * noise).numpy()
  probability = 1 / (1 + np.exp(-logits.astype(np.float64)))
  bce = -(images * np.log(probability) + (1 - images) * np.log(1 - probability))
  recon = bce.reshape(5, -1).sum(1).mean()
  kl = (0.5 * (mean**2 + np.exp(logvar) - logvar - 1)).sum(1).mean()
  np.testing.assert_allclose(terms["recon_loss"], recon, rtol=1e-4)
  np.testing.assert_allclose(terms["loss"], recon + 3.0 * kl, rtol=1e-4)


def test_exported_module_equals_the_keras_model(tmp_path):
  keras.utils.set_random_seed(2)
  vae = beta_vae.BetaVAE(num_channels=3, num_latents=6)
  vae.build_variables([64, 64, 3])
  path = str(tmp_path / "tfhub")
  export.export_tfhub(vae, [64, 64, 3], path)
  images = np.random.default_rng(0).uniform(size=(3, 64, 64, 3)).astype(np.float32)
  latents = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
  module = hub.load(path, tags=[])
  got = module.signatures["gaussian_encoder"](images=tf.constant(images))
  mean, logvar = vae.gaussian_encoder(images)
  np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["logvar"], logvar, rtol=1e-5, atol=1e-5)
  decoded = module.signatures["decoder"](latent_vectors=tf.constant(latents))["images"]
  np.testing.assert_allclose(decoded, vae.decode_latents(latents), rtol=1e-5, atol=1e-5)


def test_lievae_train_trains_and_exports_the_beta_vae(tmp_path):
  model_dir = str(tmp_path / "m")
  result = command("lievae_train", *train_args(model_dir, "BetaVAE.beta = 4.0",
                                               config="beta_vae_dsprites.gin"))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(model_dir, "results", "gin", "train.gin")) as f:
    operative = f.read()
  assert "model.model = @BetaVAE" in operative and "BetaVAE.beta = 4.0" in operative
  with tf.Graph().as_default():
    module = hub.Module(os.path.join(model_dir, "tfhub"))
    assert module.get_output_info_dict("gaussian_encoder")["mean"].get_shape().as_list() == [None, 10]


def test_no_exp_config_selects_the_ablation(tmp_path):
  model_dir = str(tmp_path / "m")
  result = command("lievae_train", *train_args(model_dir, config="no_exp_dsprites.gin"))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(model_dir, "results", "gin", "train.gin")) as f:
    assert "LieGroupVAE.no_exp = True" in f.read()

"""Baselines trained and exported by the same `lievae_train`: dlib's β-VAE in Keras.

`BetaVAE` is disentanglement_lib's `BetaVAE` with its default architecture: `conv_encoder` and
`deconv_decoder` of `methods/shared/architectures.py` (TF1 `tf.layers`), rebuilt layer for layer
in Keras, and its loss: Bernoulli reconstruction (sigmoid cross-entropy on logits, summed over
pixels, `subtract_true_image_entropy=False` as dlib's default) + beta * KL, averaged over the
batch. (The `no_exp` ablation is `LieGroupVAE.no_exp = True`.)

`DlibVAE` is dlib's `BaseVAE` (its networks; its loss comes from `base.GaussianEncoderVAE`), and
`BetaVAE` adds, as dlib's does, `beta` and a `regularizer`; training, evaluation and export come
from the shared base. dlib's other variants (β-TCVAE, DIP-VAE, ...) are a subclass of `DlibVAE`
each that defines `regularizer` (docs/extending.md, tests/test_dlib_variant.py).
"""

import gin

from lievae_tf.keras2 import keras
from lievae_tf.models import base

layers = keras.layers

class ConvEncoder(layers.Layer):
  """dlib's `conv_encoder`: images -> (means, log_var)."""

  def __init__(self, num_latents, **kwargs):
    super().__init__(**kwargs)
    self.body = keras.Sequential([
        layers.Conv2D(32, 4, strides=2, padding="same", activation="relu", name="e1"),
        layers.Conv2D(32, 4, strides=2, padding="same", activation="relu", name="e2"),
        layers.Conv2D(64, 2, strides=2, padding="same", activation="relu", name="e3"),
        layers.Conv2D(64, 2, strides=2, padding="same", activation="relu", name="e4"),
        layers.Flatten(),
        layers.Dense(256, activation="relu", name="e5"),
    ], name="body")
    self.means = layers.Dense(num_latents, name="means")
    self.log_var = layers.Dense(num_latents, name="log_var")

  def call(self, images):
    features = self.body(images)
    return self.means(features), self.log_var(features)


def deconv_decoder(num_latents, num_channels, name="decoder"):
  """dlib's `deconv_decoder`: latents -> image logits (B, 64, 64, C)."""
  return keras.Sequential([
      layers.Dense(256, activation="relu", name="d1"),
      layers.Dense(1024, activation="relu", name="d2"),
      layers.Reshape((4, 4, 64)),
      layers.Conv2DTranspose(64, 4, strides=2, padding="same", activation="relu", name="d3"),
      layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu", name="d4"),
      layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu", name="d5"),
      layers.Conv2DTranspose(num_channels, 4, strides=2, padding="same", name="d6"),
  ], name=name)


class DlibVAE(base.GaussianEncoderVAE):
  """dlib's `BaseVAE`: its default encoder and decoder, and (from the base class) its loss,
  reconstruction + `regularizer`. A variant is a gin-configurable subclass that takes its
  hyperparameters and defines `regularizer`, as `BetaVAE` below and dlib's own variants do."""

  def __init__(self, num_channels: int = 1, num_latents: int = 10, seed: int = 0, name=None):
    super().__init__(num_latents=num_latents, seed=seed, name=name)
    self.num_channels = num_channels
    self.encoder = ConvEncoder(num_latents, name="encoder")
    self.decoder = deconv_decoder(num_latents, num_channels)

  def gaussian_encoder(self, images):
    return base.as_float32(*self.encoder(images))

  def decode_latents(self, z):
    return base.as_float32(self.decoder(z))


@gin.configurable("BetaVAE", denylist=["num_channels", "seed"])
class BetaVAE(DlibVAE):
  """β-VAE (Higgins et al. 2017) as disentanglement_lib trains it.

  Args:
    num_channels: image channels; set from the dataset.
    num_latents: latent dimensions (dlib's `encoder.num_latent`; 10 in its studies).
    beta: weight of the KL term (dlib's study uses 1, 2, 4, 6, 8, 16).
    seed: seed of the per-step reparameterisation noise; set from `model.random_seed`.
  """

  regularizer_name = "beta_kl"

  def __init__(self, num_channels: int = 1, num_latents: int = 10, beta: float = 1.0,
               seed: int = 0, name="beta_vae"):
    super().__init__(num_channels, num_latents, seed, name)
    self.beta = beta

  def regularizer(self, kl_loss, z_mean, z_logvar, z_sampled):
    del z_mean, z_logvar, z_sampled
    return self.beta * kl_loss

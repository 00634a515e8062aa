"""Baselines trained and exported by the same `lievae_train`: dlib's β-VAE in Keras.

`BetaVAE` is disentanglement_lib's `BetaVAE` with its default architecture: `conv_encoder` and
`deconv_decoder` of `methods/shared/architectures.py` (TF1 `tf.layers`), rebuilt layer for layer
in Keras, and its loss: Bernoulli reconstruction (sigmoid cross-entropy on logits, summed over
pixels, `subtract_true_image_entropy=False` as dlib's default) + beta * KL, averaged over the
batch. (The `no_exp` ablation is `LieGroupVAE.no_exp = True`.)

It is a `base.GaussianEncoderVAE`: it supplies its networks and `loss_terms`; training, evaluation
and export come from the shared base.
"""

import gin
import tensorflow as tf

from lievae_tf.keras2 import keras
from lievae_tf.models import base

layers = keras.layers

LOSS_TERMS = ("loss", "recon_loss", "beta_kl", "total_kl", "elbo")


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


@gin.configurable("BetaVAE", denylist=["num_channels", "seed"])
class BetaVAE(base.GaussianEncoderVAE):
  """β-VAE (Higgins et al. 2017) as disentanglement_lib trains it.

  Args:
    num_channels: image channels; set from the dataset.
    num_latents: latent dimensions (dlib's `encoder.num_latent`; 10 in its studies).
    beta: weight of the KL term (dlib's study uses 1, 2, 4, 6, 8, 16).
    seed: seed of the per-step reparameterisation noise; set from `model.random_seed`.
  """

  loss_term_names = LOSS_TERMS

  def __init__(self, num_channels=1, num_latents=10, beta=1.0, seed=0, name="beta_vae"):
    super().__init__(dict(num_channels=num_channels, num_latents=num_latents, beta=beta,
                          seed=seed), num_latents=num_latents, name=name)
    self.encoder = ConvEncoder(num_latents, name="encoder")
    self.decoder = deconv_decoder(num_latents, num_channels)

  def gaussian_encoder(self, images):
    return base.as_float32(*self.encoder(images))

  def decode_latents(self, z):
    return base.as_float32(self.decoder(z))

  def loss_terms(self, images, noise, step=0):
    del step  # no schedule
    mean, logvar = self.gaussian_encoder(images)
    z = mean + tf.exp(logvar / 2) * noise
    logits = self.decode_latents(z)
    recon_loss = tf.reduce_mean(tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits), axis=[1, 2, 3]))
    kl_per_dim = 0.5 * (tf.square(mean) + tf.exp(logvar) - logvar - 1.0)
    total_kl = tf.reduce_mean(tf.reduce_sum(kl_per_dim, axis=1))
    beta_kl = self.config["beta"] * total_kl
    return dict(loss=recon_loss + beta_kl, recon_loss=recon_loss, beta_kl=beta_kl,
                total_kl=total_kl, elbo=-(recon_loss + total_kl),
                kl_per_latent=tf.reduce_mean(kl_per_dim, axis=0))

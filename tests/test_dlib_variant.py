"""A dlib-style variant through the base class: β-TCVAE is a `regularizer` (docs/extending.md)."""
import sys
import types

import gin
import numpy as np
import tensorflow as tf

from lievae_tf.dlib import shims
from lievae_tf.models import base, beta_vae


def total_correlation(z, mean, logvar):
  """Chen et al.'s minibatch TC estimate less its constant; log_q[j, i, l] = log q(z_jl | x_i)."""
  log_q = -0.5 * (tf.square(z[:, None] - mean) * tf.exp(-logvar) + logvar + np.log(2 * np.pi))
  joint = tf.reduce_logsumexp(tf.reduce_sum(log_q, axis=2), axis=1)  # log q(z_j)
  return tf.reduce_mean(joint - tf.reduce_sum(tf.reduce_logsumexp(log_q, axis=1), axis=1))


@gin.configurable("BetaTCVAE", denylist=["num_channels", "seed"])
class BetaTCVAE(beta_vae.DlibVAE):
  def __init__(self, num_channels=1, num_latents=10, beta=1.0, seed=0, name="beta_tc_vae"):
    super().__init__(num_channels, num_latents, seed, name)
    self.beta = beta
  def regularizer(self, kl_loss, z_mean, z_logvar, z_sampled):
    return (self.beta - 1.0) * total_correlation(z_sampled, z_mean, z_logvar) + kl_loss


def test_beta_tcvae_regulariser_is_dlibs_on_fixed_codes(monkeypatch):
  shims.add_contrib_framework(tf)  # dlib's vae.py imports tensorflow.contrib.tpu (TF1 only)
  monkeypatch.setitem(sys.modules, "tensorflow.contrib.tpu", types.ModuleType("tpu"))
  from disentanglement_lib.methods.unsupervised import vae as dlib
  mean, logvar, noise = tf.unstack(tf.random.stateless_normal([3, 32, 4], seed=[0, 1]))
  z, kl = base.reparameterise(mean, logvar, noise), base.total_kl(base.gaussian_kl(mean, logvar))
  ours, theirs = BetaTCVAE(num_latents=4, beta=6.0), dlib.BetaTCVAE(beta=6.0)  # (β-1) TC + KL
  np.testing.assert_allclose(ours.regularizer(kl, mean, logvar, z),
                             theirs.regularizer(kl, mean, logvar, z), rtol=1e-5)
  terms = ours.loss_terms(tf.zeros([32, 64, 64, 1]), noise)  # the base's loss adds it
  assert terms["loss"] == terms["recon_loss"] + terms["regularizer"]

"""The encoder and decoder networks of docs/model.md ("Encoder", "Decoder", the `no_exp` baseline).

PyTorch's Conv2d(k=4, s=2, p=1) halves 64 -> 32 with one pixel of padding on each side, which is
exactly TF's 'same' padding for these sizes; likewise ConvTranspose2d(k=4, s=2, p=1) and TF's
'same' Conv2DTranspose both double the size.

Initialisation: the paper code calls `xavier_uniform_` on the weight of every Linear, Conv2d and
ConvTranspose2d of these networks, which is Keras' default Glorot-uniform kernel initializer (the
fan-in + fan-out it sums is the same in both layouts). It leaves their biases at PyTorch's default,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)); `Biases('pytorch')` gives each layer that, `Biases('zeros')`
Keras' zeros.
"""

import math

import tensorflow as tf

from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras

layers = keras.layers

KERNEL_SIZE = 4
BIAS_INITS = ("pytorch", "zeros")


class Biases:
  """Bias initializers per layer, from the layer's fan-in as PyTorch computes it.

  PyTorch takes the fan-in from the weight's second axis times the kernel area: for nn.Linear
  (out, in) and nn.Conv2d (out, in, kh, kw) that is the input size, but nn.ConvTranspose2d keeps
  its weight as (in, out, kh, kw), so its bias bound comes from its OUTPUT channels.
  """

  def __init__(self, scheme):
    if scheme not in BIAS_INITS:
      raise UserError(f"bias_init {scheme!r} is not one of {BIAS_INITS}: 'pytorch' is the paper "
                      "code's (PyTorch's default bias of each layer), 'zeros' Keras' default.")
    self.scheme = scheme

  def _uniform(self, fan_in):
    if self.scheme == "zeros":
      return "zeros"
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)

  def dense(self, inputs):
    return self._uniform(inputs)

  def conv(self, in_channels):
    return self._uniform(in_channels * KERNEL_SIZE * KERNEL_SIZE)

  def deconv(self, out_channels):
    return self._uniform(out_channels * KERNEL_SIZE * KERNEL_SIZE)


def _conv(filters, in_channels, biases, name, activation="relu"):
  return layers.Conv2D(filters, KERNEL_SIZE, strides=2, padding="same", activation=activation,
                       bias_initializer=biases.conv(in_channels), name=name)


def _deconv(filters, biases, name, activation="relu"):
  return layers.Conv2DTranspose(filters, KERNEL_SIZE, strides=2, padding="same",
                                activation=activation, bias_initializer=biases.deconv(filters),
                                name=name)


def _dense(units, inputs, biases, name, activation=None):
  return layers.Dense(units, activation=activation, bias_initializer=biases.dense(inputs),
                      name=name)


def _mlp(inputs, hidden, out, biases, name):
  return keras.Sequential([_dense(hidden, inputs, biases, "hidden", activation="relu"),
                              _dense(out, hidden, biases, "out")], name=name)


class GroupEncoder(layers.Layer):
  """images (B, 64, 64, nc) -> (group features gE (B, G), mu (B, D), logvar (B, D))."""

  def __init__(self, num_channels, subgroup_sizes, subspace_sizes, biases, **kwargs):
    super().__init__(**kwargs)
    self.subgroup_sizes = list(subgroup_sizes)
    self.group_features = keras.Sequential([
        _conv(32, num_channels, biases, "conv_1"),
        _conv(32, 32, biases, "conv_2"),
        _conv(64, 32, biases, "conv_3"),
        _conv(64, 64, biases, "conv_4"),
        layers.Flatten(name="flatten"),  # (4, 4, 64) channels-last; torch flattens (64, 4, 4)
        _dense(256, 1024, biases, "dense_1", activation="relu"),
        _dense(sum(self.subgroup_sizes), 256, biases, "dense_2"),
    ], name="group_features")
    # One mean head and one log-variance head per subgroup, each on its slice of gE.
    self.to_means = [_mlp(s, 4 * s, d, biases, f"to_mean_{i}")
                     for i, (s, d) in enumerate(zip(subgroup_sizes, subspace_sizes))]
    self.to_logvars = [_mlp(s, 4 * s, d, biases, f"to_logvar_{i}")
                       for i, (s, d) in enumerate(zip(subgroup_sizes, subspace_sizes))]

  def call(self, images):
    group_feats = self.group_features(images)
    slices = tf.split(group_feats, self.subgroup_sizes, axis=-1)
    mu = tf.concat([head(g) for head, g in zip(self.to_means, slices)], axis=-1)
    logvar = tf.concat([head(g) for head, g in zip(self.to_logvars, slices)], axis=-1)
    return group_feats, mu, logvar


class GroupDecoder(layers.Layer):
  """Group features (B, G) -> image logits (B, 64, 64, nc): the reference's `post_exp`."""

  def __init__(self, num_channels, group_feature_size, biases, **kwargs):
    super().__init__(**kwargs)
    self.net = keras.Sequential([
        _dense(256, group_feature_size, biases, "dense_1", activation="relu"),
        _dense(1024, 256, biases, "dense_2", activation="relu"),
        layers.Reshape((4, 4, 64), name="reshape"),  # torch reshapes to (64, 4, 4)
        _deconv(64, biases, "deconv_1"),
        _deconv(32, biases, "deconv_2"),
        _deconv(32, biases, "deconv_3"),
        _deconv(num_channels, biases, "deconv_4", activation=None),
    ], name="post_exp")

  def call(self, group_feats):
    return self.net(group_feats)


def fake_exponential_map(num_latents, group_feature_size, biases, name="fake_exp"):
  """The `no_exp` ablation: an MLP z (B, D) -> (B, G) in place of the exponential map."""
  return _mlp(num_latents, 4 * num_latents, group_feature_size, biases, name)

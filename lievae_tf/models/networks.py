"""The encoder and decoder networks of docs/model.md ("Encoder", "Decoder", the `no_exp` baseline).

PyTorch's Conv2d(k=4, s=2, p=1) halves 64 -> 32 with one pixel of padding on each side, which is
exactly TF's 'same' padding for these sizes; likewise ConvTranspose2d(k=4, s=2, p=1) and TF's
'same' Conv2DTranspose both double the size. Keras' default kernel initializer is Glorot uniform
(the reference's xavier_uniform_) and its default bias initializer is zeros.
"""

import tensorflow as tf

layers = tf.keras.layers


def _conv(filters, name, activation="relu"):
  return layers.Conv2D(filters, 4, strides=2, padding="same", activation=activation, name=name)


def _deconv(filters, name, activation="relu"):
  return layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation=activation,
                                name=name)


def _mlp(hidden, out, name):
  return tf.keras.Sequential(
      [layers.Dense(hidden, activation="relu", name="hidden"), layers.Dense(out, name="out")],
      name=name)


class GroupEncoder(layers.Layer):
  """images (B, 64, 64, nc) -> (group features gE (B, G), mu (B, D), logvar (B, D))."""

  def __init__(self, subgroup_sizes, subspace_sizes, **kwargs):
    super().__init__(**kwargs)
    self.subgroup_sizes = list(subgroup_sizes)
    self.group_features = tf.keras.Sequential([
        _conv(32, "conv_1"),
        _conv(32, "conv_2"),
        _conv(64, "conv_3"),
        _conv(64, "conv_4"),
        layers.Flatten(name="flatten"),  # (4, 4, 64) channels-last; torch flattens (64, 4, 4)
        layers.Dense(256, activation="relu", name="dense_1"),
        layers.Dense(sum(self.subgroup_sizes), name="dense_2"),
    ], name="group_features")
    # One mean head and one log-variance head per subgroup, each on its slice of gE.
    self.to_means = [_mlp(4 * s, d, f"to_mean_{i}")
                     for i, (s, d) in enumerate(zip(subgroup_sizes, subspace_sizes))]
    self.to_logvars = [_mlp(4 * s, d, f"to_logvar_{i}")
                       for i, (s, d) in enumerate(zip(subgroup_sizes, subspace_sizes))]

  def call(self, images):
    group_feats = self.group_features(images)
    slices = tf.split(group_feats, self.subgroup_sizes, axis=-1)
    mu = tf.concat([head(g) for head, g in zip(self.to_means, slices)], axis=-1)
    logvar = tf.concat([head(g) for head, g in zip(self.to_logvars, slices)], axis=-1)
    return group_feats, mu, logvar


class GroupDecoder(layers.Layer):
  """Group features (B, G) -> image logits (B, 64, 64, nc): the reference's `post_exp`."""

  def __init__(self, num_channels, **kwargs):
    super().__init__(**kwargs)
    self.net = tf.keras.Sequential([
        layers.Dense(256, activation="relu", name="dense_1"),
        layers.Dense(1024, activation="relu", name="dense_2"),
        layers.Reshape((4, 4, 64), name="reshape"),  # torch reshapes to (64, 4, 4)
        _deconv(64, "deconv_1"),
        _deconv(32, "deconv_2"),
        _deconv(32, "deconv_3"),
        _deconv(num_channels, "deconv_4", activation=None),
    ], name="post_exp")

  def call(self, group_feats):
    return self.net(group_feats)


def fake_exponential_map(num_latents, group_feature_size, name="fake_exp"):
  """The `no_exp` ablation: an MLP z (B, D) -> (B, G) in place of the exponential map."""
  return _mlp(4 * num_latents, group_feature_size, name)

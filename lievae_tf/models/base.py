"""The interface every model that `lievae_train` trains and exports implements.

A model is a `GaussianEncoderVAE`: it supplies its networks (`gaussian_encoder`,
`decode_latents`), its loss (`loss_terms`) and, if it has any, its own per-step draws
(`training_draws`); this class owns the rest, once for every model: the Keras `train_step` /
`test_step`, the loss trackers, the per-step randomness and the scaling that makes N replicas
step as one device does. A new model is one subclass registered with `@gin.configurable` in a
module of `lievae_tf.models` (imported with the package) or in a module a gin file imports.
"""

import contextlib

import tensorflow as tf

from lievae_tf import random_streams
from lievae_tf.keras2 import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def precision_policy(precision):
  """Keras layers created inside compute in `precision` (their variables stay float32).

  A layer takes the global policy when it is created, so the policy is set only around building
  a model and restored after: the export, which builds the model again, then builds float32.
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def as_float32(*tensors):
  """The networks' outputs for the losses: float32 under a mixed-precision policy (a no-op in
  float32)."""
  cast = tuple(tf.cast(t, tf.float32) for t in tensors)
  return cast if len(cast) > 1 else cast[0]


def replica_noise(images, num_latents, step_key):
  """Reparameterisation noise for this replica's `images`, a pure function of `step_key`.

  Drawn for the global batch and sliced per replica, so that N replicas of batch B / N draw exactly
  the noise one device of batch B draws. Returns (noise, number of replicas in sync).
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context else 1
  replica = context.replica_id_in_sync_group if context else 0
  local_batch = tf.shape(images)[0]
  noise = tf.random.stateless_normal(
      [local_batch * replicas, num_latents],
      seed=random_streams.step_draw_key(step_key, random_streams.REPARAMETERISATION_NOISE))
  return noise[replica * local_batch:(replica + 1) * local_batch], replicas


class GaussianEncoderVAE(keras.Model):
  """A VAE with a Gaussian encoder, trained by Keras `fit` under any `tf.distribute` strategy.

  Subclasses implement (returning float32 tensors also when built under a mixed-precision
  policy, `training.precision`, so that the losses are computed and reduced in float32):
    gaussian_encoder(images) -> (mean, logvar), each (B, num_latents): the representation that
      disentanglement_lib scores, exported as the `gaussian_encoder` signature.
    decode_latents(z) -> image logits (B, 64, 64, C), exported as the `decoder` signature.
    loss_terms(images, noise, step, **draws) -> dict with at least `loss`, every name of
      `loss_term_names` and `kl_per_latent` (num_latents,). `noise` is standard normal (B, D)
      in training and zeros (z = mu) in evaluation.
  and may override:
    training_draws(step_key) -> extra keyword arguments of `loss_terms` in a training step, drawn
      from `step_key` (the same on every replica); `evaluation_draws()` likewise in evaluation.
    build_variables(image_shape): create every variable (the default runs encoder and decoder).
    jit_compile_blocker() -> None, or why the training step cannot be compiled by XLA
      (`training.jit_compile`) and what to set instead.

  The constructor takes `config` (the constructor's arguments, with `seed`, the per-step
  randomness' seed; saved with the model) and `num_latents`.
  """

  loss_term_names = ("loss",)

  def __init__(self, config, num_latents, name=None):
    super().__init__(name=name)
    self.config = dict(config)
    self.num_latents = num_latents
    # float32 whatever the precision policy the model is built under.
    self.trackers = {n: keras.metrics.Mean(name=n, dtype=tf.float32)
                     for n in self.loss_term_names}
    self.trackers.update({f"kl_{i}": keras.metrics.Mean(name=f"kl_{i}", dtype=tf.float32)
                          for i in range(num_latents)})

  # The interface.

  def gaussian_encoder(self, images):
    raise NotImplementedError

  def decode_latents(self, z):
    raise NotImplementedError

  def loss_terms(self, images, noise, step=0, **draws):
    raise NotImplementedError

  def training_draws(self, step_key):
    del step_key
    return {}

  def evaluation_draws(self):
    return {}

  def jit_compile_blocker(self):
    return None

  def build_variables(self, image_shape):
    """Creates every variable by one pass on a zero image; returns the model."""
    mean, _ = self.gaussian_encoder(tf.zeros([1] + list(image_shape)))
    self.decode_latents(mean)
    return self

  def call(self, images):
    """Deterministic reconstruction logits, decoded from z = mean."""
    mean, _ = self.gaussian_encoder(images)
    return self.decode_latents(mean)

  # Keras hooks, shared by every model.

  def get_config(self):
    return dict(self.config)

  @property
  def metrics(self):
    return list(self.trackers.values())

  def train_step(self, images):
    step = self.optimizer.iterations
    key = random_streams.step_key(self.config["seed"], step)
    noise, replicas = replica_noise(images, self.num_latents, key)
    with tf.GradientTape() as tape:
      terms = self.loss_terms(images, noise, step=step, **self.training_draws(key))
      # Replica gradients are summed: scale so N replicas step as one device on the global batch.
      scaled_loss = terms["loss"] / replicas
    self.optimizer.minimize(scaled_loss, self.trainable_variables, tape=tape)
    return self._track(terms)

  def test_step(self, images):
    terms = self.loss_terms(images, tf.zeros([tf.shape(images)[0], self.num_latents]),
                            step=self.optimizer.iterations, **self.evaluation_draws())
    return self._track(terms)

  def _track(self, terms):
    for name in self.loss_term_names:
      self.trackers[name].update_state(terms[name])
    for i in range(self.num_latents):
      self.trackers[f"kl_{i}"].update_state(terms["kl_per_latent"][i])
    return {name: tracker.result() for name, tracker in self.trackers.items()}

"""The interface every model that `lievae_train` trains and exports implements, and the VAE maths
they share.

A model is a `GaussianEncoderVAE`: it supplies its networks (`gaussian_encoder`,
`decode_latents`) and either a `regularizer` (a disentanglement_lib-style variant: the loss is
dlib's `BaseVAE` loss, reconstruction + regulariser) or a `loss_terms` of its own, and, if it has
any, its own per-step draws (`training_draws`). This module owns the rest, once for every model:
the reparameterisation, the diagonal-Gaussian KL and the reconstruction losses (`reparameterise`,
`gaussian_kl`, `reconstruction_loss`), the Keras `train_step` / `test_step`, the loss trackers,
the per-step randomness and the scaling that makes N replicas step as one device does. A new model
is one subclass registered with `@gin.configurable` in a module of `lievae_tf.models` (imported
with the package) or in a module a gin file imports.
"""

import contextlib
import inspect

import tensorflow as tf

from lievae_tf import random_streams
from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
RECONSTRUCTION_LOSSES = ("bce", "l2")


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


def reparameterise(mean, logvar, noise):
  """z = mean + exp(logvar / 2) * noise: a draw of N(mean, exp(logvar)) for standard normal
  `noise` (dlib's `sample_from_latent_distribution`, with the noise given)."""
  return mean + tf.exp(logvar / 2) * noise


def gaussian_kl(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) of each example and latent, (B, D).

  In the paper code's form; dlib's `compute_gaussian_kl` is the same sum, written
  0.5 (mean^2 + exp(logvar) - logvar - 1), summed over latents and averaged over the batch
  (`total_kl` below).
  """
  return -0.5 * (1.0 + logvar - tf.square(mean) - tf.exp(logvar))


def total_kl(kl_per_dim):
  """The KL of each example (summed over latents), averaged over the batch: dlib's `kl_loss`."""
  return tf.reduce_mean(tf.reduce_sum(kl_per_dim, axis=1))


def check_reconstruction_loss(loss_type):
  """Raises a UserError unless `loss_type` (a model's `recons_loss_type`) is one we compute."""
  if loss_type not in RECONSTRUCTION_LOSSES:
    raise UserError(f"recons_loss_type {loss_type!r} is not one of {RECONSTRUCTION_LOSSES}: use "
                    "'bce' for binary images (dSprites) or 'l2'.")


def reconstruction_loss(images, logits, loss_type="bce"):
  """dlib's `make_reconstruction_loss` on logits, summed over pixels and averaged over the batch.

  'bce': `bernoulli_loss` (sigmoid cross-entropy, `subtract_true_image_entropy=False`, dlib's
  default; the paper code's on dSprites); 'l2': `l2_loss`, the squared error of sigmoid(logits)
  (the paper code's on 3DShapes).
  """
  check_reconstruction_loss(loss_type)
  if loss_type == "bce":
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
  else:  # 'l2'
    per_pixel = tf.square(tf.sigmoid(logits) - images)
  return tf.reduce_mean(tf.reduce_sum(per_pixel, axis=[1, 2, 3]))


class GaussianEncoderVAE(keras.Model):
  """A VAE with a Gaussian encoder, trained by Keras `fit` under any `tf.distribute` strategy.

  Subclasses implement (returning float32 tensors also when built under a mixed-precision
  policy, `training.precision`, so that the losses are computed and reduced in float32):
    gaussian_encoder(images) -> (mean, logvar), each (B, num_latents): the representation that
      disentanglement_lib scores, exported as the `gaussian_encoder` signature.
    decode_latents(z) -> image logits (B, 64, 64, C), exported as the `decoder` signature.
  and, for their loss, either
    regularizer(kl_loss, z_mean, z_logvar, z_sampled) -> scalar, as dlib's VAE variants do: the
      loss is then dlib's `BaseVAE` loss, `reconstruction_loss` (of `recons_loss_type`) +
      regularizer (tracked as `regularizer_name`), with `total_kl` (dlib's `kl_loss`) and `elbo`.
      A schedule reads the step as `self.optimizer.iterations` (dlib's reads the global step).
  or
    loss_terms(images, noise, step=0, **draws) -> dict with at least `loss`, every name of
      `loss_term_names` and `kl_per_latent` (num_latents,). `noise` is standard normal (B, D)
      in training and zeros (z = mu) in evaluation; `draws` are `training_draws`'.
  and may override:
    training_draws(step_key) -> extra keyword arguments of `loss_terms` in a training step, drawn
      from `step_key` (the same on every replica); `evaluation_draws()` likewise in evaluation.
    build_variables(image_shape): create every variable (the default runs encoder and decoder).
    jit_compile_blocker() -> None, or why the training step cannot be compiled by XLA
      (`training.jit_compile`) and what to set instead.

  Hyperparameters are the subclass constructor's keyword arguments (the gin parameters users
  bind), each kept as the attribute of its name: `get_config` reads them back, and
  `type(vae)(**vae.get_config())` builds the same model again (the export does). This class takes
  `num_latents` and `seed`, the per-step randomness' seed (`model.random_seed`).
  """

  regularizer_name = "regularizer"
  recons_loss_type = "bce"  # dlib's default, `bernoulli_loss`

  def __init__(self, num_latents, seed=0, name=None):
    super().__init__(name=name)
    self.num_latents = num_latents
    self.seed = seed
    # float32 whatever the precision policy the model is built under.
    self.trackers = {n: keras.metrics.Mean(name=n, dtype=tf.float32)
                     for n in self.loss_term_names}
    self.trackers.update({f"kl_{i}": keras.metrics.Mean(name=f"kl_{i}", dtype=tf.float32)
                          for i in range(num_latents)})

  @property
  def loss_term_names(self):
    """The terms tracked, logged and saved in the results, in order; a model with a `loss_terms`
    of its own names its own."""
    return ("loss", "recon_loss", self.regularizer_name, "total_kl", "elbo")

  # The interface.

  def gaussian_encoder(self, images):
    raise NotImplementedError

  def decode_latents(self, z):
    raise NotImplementedError

  def regularizer(self, kl_loss, z_mean, z_logvar, z_sampled):
    raise NotImplementedError(f"{type(self).__name__} defines neither `regularizer` nor "
                              "`loss_terms`")

  def loss_terms(self, images, noise, step=0, **draws):
    """dlib's `BaseVAE` loss for given reparameterisation noise."""
    del step, draws  # a regulariser's schedule reads self.optimizer.iterations
    mean, logvar = self.gaussian_encoder(images)
    z = reparameterise(mean, logvar, noise)
    recon_loss = reconstruction_loss(images, self.decode_latents(z), self.recons_loss_type)
    kl_per_dim = gaussian_kl(mean, logvar)
    kl_loss = total_kl(kl_per_dim)
    regularizer = self.regularizer(kl_loss, mean, logvar, z)
    return {"loss": recon_loss + regularizer, "recon_loss": recon_loss,
            self.regularizer_name: regularizer, "total_kl": kl_loss,
            "elbo": -(recon_loss + kl_loss), "kl_per_latent": tf.reduce_mean(kl_per_dim, axis=0)}

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
    """The constructor's arguments but `name`, read back from the attributes of their names."""
    parameters = inspect.signature(type(self).__init__).parameters.values()
    names = [p.name for p in parameters if p.name not in ("self", "name") and
             p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [n for n in names if not hasattr(self, n)]
    if missing:
      raise TypeError(f"{type(self).__name__} keeps no attribute {missing}: keep each "
                      "constructor argument as the attribute of its name")
    return {n: getattr(self, n) for n in names}

  @property
  def metrics(self):
    return list(self.trackers.values())

  # `compile(jit_compile=True)`: the step's losses and gradients are compiled by XLA; its random
  # draws are not. XLA turns a stateless draw's random bits into floats by other formulas than
  # TF's kernels (the bits agree; the floats do not, whatever `alg` is pinned), so a step compiled
  # whole, as Keras compiles it, would train on other noise and other path choices than the
  # uncompiled step of the same seed. The draws are made before the compiled part and fed in:
  # compiled and uncompiled runs draw the same, and the uncompiled draws stay as they were. The
  # update and the loss trackers come after it: a function nested in the replica step cannot hold
  # their cross-replica merges (Keras' optimiser compiles its own update on GPUs).
  xla_compiled_step = False

  def compile(self, *args, jit_compile=None, **kwargs):
    super().compile(*args, jit_compile=False, **kwargs)
    self.xla_compiled_step = bool(jit_compile)

  def _compiled(self, function):
    if not self.xla_compiled_step:
      return function
    return tf.function(function, jit_compile=True, reduce_retracing=True)

  def training_step_draws(self, images):
    """This step's random draws: (reparameterisation noise, number of replicas, the model's
    `training_draws`), a pure function of (`seed`, step)."""
    key = random_streams.step_key(self.seed, self.optimizer.iterations)
    noise, replicas = replica_noise(images, self.num_latents, key)
    return noise, replicas, self.training_draws(key)

  def train_step(self, images):
    noise, replicas, draws = self.training_step_draws(images)
    gradients, terms = self._compiled(self._gradients)(images, noise, replicas, draws)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return self._track(terms)

  def _gradients(self, images, noise, replicas, draws):
    with tf.GradientTape() as tape:
      terms = self.loss_terms(images, noise, step=self.optimizer.iterations, **draws)
      # Replica gradients are summed: scale so N replicas step as one device on the global batch.
      scaled_loss = terms["loss"] / replicas
    # As `optimizer.minimize` (with a float16 loss scale where there is one), which applies them.
    grads_and_vars = self.optimizer.compute_gradients(scaled_loss, self.trainable_variables, tape)
    return [gradient for gradient, _ in grads_and_vars], terms

  def test_step(self, images):
    return self._track(self._compiled(self._evaluation_terms)(images, self.evaluation_draws()))

  def _evaluation_terms(self, images, draws):
    return self.loss_terms(images, tf.zeros([tf.shape(images)[0], self.num_latents]),
                           step=self.optimizer.iterations, **draws)

  def _track(self, terms):
    for name in self.loss_term_names:
      self.trackers[name].update_state(terms[name])
    for i in range(self.num_latents):
      self.trackers[f"kl_{i}"].update_state(terms["kl_per_latent"][i])
    return {name: tracker.result() for name, tracker in self.trackers.items()}

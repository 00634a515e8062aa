"""The Commutative Lie Group VAE as a Keras model (docs/model.md, "One training step").

`loss_terms` is the model's loss as equations, for given images and reparameterisation noise;
the training and evaluation steps, trackers and per-step randomness come from
`base.GaussianEncoderVAE`. The model's own per-step draw, the one Bernoulli draw that picks the
reconstruction path, is `training_draws`: a pure function of (`seed`, step), so every replica
makes the same choice and a resumed run draws what an uninterrupted one would have.
"""

from typing import Optional, Sequence

import gin
import tensorflow as tf

from lievae_tf import random_streams
from lievae_tf.models import base
from lievae_tf.models import lie_group
from lievae_tf.models import networks
from lievae_tf.errors import UserError

# Loss terms tracked in training and evaluation, in the order they are reported. The KL of each
# latent (`kl_<i>`) follows them.
LOSS_TERMS = ("loss", "recon_loss", "beta_kl", "total_kl", "group_loss", "gfeat_rec_loss",
              "hessian_loss", "commute_loss", "group_feats_mse")


@gin.configurable("LieGroupVAE", denylist=["num_channels", "seed"])
class LieGroupVAE(base.GaussianEncoderVAE):
  """Commutative Lie Group VAE (Zhu, Xu & Tao, ICML 2021).

  Args:
    num_channels: image channels (1 for dSprites, 3 for 3DShapes); set from the dataset.
    subgroup_sizes: group-feature size s_i of each subgroup, each a perfect square m_i**2.
    subspace_sizes: number of latents d_i of each subgroup; D = sum(subspace_sizes).
    lie_alg_init_scale: std of the normal init of the Lie algebra basis.
    hy_hes: weight of the Hessian penalty.
    hy_rec: weight of the group-feature reconstruction loss ||gE - gG||^2.
    hy_commute: weight of the commutator penalty.
    commutator: its form: 'paper_code' (the paper code's: each basis product A_k A_j minus its
      matrix transpose) or 'bracket' (the paper text's Lie bracket A_j A_k - A_k A_j, zero exactly
      when the basis commutes). docs/model.md, "Group losses".
    forward_eg_prob: probability that a training step reconstructs from the encoder's group
      features gE instead of from the exponential map of z (one draw per step).
    recons_loss_type: 'bce' (sigmoid cross-entropy, dSprites) or 'l2' (3DShapes).
    beta: weight of the KL term.
    capacity: if set, the KL target C of the capacity schedule |KL - min(C step / T, C)|.
    capacity_leadin: T, steps over which the capacity grows to C.
    no_exp: replace the exponential map by an MLP (the paper's ablation).
    bias_init: 'pytorch' (the paper code's: each layer's bias U(+-1/sqrt(fan_in)), PyTorch's
      default) or 'zeros' (Keras' default). Weights are Glorot-uniform (the paper code's
      xavier_uniform_) and the Lie algebra basis N(0, lie_alg_init_scale) either way.
    expm: the matrix exponential of the exponential map: 'tf' (`tf.linalg.expm`) or 'fixed'
      (`lie_group.fixed_expm`: the same algorithm with a fixed number of squarings, equal to it
      to float32 rounding, and what `training.jit_compile = True` needs: XLA cannot compile
      tf.linalg.expm's gradient).
    seed: seed of the per-step randomness; set from `model.random_seed`.
  """

  loss_term_names = LOSS_TERMS

  def __init__(self,
               num_channels: int = 1,
               subgroup_sizes: Sequence[int] = (100,),
               subspace_sizes: Sequence[int] = (10,),
               lie_alg_init_scale: float = 0.001,
               hy_hes: float = 40.0,
               hy_rec: float = 0.1,
               hy_commute: float = 0.0,
               commutator: str = "paper_code",
               forward_eg_prob: float = 0.2,
               recons_loss_type: str = "bce",
               beta: float = 1.0,
               capacity: Optional[float] = None,
               capacity_leadin: int = 100000,
               no_exp: bool = False,
               bias_init: str = "pytorch",
               expm: str = "tf",
               seed: int = 0,
               name="lie_group_vae"):
    # No **kwargs: gin can then reject a misspelt binding by name.
    base.check_reconstruction_loss(recons_loss_type)
    if commutator not in lie_group.COMMUTATORS:
      raise UserError(f"commutator {commutator!r} is not one of {lie_group.COMMUTATORS}: "
                      "'paper_code' is the paper code's penalty (each basis product minus its "
                      "transpose), 'bracket' the Lie bracket of the paper's text.")
    if not 0.0 <= forward_eg_prob <= 1.0:
      raise UserError(f"forward_eg_prob {forward_eg_prob!r} is not a probability in [0, 1].")
    if capacity is not None and capacity_leadin <= 0:
      raise UserError(f"capacity_leadin {capacity_leadin!r} must be a positive number of steps.")
    super().__init__(num_latents=sum(subspace_sizes), seed=seed, name=name)
    self.num_channels = num_channels
    # Tuples: Keras would track lists as dependencies (and write them in checkpoints).
    self.subgroup_sizes, self.subspace_sizes = tuple(subgroup_sizes), tuple(subspace_sizes)
    self.lie_alg_init_scale = lie_alg_init_scale
    self.hy_hes, self.hy_rec, self.hy_commute = hy_hes, hy_rec, hy_commute
    self.commutator, self.forward_eg_prob = commutator, forward_eg_prob
    self.recons_loss_type, self.beta = recons_loss_type, beta
    self.capacity, self.capacity_leadin = capacity, capacity_leadin
    self.no_exp, self.bias_init, self.expm = no_exp, bias_init, expm
    biases = networks.Biases(bias_init)
    self.encoder = networks.GroupEncoder(num_channels, subgroup_sizes, subspace_sizes, biases,
                                         name="encoder")
    # The basis exists with no_exp too, as in the reference: its penalties still enter the loss.
    # float32 under any precision policy: the basis is small, its penalties are products of
    # products, and expm's scaling and squaring amplifies rounding.
    self.exp_map = lie_group.ExponentialMap(subgroup_sizes, subspace_sizes, lie_alg_init_scale,
                                            expm, name="exp_map", dtype=tf.float32)
    self.fake_exp = (networks.fake_exponential_map(self.num_latents, sum(subgroup_sizes), biases)
                     if no_exp else None)
    self.decoder = networks.GroupDecoder(num_channels, sum(subgroup_sizes), biases,
                                         name="decoder")

  def jit_compile_blocker(self):
    if self.expm == "tf" and not self.no_exp:
      return ("LieGroupVAE.expm = 'tf' (tf.linalg.expm, whose gradient loop has no fixed "
              "iteration count, which XLA cannot compile): set LieGroupVAE.expm = 'fixed' (the "
              "same exponential with a fixed number of squarings, equal to float32 rounding)")
    return None

  # The model's parts, named as in the paper.

  def encode(self, images):
    """images -> (group features gE, mu, logvar), float32."""
    return base.as_float32(*self.encoder(images))

  def group_map(self, z):
    """z -> the decoder's group features gG (the exponential map, or the no_exp MLP)."""
    return base.as_float32(self.fake_exp(z)) if self.fake_exp is not None else self.exp_map(z)

  def decode(self, group_feats):
    """Group features -> image logits, float32."""
    return base.as_float32(self.decoder(group_feats))

  def decode_latents(self, z):
    return self.decode(self.group_map(z))

  def gaussian_encoder(self, images):
    _, mu, logvar = self.encode(images)
    return mu, logvar

  def build_variables(self, image_shape):
    group_feats, mu, _ = self.encode(tf.zeros([1] + list(image_shape)))
    self.decode(group_feats)
    self.group_map(mu)
    return self

  # The loss, as equations.

  def beta_kl(self, total_kl, step):
    """β KL, or with `capacity` dlib's AnnealedVAE regulariser β |KL - min(C step / T, C)|."""
    beta, capacity = self.beta, self.capacity
    if capacity is None:
      return beta * total_kl
    target = tf.minimum(capacity * tf.cast(step, tf.float32) / self.capacity_leadin, capacity)
    return beta * tf.abs(total_kl - target)

  def loss_terms(self, images, noise, step=0, use_eg_path=False):
    """Every quantity of one step for given images and reparameterisation noise.

    Args:
      images: (B, 64, 64, nc) in [0, 1].
      noise: (B, D) standard normal noise; zeros give z = mu (evaluation).
      step: training step, for the capacity schedule.
      use_eg_path: bool or scalar bool tensor (`training_draws`): reconstruct from the encoder's
        group features gE instead of from gG = expmap(z). Only the chosen decoder pass is computed.

    Returns:
      dict with mu, logvar, z, group_feats_E, group_feats_G, logits, kl_per_latent and the loss
      terms of LOSS_TERMS (hessian_loss and commute_loss unweighted).
    """
    group_feats_e, mu, logvar = self.encode(images)
    z = base.reparameterise(mu, logvar, noise)
    group_feats_g = self.group_map(z)
    if isinstance(use_eg_path, bool):
      logits = self.decode(group_feats_e if use_eg_path else group_feats_g)
    else:
      # One decoder pass on the chosen features; the other gets an exact zero gradient, as the
      # untaken branch of a cond would. A select, not a `tf.cond`: compiled by XLA:CPU, a cond
      # made the step ~8x slower, and on a GPU a cond makes the host read its predicate.
      logits = self.decode(tf.where(use_eg_path, group_feats_e, group_feats_g))
    recon_loss = base.reconstruction_loss(images, logits, self.recons_loss_type)

    kl_per_dim = base.gaussian_kl(mu, logvar)
    total_kl = base.total_kl(kl_per_dim)
    beta_kl = self.beta_kl(total_kl, step)

    squared_diff = tf.square(group_feats_e - group_feats_g)
    gfeat_rec_loss = tf.reduce_mean(tf.reduce_sum(squared_diff, axis=1))
    hessian_loss, commute_loss = lie_group.group_penalties(self.exp_map.bases, self.commutator)
    group_loss = (self.hy_rec * gfeat_rec_loss + self.hy_hes * hessian_loss +
                  self.hy_commute * commute_loss)
    return dict(
        mu=mu, logvar=logvar, z=z, group_feats_E=group_feats_e, group_feats_G=group_feats_g,
        logits=logits, kl_per_latent=tf.reduce_mean(kl_per_dim, axis=0),
        loss=recon_loss + beta_kl + group_loss, recon_loss=recon_loss, beta_kl=beta_kl,
        total_kl=total_kl, group_loss=group_loss, gfeat_rec_loss=gfeat_rec_loss,
        hessian_loss=hessian_loss, commute_loss=commute_loss,
        group_feats_mse=tf.reduce_mean(squared_diff))

  # The model's own per-step draw.

  def training_draws(self, step_key):
    """One Bernoulli(forward_eg_prob) draw per step: reconstruct from gE instead of gG."""
    draw = tf.random.stateless_uniform(
        [], seed=random_streams.step_draw_key(step_key, random_streams.PATH_CHOICE))
    return dict(use_eg_path=draw < self.forward_eg_prob)

  def evaluation_draws(self):
    return dict(use_eg_path=False)

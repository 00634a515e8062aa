"""The model of docs/model.md in PyTorch, with the paper code's parameter names and checkpoint format.

For tests and benchmarks, not for training runs: the parity tests save models of this module in
the paper code's format and check that `lievae_import_torch` reproduces every number, and
`PaperTrainStep` is the paper code's training step as published (the baseline of benchmarks).
It lives with the tests, outside the package (which imports without torch); the benches load it
from this file (`bench/core.py`'s `torch_reference`), docs/whole_run_comparison.py puts tests/ on
sys.path to import it.

Written from docs/model.md. Only the names are the paper code's: the `state_dict` keys of its
`LieCeleb` (`encoder.prior_group.{0,2,4,6}` convs and `.{9,11}` linears,
`encoder.to_means.{i}.{0,2}`, `encoder.to_logvar.{i}.{0,2}`, `decoder.lie_alg_basis_ls.{k}` of
shape (1, m, m), one per latent, `decoder.fake_exp.{0,2}` with `no_exp`, `decoder.post_exp.{0,2}`
linears and `.{5,7,9,11}` transposed convs), the fields of its `args.pt` (an
`argparse.Namespace` of its command-line flags) and its checkpoint layout
`<log_path>/version_N/checkpoints/{model.pt,args.pt}`.

Images are channels-first here, (B, nc, 64, 64), as in PyTorch.

The commutator penalty is the paper code's by default (each basis product minus its matrix
transpose), as the Keras model's; `commutator='bracket'` gives the paper text's
`||A_j A_k - A_k A_j||^2`, as `LieGroupVAE.commutator = 'bracket'` does (docs/model.md).
"""

import argparse
import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lievae_tf import data

MODEL_NAME = "lie_group"  # the paper code's `--model` for its LieCeleb


def paper_args(dataset="dsprites", **overrides):
  """An `argparse.Namespace` as the paper code's `main.py` saves it in `args.pt`.

  The paper code's defaults for the Lie group model, with `nc` set from the dataset as its
  trainer does; `overrides` replace any field (e.g. `subgroup_sizes_ls=[100, 64]`).
  """
  args = dict(
      model=MODEL_NAME, dataset=dataset, epochs=70, batch_size=256, learning_rate=1e-4,
      latents=10, split=0.0, shuffle=True, fixed_shape=None, data_path=None, log_path=None,
      base_model="beta_celeb", base_model_path=None, load_model=False, global_step=None,
      beta=1.0, capacity=None, capacity_leadin=100000, visualise=True, metrics=False,
      end_metrics=True, evaluate=False, eval_dataset=dataset, eval_data_path=None,
      subgroup_sizes_ls=[100], subspace_sizes_ls=[10], lie_alg_init_scale=0.001, hy_hes=40.0,
      hy_rec=0.1, hy_commute=0.0, forward_eg_prob=0.2, recons_loss_type="l2", no_exp=False,
      factor_vae_gamma=6.4, lambda_d=1, lambda_od=10,
      nc=data.PAPER_NUM_CHANNELS.get(dataset, 1), factors=5 if dataset == "dsprites" else 6)
  args.update(overrides)
  args["latents"] = overrides.get("latents", sum(args["subspace_sizes_ls"]))
  return argparse.Namespace(**args)


def _glorot(module):
  """docs/model.md: Glorot-uniform weights; biases keep PyTorch's default init."""
  for layer in module.modules():
    if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.xavier_uniform_(layer.weight)


def _mlp(inputs, hidden, outputs):
  # Indices 0 and 2 hold the weights, as in the paper code's Sequentials. In-place ReLUs here and
  # below: fewer large allocations, which matter to this step's speed on a CPU.
  return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs))


class Encoder(nn.Module):
  """images (B, nc, 64, 64) -> (group features gE (B, G), mu (B, D), logvar (B, D))."""

  def __init__(self, subgroup_sizes, subspace_sizes, nc):
    super().__init__()
    self.subgroup_sizes = list(subgroup_sizes)
    conv = lambda cin, cout: nn.Conv2d(cin, cout, 4, 2, 1)  # halves the size
    self.prior_group = nn.Sequential(
        conv(nc, 32), nn.ReLU(inplace=True), conv(32, 32), nn.ReLU(inplace=True), conv(32, 64), nn.ReLU(inplace=True),
        conv(64, 64), nn.ReLU(inplace=True),
        nn.Flatten(),  # (64, 4, 4) channels-first -> 1024
        nn.Linear(1024, 256), nn.ReLU(inplace=True), nn.Linear(256, sum(subgroup_sizes)))
    self.to_means = nn.ModuleList(_mlp(s, 4 * s, d) for s, d in zip(subgroup_sizes,
                                                                      subspace_sizes))
    self.to_logvar = nn.ModuleList(_mlp(s, 4 * s, d) for s, d in zip(subgroup_sizes,
                                                                       subspace_sizes))
    _glorot(self)

  def forward(self, images):
    group_feats = self.prior_group(images)
    slices = torch.split(group_feats, self.subgroup_sizes, dim=1)
    mu = torch.cat([head(g) for head, g in zip(self.to_means, slices)], dim=1)
    logvar = torch.cat([head(g) for head, g in zip(self.to_logvar, slices)], dim=1)
    return group_feats, mu, logvar


class Decoder(nn.Module):
  """The Lie algebra bases, the exponential map (or the `no_exp` MLP) and `post_exp`."""

  def __init__(self, subgroup_sizes, subspace_sizes, nc, lie_alg_init_scale, no_exp):
    super().__init__()
    self.subgroup_sizes, self.subspace_sizes = list(subgroup_sizes), list(subspace_sizes)
    self.matrix_sizes = []
    for size in subgroup_sizes:
      m = math.isqrt(size)
      if m * m != size:
        raise ValueError(f"subgroup size {size} is not a perfect square")
      self.matrix_sizes.append(m)
    if no_exp:
      self.fake_exp = _mlp(sum(subspace_sizes), 4 * sum(subspace_sizes), sum(subgroup_sizes))
    # One (1, m, m) basis matrix per latent, in latent order: the paper code's layout.
    self.lie_alg_basis_ls = nn.ParameterList(
        nn.Parameter(torch.randn(1, m, m) * lie_alg_init_scale)
        for m, d in zip(self.matrix_sizes, subspace_sizes) for _ in range(d))
    deconv = lambda cin, cout: nn.ConvTranspose2d(cin, cout, 4, 2, 1)  # doubles the size
    self.post_exp = nn.Sequential(
        nn.Linear(sum(subgroup_sizes), 256), nn.ReLU(inplace=True), nn.Linear(256, 1024), nn.ReLU(inplace=True),
        nn.Unflatten(1, (64, 4, 4)),  # channels-first
        deconv(64, 64), nn.ReLU(inplace=True), deconv(64, 32), nn.ReLU(inplace=True), deconv(32, 32), nn.ReLU(inplace=True),
        deconv(32, nc))
    _glorot(self.post_exp)
    if no_exp:
      _glorot(self.fake_exp)

  def bases(self):
    """Each subgroup's basis stack A_i, (d_i, m_i, m_i)."""
    stacks, start = [], 0
    for d in self.subspace_sizes:
      stacks.append(torch.cat(list(self.lie_alg_basis_ls[start:start + d]), dim=0))
      start += d
    return stacks

  def group_map(self, z):
    """z (B, D) -> gG (B, G): expm(sum_j z_ij A_ij) per subgroup, flattened row-major."""
    if hasattr(self, "fake_exp"):
      return self.fake_exp(z)
    feats = []
    for z_i, basis, m in zip(torch.split(z, self.subspace_sizes, dim=1), self.bases(),
                             self.matrix_sizes):
      algebra = torch.einsum("bd,dmn->bmn", z_i, basis)
      feats.append(torch.linalg.matrix_exp(algebra).reshape(-1, m * m))
    return torch.cat(feats, dim=1)

  def forward(self, group_feats):
    """Group features -> image logits (B, nc, 64, 64)."""
    return self.post_exp(group_feats)


def basis_products(basis):
  """P[j, k] = A_k A_j for all ordered pairs, diagonal zeroed: (d, d, m, m)."""
  products = torch.einsum("kab,jbc->jkac", basis, basis)
  off_diagonal = 1.0 - torch.eye(basis.shape[0], dtype=basis.dtype)
  return products * off_diagonal[:, :, None, None]


def group_penalties(bases, commutator="paper_code"):
  """(Hessian, commutator) penalties summed over the subgroups with more than one latent.

  commutator: 'paper_code' ([j, k] = A_k A_j - (A_k A_j)^T) or 'bracket' (A_j A_k - A_k A_j).
  """
  if commutator not in ("paper_code", "bracket"):
    raise ValueError(f"commutator {commutator!r} is not 'paper_code' or 'bracket'")
  hessian = commute = torch.zeros(())
  for basis in bases:
    if basis.shape[0] < 2:
      continue
    products = basis_products(basis)  # [j, k] = A_k A_j
    hessian = hessian + products.square().sum(dim=(2, 3)).mean()
    if commutator == "paper_code":
      differences = products - products.transpose(2, 3)
    else:
      differences = products.transpose(0, 1) - products
    commute = commute + differences.square().sum(dim=(2, 3)).mean()
  return hessian, commute


class LieGroupVAE(nn.Module):
  """The model of docs/model.md; its `state_dict` keys are those of the paper code's `LieCeleb`.

  Args are the paper code's flag names (see `paper_args`), and `commutator` (see `group_penalties`).
  """

  def __init__(self, subgroup_sizes_ls=(100,), subspace_sizes_ls=(10,), nc=1,
               lie_alg_init_scale=0.001, hy_hes=40.0, hy_rec=0.1, hy_commute=0.0,
               forward_eg_prob=0.2, recons_loss_type="bce", beta=1.0, capacity=None,
               capacity_leadin=100000, no_exp=False, commutator="paper_code"):
    super().__init__()
    if recons_loss_type not in ("bce", "l2"):
      raise ValueError(f"recons_loss_type {recons_loss_type!r} is not 'bce' or 'l2'")
    self.settings = dict(
        subgroup_sizes_ls=list(subgroup_sizes_ls), subspace_sizes_ls=list(subspace_sizes_ls),
        nc=nc, lie_alg_init_scale=lie_alg_init_scale, hy_hes=hy_hes, hy_rec=hy_rec,
        hy_commute=hy_commute, forward_eg_prob=forward_eg_prob,
        recons_loss_type=recons_loss_type, beta=beta, capacity=capacity,
        capacity_leadin=capacity_leadin, no_exp=no_exp)
    # Not one of the paper code's flags (its code has one form), so not in `settings`/args.pt.
    self.commutator = commutator
    self.encoder = Encoder(subgroup_sizes_ls, subspace_sizes_ls, nc)
    self.decoder = Decoder(subgroup_sizes_ls, subspace_sizes_ls, nc, lie_alg_init_scale, no_exp)

  @classmethod
  def from_args(cls, args):
    """The model an `args.pt` Namespace describes."""
    return cls(**{k: getattr(args, k) for k in (
        "subgroup_sizes_ls", "subspace_sizes_ls", "nc", "lie_alg_init_scale", "hy_hes",
        "hy_rec", "hy_commute", "forward_eg_prob", "recons_loss_type", "beta", "capacity",
        "capacity_leadin", "no_exp")})

  def reconstruction_loss(self, logits, images):
    """Summed over pixels and channels, averaged over the batch."""
    if self.settings["recons_loss_type"] == "bce":
      total = F.binary_cross_entropy_with_logits(logits, images, reduction="sum")
    else:
      total = (torch.sigmoid(logits) - images).square().sum()
    return total / images.shape[0]

  def beta_kl(self, total_kl, step):
    beta, capacity = self.settings["beta"], self.settings["capacity"]
    if capacity is None:
      return beta * total_kl
    target = min(capacity * step / self.settings["capacity_leadin"], capacity)
    return beta * (total_kl - target).abs()

  def loss_terms(self, images, noise, use_eg_path=False, step=0, decode_all=False):
    """Every quantity of one step, as the Keras model's `loss_terms` (same keys).

    Args:
      images: (B, nc, 64, 64) in [0, 1].
      noise: (B, D) reparameterisation noise (zeros: z = mu).
      use_eg_path: reconstruct from gE instead of gG.
      step: for the capacity schedule.
      decode_all: decode gG, gE and gG again, as the paper code's step does (it logs all three
        reconstructions); the loss is the same, the cost is not.
    """
    group_feats_e, mu, logvar = self.encoder(images)
    z = mu + torch.exp(logvar / 2) * noise
    group_feats_g = self.decoder.group_map(z)
    if decode_all:
      x_hat = self.decoder(group_feats_g)
      x_eg = self.decoder(group_feats_e)
      self.decoder(group_feats_g)  # the paper code's x_gg_hat, unused by the loss
      logits = x_eg if use_eg_path else x_hat
    else:
      logits = self.decoder(group_feats_e if use_eg_path else group_feats_g)
    recon_loss = self.reconstruction_loss(logits, images)
    kl_per_dim = -0.5 * (1 + logvar - mu.square() - logvar.exp())
    total_kl = kl_per_dim.sum(dim=1).mean()
    beta_kl = self.beta_kl(total_kl, step)
    squared_diff = (group_feats_e - group_feats_g).square()
    gfeat_rec_loss = squared_diff.sum(dim=1).mean()
    hessian_loss, commute_loss = group_penalties(self.decoder.bases(), self.commutator)
    s = self.settings
    group_loss = (s["hy_rec"] * gfeat_rec_loss + s["hy_hes"] * hessian_loss +
                  s["hy_commute"] * commute_loss)
    return dict(
        mu=mu, logvar=logvar, z=z, group_feats_E=group_feats_e, group_feats_G=group_feats_g,
        logits=logits, kl_per_latent=kl_per_dim.mean(dim=0),
        loss=recon_loss + beta_kl + group_loss, recon_loss=recon_loss, beta_kl=beta_kl,
        total_kl=total_kl, group_loss=group_loss, gfeat_rec_loss=gfeat_rec_loss,
        hessian_loss=hessian_loss, commute_loss=commute_loss,
        group_feats_mse=squared_diff.mean())


class PaperTrainStep:
  """The paper code's training step as published, as one callable.

  Per call: encode, sample z, decode gG, gE and gG again (three decoder passes), one Bernoulli
  draw with probability `forward_eg_prob` choosing the gE reconstruction for the loss, backward,
  and one step of Adam (lr 1e-4 and PyTorch's defaults, as the paper code).

    step = PaperTrainStep(model)
    terms = step(images)            # images (B, nc, 64, 64) float32 tensor
  """

  def __init__(self, model, learning_rate=1e-4, seed=None):
    self.model = model
    self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    self.rng = np.random.default_rng(seed)
    self.step = 0

  def __call__(self, images, noise=None, use_eg_path=None):
    """One step; `noise` and `use_eg_path` default to fresh draws. Returns the detached terms."""
    self.model.train()
    self.optimizer.zero_grad()
    if noise is None:
      noise = torch.randn(images.shape[0], sum(self.model.settings["subspace_sizes_ls"]))
    if use_eg_path is None:
      use_eg_path = bool(self.rng.uniform() < self.model.settings["forward_eg_prob"])
    terms = self.model.loss_terms(images, noise, use_eg_path=use_eg_path, step=self.step,
                                  decode_all=True)
    terms["loss"].backward()
    self.optimizer.step()
    self.step += 1
    return {k: v.detach() for k, v in terms.items()}


def args_for(model, dataset, **extra):
  """The `args.pt` Namespace of `model` (the paper code's fields), for `dataset`."""
  return paper_args(dataset=dataset, **{**model.settings, **extra})


def save_checkpoint(model, log_path, dataset, version=None, **extra_args):
  """Saves `model` as the paper code does: `log_path/version_N/checkpoints/{model.pt,args.pt}`.

  `model.pt` is the `state_dict`, `args.pt` the argparse Namespace (both with `torch.save`).
  `version` defaults to the next free N, as the paper code's logger picks it. Returns the
  checkpoints directory.
  """
  if version is None:
    existing = [int(d.split("_", 1)[1]) for d in os.listdir(log_path)
                if d.startswith("version_") and d.split("_", 1)[1].isdigit()
                ] if os.path.isdir(log_path) else []
    version = max(existing, default=-1) + 1
  checkpoint_dir = os.path.join(log_path, f"version_{version}", "checkpoints")
  os.makedirs(checkpoint_dir, exist_ok=True)
  torch.save(model.state_dict(), os.path.join(checkpoint_dir, "model.pt"))
  torch.save(args_for(model, dataset, log_path=log_path, **extra_args),
             os.path.join(checkpoint_dir, "args.pt"))
  return checkpoint_dir

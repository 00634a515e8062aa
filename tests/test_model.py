"""LieGroupVAE against the equations of docs/model.md, on tiny fixed inputs."""

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from lievae_tf import models
from lievae_tf import random_streams
from lievae_tf.keras2 import keras
from lievae_tf.models import base
from lievae_tf import training
from lievae_tf.errors import UserError
import tolerances as tol


def make_model(num_channels=1, subgroup_sizes=(9, 16), subspace_sizes=(2, 3), basis_scale=0.2,
               seed=0, **kwargs):
  keras.utils.set_random_seed(seed)
  vae = models.LieGroupVAE(num_channels=num_channels, subgroup_sizes=subgroup_sizes,
                              subspace_sizes=subspace_sizes, seed=seed, **kwargs)
  vae.build_variables([64, 64, num_channels])
  # A basis scale well above the published 0.001 so that the penalties are not ~0.
  rng = np.random.default_rng(seed)
  for basis in vae.exp_map.bases:
    basis.assign(rng.normal(0, basis_scale, basis.shape).astype(np.float32))
  # Larger mean and log-variance outputs than at init, so that the KL is far from 0 and float32
  # cancellation in 1 + logvar - exp(logvar) does not dominate the comparison.
  for head in vae.encoder.to_means + vae.encoder.to_logvars:
    head.layers[-1].kernel.assign(head.layers[-1].kernel * 30.0)
  return vae


def fixed_images(batch=3, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=(batch, 64, 64, channels)) > 0.7).astype(np.float32)


def fixed_noise(batch=3, latents=5, seed=1):
  return np.random.default_rng(seed).normal(size=(batch, latents)).astype(np.float32)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_architecture_has_the_reference_layer_sizes():
  vae = make_model(num_channels=3, subgroup_sizes=[100], subspace_sizes=[10])
  shapes = [tuple(w.shape) for w in vae.trainable_weights]
  assert shapes == [
      # encoder convs 4x4 stride 2: nc->32->32->64->64, then 1024->256->G
      (4, 4, 3, 32), (32,), (4, 4, 32, 32), (32,), (4, 4, 32, 64), (64,), (4, 4, 64, 64), (64,),
      (1024, 256), (256,), (256, 100), (100,),
      # per-subgroup mean and logvar heads: s -> 4s -> d
      (100, 400), (400,), (400, 10), (10,), (100, 400), (400,), (400, 10), (10,),
      # one 10x10 Lie algebra basis matrix per latent
      (10, 10, 10),
      # decoder: G->256->1024, transposed convs 64->64->32->32->nc
      (100, 256), (256,), (256, 1024), (1024,), (4, 4, 64, 64), (64,), (4, 4, 32, 64), (32,),
      (4, 4, 32, 32), (32,), (4, 4, 3, 32), (3,),
  ]
  logits = vae(fixed_images(2, 3))
  assert logits.shape == (2, 64, 64, 3)


def test_basis_initialised_with_the_given_scale():
  keras.utils.set_random_seed(0)
  vae = models.LieGroupVAE(subgroup_sizes=[400], subspace_sizes=[10], lie_alg_init_scale=0.001)
  vae.build_variables([64, 64, 1])
  assert np.std(vae.exp_map.bases[0].numpy()) == pytest.approx(0.001, rel=0.05)


@pytest.mark.parametrize("recons_loss_type", ["bce", "l2"])
def test_loss_terms_follow_the_equations(recons_loss_type):
  # Each term is recomputed in float64 from the model's own float32 inputs to it, and must agree
  # within the rounding of float32 arithmetic that any CPU's kernels may do (tests/tolerances.py):
  # `units` of u = 2**-24 times the magnitude the term is computed from.
  vae = make_model(hy_hes=3.0, hy_rec=0.5, hy_commute=2.0, beta=1.5,
                   recons_loss_type=recons_loss_type)
  images, noise = fixed_images(), fixed_noise()
  t = {k: np.asarray(v, np.float64) for k, v in vae.loss_terms(images, noise).items()}

  mu, logvar = t["mu"], t["logvar"]
  z = mu + np.exp(logvar / 2) * noise
  # exp (<= 2 ulps), a product and a sum, relative to the two summands' magnitudes.
  tol.assert_close_elementwise(t["z"], z, 8, np.abs(mu) + np.abs(z - mu), "z")
  # gG: expm of each subgroup's sum_j z_j A_j, flattened row-major, within expm's float32 bound
  # relative to the matrix norm (tol.expm_units: 4 m (1 + ||A||) u ||expm(A)||).
  bases = [b.numpy().astype(np.float64) for b in vae.exp_map.bases]
  for b in range(3):
    features = np.split(t["group_feats_G"][b], [9])
    for latents, basis, got in zip(np.split(t["z"][b], [2]), bases, features):
      algebra = np.einsum("d,dmn->mn", latents, basis)
      tol.assert_close_in_norm(got, scipy.linalg.expm(algebra).ravel(),
                               tol.expm_units(algebra), what=f"gG[{b}]")
  # The path used by default decodes gG: the same ops on the same input as a second call.
  np.testing.assert_allclose(t["logits"], vae.decode(t["group_feats_G"].astype(np.float32)),
                             rtol=1e-5, atol=1e-5)

  logits = t["logits"]
  if recons_loss_type == "bce":
    per_pixel = np.maximum(logits, 0) - logits * images + np.log1p(np.exp(-np.abs(logits)))
  else:
    per_pixel = (_sigmoid(logits) - images)**2
  recon = per_pixel.sum(axis=(1, 2, 3)).mean()
  kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar))
  kl_magnitude = 0.5 * (1 + np.abs(logvar) + mu**2 + np.exp(logvar))  # of the terms kl adds
  gfeat_rec = ((t["group_feats_E"] - t["group_feats_G"])**2).sum(axis=1).mean()

  def products(a):  # P[j, k] = A_k A_j, diagonal zeroed
    p = np.einsum("kab,jbc->jkac", a, a)
    p[np.arange(len(a)), np.arange(len(a))] = 0
    return p

  hessian = sum((products(a)**2).sum(axis=(2, 3)).mean() for a in bases)
  # The paper code's commutator (the default): each product minus its matrix transpose.
  commute = sum(((products(a) - products(a).transpose(0, 1, 3, 2))**2).sum(axis=(2, 3)).mean()
                for a in bases)
  # The same with |A|: what the float32 products' rounding is relative to.
  abs_products = [products(np.abs(a)) for a in bases]
  hessian_magnitude = sum((p**2).sum(axis=(2, 3)).mean() for p in abs_products)
  commute_magnitude = sum(((p + p.transpose(0, 1, 3, 2))**2).sum(axis=(2, 3)).mean()
                          for p in abs_products)
  m, d, batch = 4, 3, 3  # the largest matrix size and latent count of a subgroup; the batch
  pixels = np.prod(images.shape[1:])
  mean = lambda n: tol.summation_units(n) + 1  # a sum of n terms, then a division
  # name: (value, error bound). Per term: the rounding of each summand (relative, in u), then of
  # the sums it passes through, times the magnitude of what is summed.
  bounds = dict(
      recon_loss=(recon, (6 + tol.summation_units(pixels) + mean(batch)) * tol.U * recon),
      total_kl=(kl.sum(axis=1).mean(),
                (8 + tol.summation_units(5) + mean(batch)) * tol.U *
                kl_magnitude.sum(axis=1).mean()),
      kl_per_latent=(kl.mean(axis=0), (8 + mean(batch)) * tol.U * kl_magnitude.mean(axis=0)),
      gfeat_rec_loss=(gfeat_rec, (3 + tol.summation_units(25) + mean(batch)) * tol.U * gfeat_rec),
      hessian_loss=(hessian, (2 * m + 1 + tol.summation_units(m * m) + mean(d * d) + 1) * tol.U *
                    hessian_magnitude),
      commute_loss=(commute, (2 * m + 3 + tol.summation_units(m * m) + mean(d * d) + 1) * tol.U *
                    commute_magnitude))
  bounds["beta_kl"] = (1.5 * bounds["total_kl"][0],
                       1.5 * bounds["total_kl"][1] + tol.U * 1.5 * abs(bounds["total_kl"][0]))
  weights = dict(gfeat_rec_loss=0.5, hessian_loss=3.0, commute_loss=2.0)
  bounds["group_loss"] = (
      sum(w * bounds[k][0] for k, w in weights.items()),
      sum(w * bounds[k][1] + 3 * tol.U * w * bounds[k][0] for k, w in weights.items()))
  parts = ("recon_loss", "beta_kl", "group_loss")
  bounds["loss"] = (sum(bounds[k][0] for k in parts),
                    sum(bounds[k][1] + 2 * tol.U * abs(bounds[k][0]) for k in parts))
  for name, (value, bound) in bounds.items():
    tol.assert_close_elementwise(t[name], value, 1, bound / tol.U, name)
  assert hessian > 1e-4 and commute > 1e-4  # the penalties are really exercised


def test_zero_noise_gives_z_equal_mu():
  vae = make_model()
  t = vae.loss_terms(fixed_images(), np.zeros((3, 5), np.float32))
  np.testing.assert_array_equal(t["z"], t["mu"])


def test_eg_path_decodes_the_encoders_group_features():
  vae = make_model()
  images, noise = fixed_images(), fixed_noise()
  eg = vae.loss_terms(images, noise, use_eg_path=True)
  gg = vae.loss_terms(images, noise, use_eg_path=False)
  np.testing.assert_allclose(eg["logits"], vae.decode(eg["group_feats_E"]), rtol=1e-5, atol=1e-5)
  assert not np.allclose(eg["recon_loss"], gg["recon_loss"])
  # Tensor-valued choice (as in train_step) gives the same as the Python one.
  eg_tensor = vae.loss_terms(images, noise, use_eg_path=tf.constant(True))
  np.testing.assert_allclose(eg_tensor["recon_loss"], eg["recon_loss"], rtol=1e-6)


@pytest.mark.parametrize("use_eg_path", [False, True], ids=["gG_path", "gE_path"])
def test_a_drawn_path_has_the_gradients_of_the_fixed_one_bit_for_bit(use_eg_path):
  # train_step draws the path as a tensor; the decoder's input is then selected, and the path
  # not taken must get no gradient at all (not a leak, nor a different summation).
  vae = make_model()
  images, noise = tf.constant(fixed_images()), tf.constant(fixed_noise())

  def gradients(choice):
    with tf.GradientTape() as tape:
      loss = vae.loss_terms(images, noise, use_eg_path=choice)["loss"]
    return tape.gradient(loss, vae.trainable_variables)

  drawn = tf.function(gradients)(tf.constant(use_eg_path))
  fixed = tf.function(lambda: gradients(use_eg_path))()
  for variable, got, expected in zip(vae.trainable_variables, drawn, fixed):
    np.testing.assert_array_equal(got, expected, err_msg=variable.name)


@pytest.mark.parametrize("probability, use_eg_path", [(0.0, False), (1.0, True)])
def test_train_step_takes_the_path_its_probability_says(probability, use_eg_path):
  vae = make_model(forward_eg_prob=probability)
  vae.compile(optimizer=training.make_optimizer())
  images = tf.constant(fixed_images(4))
  noise, _ = base.replica_noise(images, vae.num_latents,  # what step 0 draws
                                random_streams.step_key(vae.seed, 0))
  expected = vae.loss_terms(images, noise, use_eg_path=use_eg_path)
  other = vae.loss_terms(images, noise, use_eg_path=not use_eg_path)
  logs = vae.train_step(images)
  assert float(logs["recon_loss"]) == pytest.approx(float(expected["recon_loss"]), abs=1e-3)
  assert float(logs["loss"]) == pytest.approx(float(expected["loss"]), abs=1e-3)
  assert abs(float(expected["recon_loss"]) - float(other["recon_loss"])) > 0.1


def test_one_path_draw_per_step_at_the_configured_rate():
  vae = make_model(forward_eg_prob=0.2, seed=3)
  draw = lambda step: bool(vae.training_draws(random_streams.step_key(3, step))["use_eg_path"])
  draws = [draw(s) for s in range(1000)]
  assert 0.16 < np.mean(draws) < 0.24
  # A pure function of (seed, step): the same step draws the same again.
  assert draws[:50] == [draw(s) for s in range(50)]


def test_capacity_schedule():
  vae = make_model(beta=2.0, capacity=10.0, capacity_leadin=100)
  images, noise = fixed_images(), fixed_noise()
  at_0 = vae.loss_terms(images, noise, step=0)
  at_50 = vae.loss_terms(images, noise, step=50)
  at_500 = vae.loss_terms(images, noise, step=500)
  kl = float(at_0["total_kl"])
  assert float(at_0["beta_kl"]) == pytest.approx(2.0 * abs(kl - 0.0), rel=1e-5)
  assert float(at_50["beta_kl"]) == pytest.approx(2.0 * abs(kl - 5.0), rel=1e-5)
  assert float(at_500["beta_kl"]) == pytest.approx(2.0 * abs(kl - 10.0), rel=1e-5)


def test_no_exp_replaces_the_exponential_map_by_an_mlp():
  vae = make_model(no_exp=True)
  t = vae.loss_terms(fixed_images(), fixed_noise())
  np.testing.assert_allclose(t["group_feats_G"], vae.fake_exp(t["z"]), rtol=1e-6)
  assert float(t["hessian_loss"]) > 0  # the (unused) basis is still penalised, as in the reference
  assert vae.fake_exp.layers[0].units == 4 * 5 and vae.fake_exp.layers[1].units == 9 + 16


def test_optimizer_is_adam_with_pytorch_defaults():
  optimizer = training.make_optimizer()
  assert isinstance(optimizer, keras.optimizers.Adam)
  assert float(optimizer.learning_rate) == pytest.approx(1e-4)
  assert optimizer.epsilon == pytest.approx(1e-8)
  assert (optimizer.beta_1, optimizer.beta_2) == (0.9, 0.999)


def test_bad_model_settings_are_clear_errors():
  with pytest.raises(UserError, match="recons_loss_type 'mse'"):
    models.LieGroupVAE(recons_loss_type="mse")
  # The same check for a model whose loss is dlib's `BaseVAE` loss (its class names the type).
  images = tf.zeros([1, 64, 64, 1])
  with pytest.raises(UserError, match="recons_loss_type 'mse' is not one of .*'bce'.*'l2'"):
    base.reconstruction_loss(images, images, "mse")
  with pytest.raises(UserError, match="forward_eg_prob 1.5"):
    models.LieGroupVAE(forward_eg_prob=1.5)
  with pytest.raises(UserError, match="not a perfect square"):
    models.LieGroupVAE(subgroup_sizes=[10], subspace_sizes=[2])

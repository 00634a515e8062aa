"""`LieGroupVAE.expm = 'fixed'` (lie_group.fixed_expm) and `training.jit_compile = True`.

Accuracy bound used throughout, for float32 (unit roundoff u = eps / 2 = 2**-24) m x m matrices A:
    ||X - exp(A)||_F <= m * u * (1 + ||A||_1) * ||exp(A)||_F
and the same for the gradient G of sum(W * exp(A)) against the exact one, L(A^T, W) (the adjoint
of exp's Frechet derivative). Why: each matmul's inner product of length m rounds by up to m * u
relative; the s = log2(||A||_1 / 3.93) squarings double the relative error each, so the squaring
phase contributes ~ m * u * ||A||_1; rounding A itself to float32 moves exp(A) by ~ u * ||A||
(exp's condition number ~ ||A|| for these matrices); the 1 covers the Pade approximant and its
solve, whose matrix is well conditioned at ||A / 2**s||_1 < 3.93. The exact values come from
scipy in float64 (the gradient by the block-triangular identity
expm([[A^T, W], [0, A^T]])[:m, m:] = L(A^T, W)).

Norms: up to Frobenius 100 (10 x 10, as dSprites) and 200 (20 x 20, as 3DShapes), past the
largest ||sum_j z_j A_j|| a trained model reached (docs/speed.md); 10 x 10 at 200 overflows float32.
"""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
import tensorflow_hub as hub

import conftest
from lievae_tf import models
from lievae_tf import training
from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras
from lievae_tf.models import lie_group

U = np.finfo(np.float32).eps / 2
NORMS = {10: (0.01, 0.3, 1.0, 3.0, 10.0, 20.0, 50.0, 100.0),
         20: (0.01, 0.3, 1.0, 3.0, 10.0, 20.0, 50.0, 100.0, 200.0)}


def _matrices(m, norms, per_norm=8, seed=0):
  """Gaussian m x m matrices scaled to each Frobenius norm, all in one batch (so that one batch
  mixes every Pade order and squaring count), with weights W for the gradient."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(len(norms) * per_norm, m, m))
  a *= np.repeat(norms, per_norm)[:, None, None] / np.linalg.norm(a, axis=(1, 2), keepdims=True)
  return a.astype(np.float32), rng.normal(size=a.shape).astype(np.float32)


def _exact(a, w):
  """scipy float64 exp(A) and the gradient of sum(W * exp(A)), L(A^T, W)."""
  m = a.shape[-1]
  values, gradients = [], []
  for x, y in zip(a.astype(np.float64), w.astype(np.float64)):
    values.append(scipy.linalg.expm(x))
    block = np.zeros((2 * m, 2 * m))
    block[:m, :m] = block[m:, m:] = x.T
    block[:m, m:] = y
    gradients.append(scipy.linalg.expm(block)[:m, m:])
  return np.stack(values), np.stack(gradients)


def _value_and_gradient(expm, a, w):
  a = tf.convert_to_tensor(a)
  with tf.GradientTape() as tape:
    tape.watch(a)
    value = expm(a)
    total = tf.reduce_sum(value * w)
  return value, tape.gradient(total, a)


def _assert_within_bound(got, exact, a, what):
  m = a.shape[-1]
  l1_norm = np.abs(a.astype(np.float64)).sum(axis=1).max(axis=1)
  error = np.linalg.norm(got - exact, axis=(1, 2))
  bound = m * U * (1 + l1_norm) * np.linalg.norm(exact, axis=(1, 2))
  worst = int(np.argmax(error / bound))
  assert np.all(error <= bound), (
      f"{what}: error {error[worst]:.3g} > bound {bound[worst]:.3g} at ||A||_1 = "
      f"{l1_norm[worst]:.3g}")


@pytest.mark.parametrize("m", sorted(NORMS))
def test_fixed_expm_equals_tf_linalg_expm_bit_for_bit_forward_and_gradient(m):
  # Uncompiled, fixed_expm runs tf.linalg.expm's own ops on the same values (the extra squarings
  # are selected away), so the default numerics and the fixed form agree exactly.
  a, w = _matrices(m, NORMS[m])
  value, gradient = _value_and_gradient(lie_group.fixed_expm, a, w)
  tf_value, tf_gradient = _value_and_gradient(tf.linalg.expm, a, w)
  assert np.all(np.isfinite(value.numpy()))
  np.testing.assert_array_equal(value.numpy(), tf_value.numpy())
  np.testing.assert_array_equal(gradient.numpy(), tf_gradient.numpy())


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("m", sorted(NORMS))
def test_fixed_expm_matches_scipy_forward_and_gradient(m, jit_compile):
  a, w = _matrices(m, NORMS[m])
  exact_value, exact_gradient = _exact(a, w)
  step = tf.function(lambda a, w: _value_and_gradient(lie_group.fixed_expm, a, w),
                     jit_compile=True) if jit_compile else (
                         lambda a, w: _value_and_gradient(lie_group.fixed_expm, a, w))
  value, gradient = step(a, w)
  _assert_within_bound(value.numpy(), exact_value, a, "exp(A)")
  _assert_within_bound(gradient.numpy(), exact_gradient, a, "gradient")


def test_fixed_expm_batched_shape_and_identity():
  a = np.zeros((2, 3, 4, 4), np.float32)
  np.testing.assert_array_equal(lie_group.fixed_expm(a).numpy(), np.broadcast_to(np.eye(4), a.shape))


def test_fixed_expm_is_nan_past_its_norm_bound_and_for_non_finite_inputs_only():
  # Past FIXED_EXPM_MAX_NORM its MAX_SQUARINGS squarings cannot reach exp(A): NaN, not a wrong
  # group element (the run then stops on a non-finite loss). Other matrices are untouched.
  rotation = np.array([[0.0, -1.0], [1.0, 0.0]], np.float32)  # exp(t J) stays bounded
  big = lie_group.FIXED_EXPM_MAX_NORM * 1.01
  just_inside = lie_group.FIXED_EXPM_MAX_NORM * 0.99
  a = np.stack([rotation * 0.5, rotation * big, np.full((2, 2), np.inf, np.float32),
                np.full((2, 2), np.nan, np.float32), rotation * just_inside])
  value = lie_group.fixed_expm(a).numpy()
  np.testing.assert_allclose(value[0], scipy.linalg.expm(a[0].astype(np.float64)), rtol=4 * U,
                             atol=4 * U)
  assert np.all(np.isnan(value[1:4]))
  # At the bound every squaring is used; float32 rounding of t ~ 3e4 leaves ~ u * t ~ 2e-3 of
  # cos/sin, and the value is still a rotation.
  assert np.all(np.isfinite(value[4]))
  np.testing.assert_allclose(value[4] @ value[4].T, np.eye(2), atol=2 * 2 * U * just_inside)
  with tf.GradientTape() as tape:
    x = tf.constant(a[:2])
    tape.watch(x)
    total = tf.reduce_sum(tf.where(tf.math.is_nan(lie_group.fixed_expm(x)), 0.0,
                                   lie_group.fixed_expm(x)))
  assert np.all(np.isfinite(tape.gradient(total, x).numpy()))  # no NaN leaks into gradients


def test_expm_option_selects_the_exponential_and_rejects_unknown_names():
  keras.utils.set_random_seed(0)
  vae = models.LieGroupVAE(num_channels=1, subgroup_sizes=[16, 9], subspace_sizes=[3, 2],
                           lie_alg_init_scale=0.5, expm="fixed").build_variables([64, 64, 1])
  assert vae.exp_map.expm is lie_group.fixed_expm
  assert vae.get_config()["expm"] == "fixed"
  default = models.LieGroupVAE(num_channels=1, subgroup_sizes=[16, 9], subspace_sizes=[3, 2])
  assert default.exp_map.expm is tf.linalg.expm and default.get_config()["expm"] == "tf"
  with pytest.raises(UserError, match="expm 'pade' is not one of \\('tf', 'fixed'\\)"):
    models.LieGroupVAE(num_channels=1, expm="pade")


def test_jit_compile_with_the_default_expm_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="training.jit_compile = True cannot compile this model's "
                     "step: LieGroupVAE.expm = 'tf' .* set LieGroupVAE.expm = 'fixed'"):
    training.train_with_gin(str(tmp_path / "model"), gin_config_files=[
        os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")],
                            gin_bindings=conftest.SMALL_RUN + ["training.jit_compile = True"])
  with pytest.raises(UserError, match="training.jit_compile = 'yes' must be True or False"):
    training.train_with_gin(str(tmp_path / "model2"), gin_config_files=[
        os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")],
                            gin_bindings=conftest.SMALL_RUN + ["training.jit_compile = 'yes'"])


def test_jit_compiled_run_trains_exports_and_its_module_equals_the_model(tmp_path):
  model_dir = str(tmp_path / "model")
  vae = training.train_with_gin(model_dir, gin_config_files=[
      os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")], gin_bindings=conftest.SMALL_RUN + [
          "LieGroupVAE.expm = 'fixed'", "training.jit_compile = True"])
  assert vae.xla_compiled_step  # train_step and test_step compiled with XLA (but the draws)
  assert vae.optimizer.iterations.numpy() == 6
  with open(os.path.join(model_dir, "results", "aggregate", "train.json")) as f:
    aggregate = json.load(f)
  assert np.isfinite(aggregate["train_results.train_loss"])
  assert np.isfinite(aggregate["train_results.eval_loss"])
  # The module (built with fixed_expm in its graph) decodes as the Keras model does.
  latents = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32) * 3
  expected = vae.decode_latents(latents).numpy()
  with tf.Graph().as_default():
    module = hub.Module(os.path.join(model_dir, "tfhub"))
    decoded = module(dict(latent_vectors=latents), signature="decoder", as_dict=True)["images"]
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      got = session.run(decoded)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

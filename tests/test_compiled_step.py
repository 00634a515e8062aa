"""`training.jit_compile = True` trains as the uncompiled step does: the same draws, and weights
within float32 rounding of each other after a few steps.

One run of each from the same initial weights and batches, through the product's own path
(`training.build_model` under gin_configs/dsprites.gin, Keras' `fit`, `PyTorchAdam`): compiled
with `LieGroupVAE.expm = 'fixed'`, uncompiled with the default `'tf'`.
"""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf

import conftest
from lievae_tf import models
from lievae_tf import training
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.keras2 import keras
from lievae_tf.training import adam
from lievae_tf.models import lie_group

STEPS = 5
BATCH = 4
EPS = np.finfo(np.float32).eps
# The longest sum behind one gradient element: the last transposed convolution's kernel gradient
# sums over the batch and its 64 x 64 output positions.
LONGEST_REDUCTION = BATCH * 64 * 64


class DrawRecordingVAE(models.LieGroupVAE):
  """LieGroupVAE that keeps, per step, the noise and path choice its loss was computed with."""

  def loss_terms(self, images, noise, step=0, use_eg_path=False):
    noise_by_step, path_by_step = self.draws.variables
    noise_by_step.scatter_nd_update([[step]], noise[None])
    path_by_step.scatter_nd_update([[step]], tf.cast(use_eg_path, tf.int32)[None])
    return super().loss_terms(images, noise, step=step, use_eg_path=use_eg_path)


class _Draws:
  """Holds the recording variables where Keras does not track them (not the model's weights)."""

  def __init__(self, num_latents):
    self.variables = (tf.Variable(tf.zeros([STEPS, BATCH, num_latents]), trainable=False),
                      tf.Variable(tf.zeros([STEPS], tf.int32), trainable=False))


def _build(expm, jit_compile):
  training.parse_gin([os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")],
                     ["dataset.name = 'dsprites_full'", f"LieGroupVAE.expm = '{expm}'"])
  try:
    data = data_lib.load_ground_truth_data()
    keras.utils.set_random_seed(0)
    vae = training.build_model(DrawRecordingVAE, [64, 64, 1], random_seed=0,
                               jit_compile=jit_compile)
  finally:
    gin.clear_config()
  vae.draws = _Draws(vae.num_latents)
  return vae, data


def _train(vae, batches):
  """(loss terms, weights, Adam's v) after each of len(batches) steps of Keras' `fit`."""
  after_each = []
  # Adam's second moments v, one per trainable variable in their order (PyTorchAdam's slots).
  record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda _, logs: after_each.append(
      (dict(logs), [w.numpy() for w in vae.trainable_variables],
       [v.numpy() for v in vae.optimizer._velocities])))  # pylint: disable=protected-access
  vae.fit(tf.data.Dataset.from_tensor_slices(batches), epochs=1, steps_per_epoch=len(batches),
          verbose=0, callbacks=[record])
  return after_each


@pytest.fixture(scope="module")
def runs():
  uncompiled, data = _build("tf", jit_compile=False)
  compiled, _ = _build("fixed", jit_compile=True)
  assert compiled.xla_compiled_step and not uncompiled.xla_compiled_step
  assert isinstance(compiled.optimizer, adam.PyTorchAdam)  # dsprites.gin's, as shipped
  for source, target in zip(uncompiled.trainable_variables, compiled.trainable_variables):
    target.assign(source)  # the same initial weights, whatever initialisers drew
  initial = [w.numpy() for w in uncompiled.trainable_variables]
  batches = np.stack(list(data_lib.make_input_fn(data, BATCH, seed=0)().take(STEPS)))
  return dict(uncompiled=uncompiled, compiled=compiled, initial=initial, batches=batches,
              uncompiled_steps=_train(uncompiled, batches),
              compiled_steps=_train(compiled, batches))


def test_compiled_step_draws_exactly_what_the_uncompiled_step_draws(runs):
  # XLA maps a stateless draw's random bits to floats by other formulas than TF's kernels, so the
  # draws are made outside the compiled part (base.GaussianEncoderVAE.compile). Any difference
  # here would make the two runs train on different noise.
  for compiled, uncompiled in zip(runs["compiled"].draws.variables,
                                  runs["uncompiled"].draws.variables):
    np.testing.assert_array_equal(compiled.numpy(), uncompiled.numpy())
  noise = runs["uncompiled"].draws.variables[0].numpy()
  assert np.all(noise != 0) and len(np.unique(noise)) == noise.size  # every step drew


def _max_algebra_l1_norm(vae, batches):
  """A bound on the largest ||sum_j z_j A_j||_1 of the run, z within 6 sigma of the mean."""
  mean, logvar = vae.gaussian_encoder(batches.reshape((-1,) + batches.shape[2:]))
  z = tf.abs(mean) + 6 * tf.exp(logvar / 2)
  return float(tf.reduce_max(tf.reduce_sum(
      tf.abs(lie_group.lie_algebra_element(z, tf.abs(vae.exp_map.bases[0]))), axis=1)))


def test_compiled_training_equals_uncompiled_within_float32_rounding(runs):
  # The bound. Both sides compute the same loss in float32, in other orders (XLA fuses, and
  # picks its own convolution and reduction orders) and with expm 'fixed' vs 'tf', which agree to
  # m * u * (1 + ||A||_1) relative (tests/test_fixed_expm.py). A sum of L float32 terms rounds
  # by ~ sqrt(L) * eps relative (the probabilistic bound of Higham & Mary 2019; L * eps is the
  # worst case). So each gradient, and each step's loss, differs by at most a relative
  #   step_error = m * (1 + ||A||_1) * sqrt(L) * eps,   L the longest reduction of the step.
  # Adam moves each element by lr * m_hat / (sqrt(v_hat) + epsilon), at most ~ lr; a relative
  # change of the gradients moves that by at most the same relative amount of lr * sqrt(n) in
  # the Frobenius norm of an n-element weight. Where the updates differ at all, the weight's own
  # rounding after `w - update` can differ by one ulp, <= eps * |w|. Over N steps these add up:
  #   ||W_compiled - W_uncompiled||_F <= N * (step_error * lr * sqrt(n) + eps * ||W||_F)
  # (the weights' differences feed into later gradients too, but by ~ lr relative per step:
  # nothing at N = 5). The losses: |loss_c - loss_u| <= N * step_error * |loss|.
  # Adam is blind to a gradient's scale (m_hat / sqrt(v_hat)), so a wrongly scaled loss moves no
  # weight; its second moment v = (1 - b2) sum_k b2^(N-k) g_k^2 (elementwise, no cancellation)
  # shows it. With ||e_k||_2 <= step_error ||g_k||_2 for each step's gradient error e_k,
  # sum_i |(g + e)_i^2 - g_i^2| <= (2 + step_error) step_error ||g||_2^2, so
  #   ||v_compiled - v_uncompiled||_1 <= N * (2 + step_error) * step_error * ||v||_1
  # (N again for the feedback of the weights' differences).
  uncompiled = runs["uncompiled"]
  m = uncompiled.exp_map.matrix_sizes[0]
  algebra_norm = _max_algebra_l1_norm(uncompiled, runs["batches"])
  step_error = m * (1 + algebra_norm) * np.sqrt(LONGEST_REDUCTION) * EPS
  learning_rate = float(uncompiled.optimizer.learning_rate)
  names = [w.name for w in uncompiled.trainable_variables]
  worst = []
  worst_v = []
  for step, ((logs_u, weights_u, v_u), (logs_c, weights_c, v_c)) in enumerate(zip(
      runs["uncompiled_steps"], runs["compiled_steps"]), start=1):
    for term in ("loss", "recon_loss", "total_kl"):
      assert abs(logs_c[term] - logs_u[term]) <= step * step_error * abs(logs_u[term]), (
          f"step {step} {term}: compiled {logs_c[term]} vs uncompiled {logs_u[term]}")
    for name, moment_u, moment_c in zip(names, v_u, v_c):
      v_bound = step * (2 + step_error) * step_error * np.abs(moment_u).sum(dtype=np.float64)
      worst_v.append((np.abs(moment_c.astype(np.float64) - moment_u).sum() / v_bound, step, name))
    for name, w_u, w_c, w_0 in zip(names, weights_u, weights_c, runs["initial"]):
      bound = step * (step_error * learning_rate * np.sqrt(w_u.size)
                      + EPS * np.linalg.norm(w_u))
      difference = np.linalg.norm(w_c.astype(np.float64) - w_u)
      worst.append((difference / bound, step, name, difference,
                    np.linalg.norm(w_u.astype(np.float64) - w_0)))
  ratio, step, name, difference, update = max(worst)
  print(f"step_error {step_error:.3g} (||A||_1 <= {algebra_norm:.3g}); worst weight {name} at "
        f"step {step}: ||difference|| {difference:.3g} = {ratio:.3g} of its bound, "
        f"{difference / update:.3g} of its update")
  v_ratio, v_step, v_name = max(worst_v)
  print(f"worst Adam v: {v_name} at step {v_step}, {v_ratio:.3g} of its bound")
  assert v_ratio <= 1, (f"Adam's v of {v_name} after step {v_step}: compiled and uncompiled "
                        f"differ by {v_ratio:.3g}x the float32 bound (a wrongly scaled gradient)")
  assert ratio <= 1, (f"{name} after step {step}: compiled and uncompiled weights differ by "
                      f"{difference:.3g}, {ratio:.3g}x the float32 bound")
  # The runs did train: every weight moved, by far more than they differ.
  assert all(np.linalg.norm(w_u - w_0) > 0 for w_u, w_0 in zip(
      runs["uncompiled_steps"][-1][1], runs["initial"]))
  assert all(np.abs(v).sum() > 0 for v in runs["uncompiled_steps"][-1][2])

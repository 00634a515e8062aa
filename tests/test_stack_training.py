"""Training across stacks: the real training step, from the same weights on the same batches,
gives the pinned stack's weights after each of N steps on whatever stack runs the suite.

The vectors (tests/data/stack_training.npz) are made on the PINNED stack with
    .venv-pinned/bin/python tests/stack_training_vectors.py --out=tests/data/stack_training.npz
(tests/stack_training_vectors.py says what they hold; tests/data/README.md)."""

import os

import numpy as np
import pytest

import stack_training_vectors as vectors
from tolerances import U, expm_units, summation_units

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "stack_training.npz")


@pytest.fixture(scope="module")
def made():
  return dict(np.load(VECTORS))


def _gradient_rounding_units(vae, images, noise):
  """Units of u, relative to the variable's largest gradient entry, that bound how far one
  step's gradient may differ between two builds that order the same float32 sums differently.

  A gradient entry is a chain of reductions: every layer's inner product forward, its
  data-gradient backward, and the variable's own batch x positions sum. Each rounds by at most
  summation_units(n) u relative to the |terms| it sums (tolerances.py); along a chain they add.
  The |terms| are taken to be of the size of the variable's largest gradient entry (the observed
  differences are ~10-30 u of it, so this holds with a wide margin; cancellation far beyond it
  would show as a failure). Every weight layer's inner product is bounded by its kernel's size
  over its smaller channel count; the exponential map by tolerances.expm_units, forward and back;
  and 2 u per layer for its activation and the loss' element-wise terms."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  kernels = [v for v in vae.trainable_variables if len(v.shape) >= 2 and "lie_alg" not in v.name]
  layers = sum(summation_units(int(np.prod(k.shape)) // min(k.shape[-1], k.shape[-2]))
               for k in kernels)
  batch, height, width = images.shape[:3]
  own_sum = summation_units(batch * height * width)  # the widest kernel-gradient reduction
  # The Lie algebra elements the steps exponentiate: z of each batch with its step's noise.
  from lievae_tf.models import lie_group  # pylint: disable=g-import-not-at-top
  expm = 0.0
  for batch_images, batch_noise in zip(images, noise):
    mean, logvar = vae.gaussian_encoder(tf.constant(batch_images))
    z = tf.split(mean + tf.exp(logvar / 2) * batch_noise, vae.exp_map.subspace_sizes, axis=-1)
    for z_i, basis in zip(z, vae.exp_map.bases):
      expm = max(expm, max(expm_units(a) for a in lie_group.lie_algebra_element(z_i, basis).numpy()))
  return 2 * layers + own_sum + 2 * expm + 2 * 2 * len(kernels)


def _weights_at_relu_kinks(vae, images, noise, use_eg_path, rho):
  """{variable ref: mask of its weights} of the dense ReLU units whose pre-activation, for some
  sample of the batch, lies within rho x (its sum of |terms|) of 0, i.e. within what the two
  stacks' rounding may move it: such a unit may be on for that sample on one stack and off on
  the other, and then the gradient of its kernel column and bias differs by that sample's whole
  share, not by rounding. A convolution's own kernel sums over 8 x up to 32 x 32 positions, so
  a switched position moves it by a small share; but the share it passes down is whole: a dense
  layer whose output feeds ReLU convolutions (the decoder's, through a reshape) takes every such
  switch in its units, and among ~10^5 pre-activations a step some lie within rounding of 0, so
  that layer's weights are all taken as switched."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  at_kinks = {}

  def forward(sequential, x):
    feeding_dense = None
    for layer in sequential.layers:
      relu = getattr(getattr(layer, "activation", None), "__name__", "") == "relu"
      if isinstance(layer, keras.layers.Conv2D) and relu and feeding_dense is not None:
        for weight in (feeding_dense.kernel, feeding_dense.bias):
          at_kinks[weight.ref()] = np.ones(int(np.prod(weight.shape)), bool)
        feeding_dense = None
      if isinstance(layer, keras.layers.Dense) and relu:
        pre = x @ layer.kernel + layer.bias
        terms = tf.abs(x) @ tf.abs(layer.kernel) + tf.abs(layer.bias)
        near = np.any(np.abs(pre.numpy()) <= rho * terms.numpy(), axis=0)
        at_kinks[layer.kernel.ref()] = np.broadcast_to(near, layer.kernel.shape).reshape(-1)
        at_kinks[layer.bias.ref()] = near
        x = tf.nn.relu(pre)
        feeding_dense = layer
      else:
        x = layer(x)
    return x

  encoder = vae.encoder
  group_feats = forward(encoder.group_features, tf.constant(images))
  slices = tf.split(group_feats, encoder.subgroup_sizes, axis=-1)
  mean = tf.concat([forward(h, g) for h, g in zip(encoder.to_means, slices)], axis=-1)
  logvar = tf.concat([forward(h, g) for h, g in zip(encoder.to_logvars, slices)], axis=-1)
  z = mean + tf.exp(logvar / 2) * noise
  forward(vae.decoder.net, group_feats if use_eg_path else vae.exp_map(z))
  return at_kinks


def _adam_ratio_bound(step, beta_1, beta_2):
  """Largest |m_hat| / sqrt(v_hat) after `step` steps: m_hat and v_hat are weighted means of the
  gradients and of their squares, so by Cauchy-Schwarz |m_hat| <= sqrt(sum w_k^2 / w'_k) sqrt(v_hat)."""
  k = np.arange(1, step + 1)
  w = (1 - beta_1) * beta_1 ** (step - k) / (1 - beta_1 ** step)
  w_sq = (1 - beta_2) * beta_2 ** (step - k) / (1 - beta_2 ** step)
  return float(np.sqrt(np.sum(w ** 2 / w_sq)))


def test_training_steps_reproduce_the_pinned_stacks_weights(made):
  vae = vectors.build_model()
  variables = vae.trainable_variables
  names = [v.name for v in variables]
  assert names == made["names"].tolist()
  start = vectors.initial_weights([v.shape for v in variables], made["init_limits"])
  np.testing.assert_allclose([np.sum(np.abs(w), dtype=np.float64) for w in start],
                             made["init_check"], rtol=1e-12, err_msg="NumPy's PCG64 stream changed")
  for variable, value in zip(variables, start):
    variable.assign(value)
  images = np.unpackbits(made["images"])[:np.prod(made["images_shape"])].reshape(
      made["images_shape"]).astype(np.float32)
  steps = len(images)

  # The stateless draws are the same on both stacks (Philox on a CPU), bit for bit but for the
  # normal's transcendental functions, which a build may round differently by an ulp or two.
  noise, use_eg_path = vectors.step_draws(vae, steps)
  np.testing.assert_array_equal(use_eg_path, made["draws_use_eg_path"])
  np.testing.assert_allclose(noise, made["draws_noise"], rtol=8 * U, atol=8 * U)

  optimizer = vae.optimizer
  lr, beta_1, beta_2, epsilon = (float(optimizer.learning_rate.numpy()), optimizer.beta_1,
                                 optimizer.beta_2, optimizer.epsilon)
  slots = [(optimizer._momentums[i], optimizer._velocities[i])  # pylint: disable=protected-access
           for i in range(len(variables))]
  index = [made[f"index/{k}"] for k in range(len(names))]
  trajectory = []  # per step: (kept weights, full first moments, kept second moments)
  full_weights = [start]  # before each step, then after the last

  def record(step):
    del step
    full_weights.append([v.numpy() for v in variables])
    trajectory.append(([v.numpy().reshape(-1)[i] for v, i in zip(variables, index)],
                       [m.numpy() for m, _ in slots],
                       [v.numpy().reshape(-1)[i] for (_, v), i in zip(slots, index)]))

  rho_0 = _gradient_rounding_units(vae, images, noise)
  vectors.train_steps(vae, images, record)
  assert len(trajectory) == steps

  # The bound, per kept weight, accumulated over the steps. PyTorchAdam steps
  #   w -= lr r,   r = m_hat / (sqrt(v_hat) + epsilon),   |r| <= c (_adam_ratio_bound).
  # If every gradient of a variable so far differs by at most dg between the stacks, then
  # |d m_hat| <= dg and |d sqrt(v_hat)| <= dg (weighted means, weighted RMS), so
  #   |d r| <= (1 + c) dg / (sqrt(v_hat) - dg + epsilon),   and always |d r| <= 2 c.
  # This is where Adam amplifies: a weight whose gradient is tiny (|g| ~ dg, or within reach of
  # epsilon) has its gradient's rounding divided by ~epsilon, i.e. an O(lr) update of O(1)
  # relative error (SGD would move it by ~lr |g|, nothing); the cap 2 c lr bounds those, the
  # first term every weight with a real gradient. dg = rho u G: G the variable's largest
  # |gradient| so far, rho the rounding units of one gradient (_gradient_rounding_units) plus
  # what the earlier steps' weight differences feed back: a relative change e of a layer's
  # weights moves a gradient through it by at most e relative (first order, per layer), here
  # e = ||dw|| / ||w|| of the kept weights after the previous step (the difference as measured:
  # it passed that step's bound), summed over the layers; rounding differences are random-like,
  # and a random matrix' operator norm is ~ its Frobenius norm / sqrt(side), so the Frobenius
  # ratio stands for the operator one. Weights allowed an O(1) relative error (d r >= c, or at
  # a ReLU kink) are left out of e: their gradient is at the rounding level, i.e. they sit on
  # (nearly) dead units and moving them moves nothing else; counting them would let their
  # O(lr) differences widen every later bound.
  # Each step adds also the rounding of the update itself (a build may fuse it differently):
  # 8 u of r, and 2 u of the weight.
  bound = [np.zeros(len(i)) for i in index]
  largest_gradient = [0.0] * len(variables)
  previous_moments = [np.zeros(v.shape) for v in variables]
  switched = [np.zeros(len(i), bool) for i in index]  # weights of units that may have switched
  feedback = 0.0
  report = []
  for step, (weights, moments, second_moments) in enumerate(trajectory, start=1):
    c = _adam_ratio_bound(step, beta_1, beta_2)
    rho = rho_0 * U + feedback
    worst, worst_ratio, feedback = (0.0, ""), 0.0, 0.0
    for variable, value in zip(variables, full_weights[step - 1]):
      variable.assign(value)
    at_kinks = _weights_at_relu_kinks(vae, images[step - 1], noise[step - 1],
                                      bool(use_eg_path[step - 1]), rho)
    kinks = 0
    for k, name in enumerate(names):
      gradient = (moments[k] - beta_1 * previous_moments[k]) / (1 - beta_1)
      largest_gradient[k] = max(largest_gradient[k], float(np.max(np.abs(gradient))))
      dg = rho * largest_gradient[k]
      root_v_hat = np.sqrt(second_moments[k] / (1 - beta_2 ** step))
      dr = np.minimum(2 * c, (1 + c) * dg / (np.maximum(root_v_hat - dg, 0) + epsilon) + 8 * U * c)
      if variables[k].ref() in at_kinks:  # from this step on, their moments differ too
        switched[k] |= at_kinks[variables[k].ref()][index[k]]
        kinks += int(np.sum(at_kinks[variables[k].ref()]))
      dr[switched[k]] = 2 * c
      step_bound = lr * dr + 2 * U * (np.abs(weights[k]) + lr * c)
      bound[k] = bound[k] + step_bound
      expected = made[f"weights/{k}"][step].astype(np.float64)
      difference = np.abs(weights[k] - expected)
      ratio = float(np.max(difference / bound[k]))
      assert ratio <= 1.0, (
          f"step {step}, {name}: |difference| {difference[np.argmax(difference / bound[k])]:.3g} "
          f"> bound {bound[k][np.argmax(difference / bound[k])]:.3g} (of lr {lr:g})")
      worst_ratio = max(worst_ratio, ratio)
      worst = max(worst, (float(np.max(difference)), name))
      if len(variables[k].shape) >= 2:
        smooth = dr < c
        feedback += (np.linalg.norm(difference[smooth]) /
                     max(np.linalg.norm(expected[smooth]), 1e-30))
    previous_moments = moments
    report.append(f"step {step}: max |difference| {worst[0]:.3g} = {worst[0] / lr:.3g} lr "
                  f"({worst[1]}), max difference / bound {worst_ratio:.3g} (rho {rho / U:.0f} u, "
                  f"{kinks} weights of units at a ReLU kink)")
  print("\n".join(report))

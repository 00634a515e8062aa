"""`optimizer.epsilon_placement = 'pytorch'`: Adam that steps as torch.optim.Adam (the paper code's
optimiser), pinned against torch itself (the `torch` tests); and its checkpoints, which need no torch."""

import numpy as np
import pytest
import tensorflow as tf

import conftest
from lievae_tf.training import adam
from lievae_tf.errors import UserError

LEARNING_RATE = 1e-4


def _gradients(num_steps, shape=(300,), seed=0):
  """Gradients whose magnitudes span 1e-10..1: many near epsilon (1e-8), where placement matters."""
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=shape) * 10.0**rng.uniform(-10, 0, size=shape)).astype(np.float32)
          for _ in range(num_steps)]


def _torch_adam(initial, gradients):
  torch = pytest.importorskip("torch", reason=conftest.TORCH_MISSING)
  parameter = torch.nn.Parameter(torch.from_numpy(initial.copy()))
  optimizer = torch.optim.Adam([parameter], lr=LEARNING_RATE)  # the paper code's optimiser
  for gradient in gradients:
    parameter.grad = torch.from_numpy(gradient.copy())
    optimizer.step()
  return parameter.detach().numpy()


def _keras_adam(initial, gradients, placement):
  variable = tf.Variable(initial)
  optimizer = adam.make_adam(LEARNING_RATE, 0.9, 0.999, 1e-8, placement)
  for gradient in gradients:
    optimizer.apply_gradients([(tf.constant(gradient), variable)])
  return variable.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("num_steps", [1, 5])
def test_pytorch_placement_steps_as_torch_adam(num_steps):
  initial = np.random.default_rng(1).normal(size=300).astype(np.float32)
  gradients = _gradients(num_steps)
  expected = _torch_adam(initial, gradients)
  np.testing.assert_allclose(_keras_adam(initial, gradients, "pytorch"), expected, rtol=0,
                             atol=1e-6)
  # Keras' own placement is not within that tolerance: the comparison can tell them apart.
  assert np.abs(_keras_adam(initial, gradients, "keras") - expected).max() > 1e-5


@pytest.mark.torch
def test_the_update_itself_matches_to_float_rounding():
  """From zero weights the update is the whole value: relative agreement of each step."""
  initial = np.zeros(300, np.float32)
  gradients = _gradients(5, seed=2)
  expected = _torch_adam(initial, gradients)
  ours = _keras_adam(initial, gradients, "pytorch")
  assert np.abs(ours - expected).max() <= 1e-5 * LEARNING_RATE


def test_a_traced_step_equals_the_eager_one_bit_for_bit():
  """Inside a tf.function (as `fit` runs it) the bias corrections are computed once a step for every
  variable; eagerly, once a variable. Both are the same float64 ops on the same values, so the
  weights must agree exactly, every variable, every step (torch's own steps: the tests above)."""
  shapes = [(300,), (7, 5), (3, 3, 2)]
  gradients = [_gradients(5, shape, seed) for seed, shape in enumerate(shapes)]
  initial = [np.random.default_rng(4).normal(size=shape).astype(np.float32) for shape in shapes]

  def run(traced):
    variables = [tf.Variable(x) for x in initial]
    optimizer = adam.make_adam(LEARNING_RATE, 0.9, 0.999, 1e-8, "pytorch")
    apply = optimizer.apply_gradients
    if traced:
      apply = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    for step in range(5):
      grads = [tf.constant(g[step]) for g in gradients]
      apply(grads) if traced else apply(zip(grads, variables))  # pylint: disable=expression-not-assigned
    return [v.numpy() for v in variables]

  eager, traced = run(traced=False), run(traced=True)
  for a, b in zip(eager, traced):
    np.testing.assert_array_equal(a, b)


def test_checkpoints_are_interchangeable_with_keras_adam(tmp_path):
  """Same slots: a Keras-Adam checkpoint resumes under the PyTorch placement with every slot (m
  and v of each variable, the iteration count) and every weight restored exactly."""
  rng = np.random.default_rng(3)
  initial = [rng.normal(size=300).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)]
  gradients = [_gradients(4, shape=w.shape, seed=4 + i) for i, w in enumerate(initial)]
  variables = [tf.Variable(w) for w in initial]
  optimizer = adam.make_adam(LEARNING_RATE, 0.9, 0.999, 1e-8, "keras")
  for step in range(2):
    optimizer.apply_gradients([(tf.constant(g[step]), v) for g, v in zip(gradients, variables)])
  path = tf.train.Checkpoint(variables=variables, optimizer=optimizer).save(str(tmp_path / "ckpt"))

  restored_variables = [tf.Variable(np.zeros_like(w)) for w in initial]
  restored = adam.make_adam(LEARNING_RATE, 0.9, 0.999, 1e-8, "pytorch")
  restored.build(restored_variables)
  # Before restoring, every slot and weight differs from the saved one (zeros vs nonzero).
  assert all(np.all(v.numpy() == 0) for v in restored.variables[1:] + restored_variables)
  tf.train.Checkpoint(variables=restored_variables, optimizer=restored).restore(
      path).assert_consumed()
  assert int(restored.iterations.numpy()) == 2
  # iterations, then m and v of each variable.
  assert len(restored.variables) == len(optimizer.variables) == 1 + 2 * len(initial)
  for saved, loaded in zip(optimizer.variables, restored.variables):
    assert saved.shape == loaded.shape
    np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.name)
  for saved, loaded in zip(variables, restored_variables):
    np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
  for step in range(2, 4):
    restored.apply_gradients([(tf.constant(g[step]), v)
                              for g, v in zip(gradients, restored_variables)])
  assert int(restored.iterations.numpy()) == 4


def test_an_unknown_placement_is_a_user_error():
  with pytest.raises(UserError, match="epsilon_placement = 'torch' is not one of"):
    adam.make_adam(LEARNING_RATE, 0.9, 0.999, 1e-8, "torch")

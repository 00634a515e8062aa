"""The exponential map and the penalties on the Lie algebra (docs/model.md, "Exponential map" and
"Group losses")."""

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from lievae_tf.models import lie_group
from lievae_tf.errors import UserError
import tolerances as tol


def _exp_map(subgroup_sizes, subspace_sizes, scale=0.3, seed=0):
  layer = lie_group.ExponentialMap(subgroup_sizes, subspace_sizes, init_scale=scale)
  rng = np.random.default_rng(seed)
  for basis in layer.bases:
    basis.assign(rng.normal(0, scale, basis.shape).astype(np.float32))
  return layer


def test_exponential_map_matches_scipy_row_major_per_subgroup():
  layer = _exp_map([9, 16], [2, 3])
  z = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
  features = layer(z).numpy()
  assert features.shape == (4, 25)
  bases = [b.numpy().astype(np.float64) for b in layer.bases]
  for b in range(4):
    for latents, basis, got in zip(np.split(z[b], [2]), bases, np.split(features[b], [9])):
      algebra = np.einsum("d,dmn->mn", latents, basis)
      # Row-major; within float32 expm's bound relative to the matrix norm (tests/tolerances.py).
      tol.assert_close_in_norm(got, scipy.linalg.expm(algebra).reshape(-1),
                               tol.expm_units(algebra), what=f"row {b}")


def test_exponential_map_of_zero_is_identity():
  layer = _exp_map([100], [10])
  np.testing.assert_allclose(layer(np.zeros((2, 10), np.float32)).numpy(),
                             np.tile(np.eye(10).reshape(1, -1), (2, 1)), atol=1e-7)


def test_exponential_map_gradient_matches_numerical_gradient():
  layer = _exp_map([9], [3], scale=0.5)
  z = tf.constant(np.random.default_rng(2).normal(size=(2, 3)), tf.float64)
  basis = tf.cast(layer.bases[0], tf.float64)

  def f(z, basis):
    return tf.reshape(tf.linalg.expm(lie_group.lie_algebra_element(z, basis)), [2, 9])

  theoretical, numerical = tf.test.compute_gradient(f, [z, basis])
  for t, n in zip(theoretical, numerical):
    np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("subgroups, subspaces, words", [
    ([99], [10], ["99", "not a perfect square"]),
    ([100, 50], [5, 5], ["50", "not a perfect square"]),
    ([100], [5, 5], ["different lengths", "[100]", "[5, 5]"]),
    ([], [], ["empty"]),
    ([100], [0], ["0", "positive integer"]),
])
def test_bad_subgroup_layouts_are_clear_errors(subgroups, subspaces, words):
  with pytest.raises(UserError) as error:
    lie_group.ExponentialMap(subgroups, subspaces)
  for word in words:
    assert word in str(error.value)


# Hand-built bases with known products: E12 = [[0,1],[0,0]], E21 = [[0,0],[1,0]].
E12 = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)
E21 = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)


def test_hessian_penalty_of_hand_built_basis():
  # E21 E12 = diag(0, 1) and E12 E21 = diag(1, 0): each off-diagonal pair has ||.||^2 = 1, so
  # the mean over the 2*2 pairs (the zeroed diagonal included) is 2 / 4.
  assert lie_group.hessian_penalty(tf.constant([E12, E21])).numpy() == pytest.approx(0.5)
  # 2 * E12 scales each product by 2, its square norm by 4.
  assert lie_group.hessian_penalty(tf.constant([2 * E12, E21])).numpy() == pytest.approx(2.0)


def test_hessian_penalty_ignores_a_matrix_times_itself():
  # E12 E12 = 0 and the diagonal is zeroed anyway: a single rotation generator J with J J = -I
  # paired with the zero matrix gives 0.
  rotation = np.array([[0.0, -1.0], [1.0, 0.0]], np.float32)
  assert lie_group.hessian_penalty(tf.constant([rotation, np.zeros_like(rotation)])).numpy() == 0


# E12 and I + E12 commute, but their product E12 is not symmetric; E12 and E21 do not commute, but
# both their products (diag(0, 1), diag(1, 0)) are symmetric: the two forms tell them apart.
COMMUTING = np.stack([E12, np.eye(2, dtype=np.float32) + E12])
SYMMETRIC_PRODUCTS = np.stack([E12, E21])


def test_commutator_penalty_is_the_paper_codes_by_default():
  # The paper code's calc_commute_loss: P[j, k] = A_k A_j minus its matrix transpose. For
  # COMMUTING both products are E12: ||E12 - E21||^2 = 2 per pair, mean (2 + 2) / 4 = 1.
  assert lie_group.commutator_penalty(tf.constant(COMMUTING)).numpy() == pytest.approx(1.0)
  assert lie_group.commutator_penalty(tf.constant(SYMMETRIC_PRODUCTS)).numpy() == 0.0
  # Random bases: the same as the paper code's formula written out in numpy.
  basis = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
  products = np.einsum("kab,jbc->jkac", basis.astype(np.float64), basis) * (
      1 - np.eye(3))[:, :, None, None]
  expected = ((products - products.transpose(0, 1, 3, 2))**2).sum(axis=(2, 3)).mean()
  assert lie_group.commutator_penalty(tf.constant(basis)).numpy() == pytest.approx(expected,
                                                                                  rel=1e-5)


def test_commutator_penalty_bracket_is_the_papers_text():
  # [E12, E21] = diag(1, -1): ||.||^2 = 2 for (j, k) and for (k, j): mean 4 / 4 = 1.
  bracket = lambda basis: lie_group.commutator_penalty(tf.constant(basis), "bracket").numpy()
  assert bracket(SYMMETRIC_PRODUCTS) == pytest.approx(1.0)
  # Commuting matrices have no bracket, though their products are not zero.
  assert bracket(COMMUTING) == 0.0
  diagonal = np.stack([np.diag([1.0, 2.0]), np.diag([3.0, -1.0])]).astype(np.float32)
  assert bracket(diagonal) == 0.0
  assert lie_group.hessian_penalty(tf.constant(diagonal)).numpy() == pytest.approx((9 + 4) * 2 / 4)


def test_an_unknown_commutator_is_a_clear_error():
  with pytest.raises(UserError, match="paper_code"):
    lie_group.commutator_penalty(tf.constant(COMMUTING), "lie")


def test_group_penalties_skip_single_latent_subgroups():
  bases = [tf.constant(COMMUTING), tf.constant([E12 + E21])]
  hessian, commute = lie_group.group_penalties(bases)
  assert hessian.numpy() == pytest.approx(0.5)  # both products are E12: (1 + 1) / 4
  assert commute.numpy() == pytest.approx(1.0)
  assert lie_group.group_penalties(bases, "bracket")[1].numpy() == 0.0

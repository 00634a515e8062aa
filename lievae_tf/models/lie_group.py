"""The exponential map from latents to Lie group elements, and the penalties on its algebra.

docs/model.md, "Exponential map" and "Group losses". Subgroup i has a learnable Lie algebra basis
A_i of shape (d_i, m_i, m_i), one m_i x m_i matrix per latent of the subgroup, where
s_i = m_i**2 is the subgroup's group-feature size. A latent vector z maps to the group elements
expm(sum_j z_ij A_ij), flattened row-major and concatenated over subgroups.
"""

import math
import numbers

import tensorflow as tf

from lievae_tf.errors import UserError


def matrix_sizes(subgroup_sizes, subspace_sizes):
  """Validates the subgroup layout and returns each subgroup's matrix size m_i = sqrt(s_i)."""
  subgroup_sizes, subspace_sizes = list(subgroup_sizes), list(subspace_sizes)
  if not subgroup_sizes:
    raise UserError("subgroup_sizes is empty: give at least one subgroup, e.g. [100].")
  if len(subgroup_sizes) != len(subspace_sizes):
    raise UserError(
        f"subgroup_sizes {subgroup_sizes} and subspace_sizes {subspace_sizes} have different "
        f"lengths ({len(subgroup_sizes)} vs {len(subspace_sizes)}): give one latent count per "
        "subgroup.")
  dims = []
  for size in subgroup_sizes:
    root = math.isqrt(int(size)) if isinstance(size, numbers.Integral) and size > 0 else 0
    if root * root != size:
      raise UserError(
          f"subgroup size {size!r} in subgroup_sizes {subgroup_sizes} is not a perfect square: "
          "each subgroup's group features are a flattened m x m matrix, so use m*m "
          "(e.g. 100 for 10x10 or 400 for 20x20).")
    dims.append(int(root))
  for latents in subspace_sizes:
    if not isinstance(latents, numbers.Integral) or latents < 1:
      raise UserError(f"subspace size {latents!r} in subspace_sizes {subspace_sizes} must be a "
                      "positive integer (the number of latents of that subgroup).")
  return dims


class ExponentialMap(tf.keras.layers.Layer):
  """z (B, D) -> group features (B, sum s_i) through per-subgroup matrix exponentials."""

  def __init__(self, subgroup_sizes, subspace_sizes, init_scale=0.001, **kwargs):
    super().__init__(**kwargs)
    self.subgroup_sizes = list(subgroup_sizes)
    self.subspace_sizes = list(subspace_sizes)
    self.matrix_sizes = matrix_sizes(self.subgroup_sizes, self.subspace_sizes)
    self.bases = [
        self.add_weight(
            name=f"lie_alg_basis_{i}",
            shape=(latents, m, m),
            initializer=tf.keras.initializers.RandomNormal(stddev=init_scale))
        for i, (latents, m) in enumerate(zip(self.subspace_sizes, self.matrix_sizes))
    ]

  def call(self, z):
    features = []
    for z_i, basis, m in zip(tf.split(z, self.subspace_sizes, axis=-1), self.bases,
                             self.matrix_sizes):
      group_elements = tf.linalg.expm(lie_algebra_element(z_i, basis))
      features.append(tf.reshape(group_elements, [-1, m * m]))  # row-major, as torch .view
    return tf.concat(features, axis=-1)


def lie_algebra_element(z, basis):
  """sum_j z_j A_j: (B, d) x (d, m, m) -> (B, m, m)."""
  return tf.einsum("bd,dmn->bmn", z, basis)


def basis_products(basis):
  """P[j, k] = A_k A_j for all ordered pairs, with the diagonal j == k zeroed: (d, d, m, m)."""
  products = tf.einsum("kab,jbc->jkac", basis, basis)
  off_diagonal = 1.0 - tf.eye(tf.shape(basis)[0], dtype=basis.dtype)
  return products * off_diagonal[:, :, None, None]


def hessian_penalty(basis):
  """Mean over the d*d pairs of ||A_k A_j||_F^2, j != k (the zeroed diagonal counts in the mean)."""
  return tf.reduce_mean(tf.reduce_sum(tf.square(basis_products(basis)), axis=[2, 3]))


# The commutator penalty's two forms. 'paper_code' is what the paper's code computes and trains
# with; 'bracket' is the Lie bracket of the paper's text (zero exactly when the basis commutes).
COMMUTATORS = ("paper_code", "bracket")


def commutator_penalty(basis, commutator="paper_code"):
  """Mean over the d*d pairs (j, k), j != k, of ||C_jk||_F^2 (the zeroed diagonal counts in the mean).

  commutator='paper_code': C_jk = A_k A_j - (A_k A_j)^T, the paper code's `calc_commute_loss`
    (each product minus its matrix transpose; zero when every product is symmetric).
  commutator='bracket': C_jk = A_j A_k - A_k A_j, the bracket [A_j, A_k] of the paper's text.
  """
  products = basis_products(basis)  # [j, k] = A_k A_j
  if commutator == "paper_code":
    differences = products - tf.transpose(products, [0, 1, 3, 2])
  elif commutator == "bracket":
    differences = tf.transpose(products, [1, 0, 2, 3]) - products  # [j, k] = A_j A_k - A_k A_j
  else:
    raise UserError(f"commutator {commutator!r} is not one of {COMMUTATORS}: 'paper_code' is the "
                    "paper code's penalty (each product minus its transpose), 'bracket' the Lie "
                    "bracket A_j A_k - A_k A_j of the paper's text.")
  return tf.reduce_mean(tf.reduce_sum(tf.square(differences), axis=[2, 3]))


def group_penalties(bases, commutator="paper_code"):
  """(hessian, commutator) summed over the subgroups with more than one latent."""
  hessian, commute = tf.constant(0.0), tf.constant(0.0)
  for basis in bases:
    if basis.shape[0] > 1:
      hessian += hessian_penalty(basis)
      commute += commutator_penalty(basis, commutator)
  return hessian, commute

"""The exponential map from latents to Lie group elements, and the penalties on its algebra.

docs/model.md, "Exponential map" and "Group losses". Subgroup i has a learnable Lie algebra basis
A_i of shape (d_i, m_i, m_i), one m_i x m_i matrix per latent of the subgroup, where
s_i = m_i**2 is the subgroup's group-feature size. A latent vector z maps to the group elements
expm(sum_j z_ij A_ij), flattened row-major and concatenated over subgroups.

The exponential is `tf.linalg.expm` (`expm='tf'`, the default) or `fixed_expm` (`expm='fixed'`):
the same scaling and squaring with a fixed number of squarings, which XLA can compile.
"""

import math
import numbers

import tensorflow as tf

from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras


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


# tf.linalg.expm's float32 path (Higham 2005, Table 2.3): Pade 3 below the first l1 norm, Pade 5
# below the second, else Pade 7 of A / 2**s with s = max(0, floor(log2(||A||_1 / PADE7_MAX_NORM))).
PADE_NORM_LIMITS = (4.258730016922831e-001, 1.880152677804762e+000)
PADE7_MAX_NORM = 3.925724783138660
# `fixed_expm` always applies this many (selected) squarings: exact for ||A||_1 < FIXED_EXPM_MAX_NORM
# (32,161; a trained model's largest ||sum_j z_j A_j||_1 is far below it, docs/speed.md). Past it
# a fixed amount of work cannot be exact, so the result is NaN rather than silently wrong.
MAX_SQUARINGS = 12
FIXED_EXPM_MAX_NORM = PADE7_MAX_NORM * 2.0**(MAX_SQUARINGS + 1)
EXPM_IMPLEMENTATIONS = ("tf", "fixed")


def _pade3(matrix, ident):
  b = (120.0, 60.0, 12.0)
  matrix_2 = tf.matmul(matrix, matrix)
  matrix_u = tf.matmul(matrix, matrix_2 + b[1] * ident)
  matrix_v = b[2] * matrix_2 + b[0] * ident
  return matrix_u, matrix_v


def _pade5(matrix, ident):
  b = (30240.0, 15120.0, 3360.0, 420.0, 30.0)
  matrix_2 = tf.matmul(matrix, matrix)
  matrix_4 = tf.matmul(matrix_2, matrix_2)
  matrix_u = tf.matmul(matrix, matrix_4 + b[3] * matrix_2 + b[1] * ident)
  matrix_v = b[4] * matrix_4 + b[2] * matrix_2 + b[0] * ident
  return matrix_u, matrix_v


def _pade7(matrix, ident):
  b = (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0)
  matrix_2 = tf.matmul(matrix, matrix)
  matrix_4 = tf.matmul(matrix_2, matrix_2)
  matrix_6 = tf.matmul(matrix_4, matrix_2)
  matrix_u = tf.matmul(matrix, matrix_6 + b[5] * matrix_4 + b[3] * matrix_2 + b[1] * ident)
  matrix_v = b[6] * matrix_6 + b[4] * matrix_4 + b[2] * matrix_2 + b[0] * ident
  return matrix_u, matrix_v


def fixed_expm(matrix):
  """exp of float32 square matrices (..., m, m) with a fixed amount of work, branch-free.

  tf.linalg.expm's float32 algorithm, op for op, except its two pieces of control flow: the
  squarings run in a `while_loop` until the batch's largest count (data-dependent, so XLA cannot
  compile its gradient), and a `cond` fills the whole batch with NaN if any input is not finite.
  Here each of MAX_SQUARINGS squarings is applied where a matrix needs it (`where`, as inside
  tf.linalg.expm's loop), and a matrix that is not finite or has ||A||_1 >= FIXED_EXPM_MAX_NORM
  gives NaN (that matrix only). Gradients by autodiff, as tf.linalg.expm's.
  """
  matrix = tf.convert_to_tensor(matrix)
  if matrix.dtype != tf.float32:
    raise TypeError(f"fixed_expm computes float32 only, not {matrix.dtype.name}.")
  shape = tf.shape(matrix)
  matrix = tf.reshape(matrix, tf.concat([[-1], shape[-2:]], axis=0))
  l1_norm = tf.reduce_max(tf.reduce_sum(tf.abs(matrix), axis=1), axis=-1)[:, None, None]
  exact = l1_norm < FIXED_EXPM_MAX_NORM  # False for NaN and inf too
  # The others are computed as zero matrices (finite, so no NaN reaches a gradient) and set to NaN.
  matrix = tf.where(exact, matrix, 0.0)
  l1_norm = tf.where(exact, l1_norm, 0.0)
  squarings = tf.maximum(tf.floor(tf.math.log(l1_norm / PADE7_MAX_NORM) / tf.math.log(2.0)), 0.0)
  ident = tf.eye(tf.shape(matrix)[-1], dtype=matrix.dtype)
  u3, v3 = _pade3(matrix, ident)
  u5, v5 = _pade5(matrix, ident)
  u7, v7 = _pade7(matrix / tf.pow(2.0, squarings), ident)

  def by_norm(case3, case5, case7):
    return tf.where(l1_norm < PADE_NORM_LIMITS[0], case3,
                    tf.where(l1_norm < PADE_NORM_LIMITS[1], case5, case7))

  u, v = by_norm(u3, u5, u7), by_norm(v3, v5, v7)
  result = tf.linalg.solve(-u + v, u + v)
  for i in range(MAX_SQUARINGS):
    result = tf.where(squarings > i, tf.matmul(result, result), result)
  result = tf.where(exact, result, float("nan"))
  return tf.reshape(result, shape)


def matrix_exponential(expm):
  """The exponential named by `expm` ('tf' or 'fixed')."""
  if expm not in EXPM_IMPLEMENTATIONS:
    raise UserError(f"expm {expm!r} is not one of {EXPM_IMPLEMENTATIONS}: 'tf' is "
                    "tf.linalg.expm (the default), 'fixed' the same scaling and squaring with a "
                    "fixed number of squarings, which XLA compiles (training.jit_compile).")
  return tf.linalg.expm if expm == "tf" else fixed_expm


class ExponentialMap(keras.layers.Layer):
  """z (B, D) -> group features (B, sum s_i) through per-subgroup matrix exponentials."""

  def __init__(self, subgroup_sizes, subspace_sizes, init_scale=0.001, expm="tf", **kwargs):
    super().__init__(**kwargs)
    self.expm = matrix_exponential(expm)
    self.subgroup_sizes = list(subgroup_sizes)
    self.subspace_sizes = list(subspace_sizes)
    self.matrix_sizes = matrix_sizes(self.subgroup_sizes, self.subspace_sizes)
    self.bases = [
        self.add_weight(
            name=f"lie_alg_basis_{i}",
            shape=(latents, m, m),
            initializer=keras.initializers.RandomNormal(stddev=init_scale))
        for i, (latents, m) in enumerate(zip(self.subspace_sizes, self.matrix_sizes))
    ]

  def call(self, z):
    features = []
    for z_i, basis, m in zip(tf.split(z, self.subspace_sizes, axis=-1), self.bases,
                             self.matrix_sizes):
      group_elements = self.expm(lie_algebra_element(z_i, basis))
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

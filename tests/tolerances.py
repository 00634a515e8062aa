"""Tolerances derived from float32 arithmetic, not from what one machine printed.

u = 2**-24 is float32's unit roundoff (half of np.finfo(np.float32).eps): one correctly rounded
operation has a relative error of at most u. Different CPU kernels (oneDNN's AVX-512 or AVX2 code,
Eigen without oneDNN) order sums differently, so a test may rely only on a bound that holds for
every order; each bound below says where it comes from.

Element-wise relative tolerances are wrong for results whose entries cross zero or cancel (an
entry 1e-3 of a matrix with entries ~200 carries the rounding of the large ones), so results are
compared relative to the magnitude they are computed from: the norm of the matrix, or the sum of
the absolute values of the terms summed.
"""

import numpy as np

U = float(np.finfo(np.float32).eps) / 2  # float32 unit roundoff, 2**-24


def summation_units(n, lam=6.0):
  """Rounding bound, in units of u times the sum of |terms|, for summing n float32 terms in any
  order: lam * sqrt(n) (Higham & Mary 2019, probabilistic rounding error analysis: it holds with
  probability >= 1 - 2 exp(-lam**2 / 2), 3e-8 for lam = 6), capped by the worst case n - 1."""
  return min(n - 1.0, lam * np.sqrt(n)) if n > 1 else 0.0


def expm_units(a):
  """Bound, in units of u times ||expm(a)||_F, on the forward error of float32 scaling-and-squaring
  expm of the m x m matrix `a` (with the rounding of `a` itself): 4 m (1 + ||a||_F).

  1 + ||a|| is expm's relative condition number at a (Higham, Functions of Matrices, Thm 10.13 and
  Sec. 10.2: kappa_exp(a) >= ||a||, with equality for normal a), the rounding the input and the
  algorithm's products add is amplified by; m is the length of the inner products of those
  products; 4 covers the input's rounding, the Pade solve and the squarings."""
  a = np.asarray(a, np.float64)
  return 4.0 * a.shape[-1] * (1.0 + np.linalg.norm(a))


def assert_close_in_norm(actual, expected, units, scale=None, what=""):
  """||actual - expected||_F <= units * u * scale, scale defaulting to ||expected||_F."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  scale = np.linalg.norm(expected) if scale is None else float(scale)
  error = np.linalg.norm(actual - expected)
  assert error <= units * U * scale, (
      f"{what}: ||difference|| {error:.3g} > {units:.1f} u x {scale:.3g} = {units * U * scale:.3g}")
  return error / (U * scale) if scale else 0.0


def assert_close_elementwise(actual, expected, units, scale, what=""):
  """|actual - expected| <= units * u * scale entry by entry, where `scale` (broadcast) is the
  magnitude each entry is computed from (e.g. the sum of |terms| it adds up), not the entry."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  bound = units * U * np.broadcast_to(np.asarray(scale, np.float64), expected.shape)
  error = np.abs(actual - expected)
  worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
  assert np.all(error <= bound), (
      f"{what}: difference {error[worst]:.3g} at {worst} > bound {bound[worst]:.3g} "
      f"({units:.1f} u x {np.broadcast_to(scale, expected.shape)[worst]:.3g})")

"""The Commutative Lie Group VAE paper code's MIG and factor leakage on given arrays.

Both are deterministic given the sampled points. `mus` is (num_codes, num_points) and `factors`
(num_factors, num_points) holds ALL of the dataset's factors in disentanglement_lib's order; as
the paper code does (`fac = fac[1:]` in its MIG and factor leakage), the first factor is left out
(dSprites' shape, 3DShapes' floor hue). Codes are discretised into 20 equal-width bins, with the
same estimators as disentanglement_lib's MIG, which keeps every factor.
"""

import numpy as np

from lievae_tf.errors import UserError
from lievae_tf.evaluation.factor_leakage import leakage_scores

NUM_BINS = 20
DROPPED_FACTORS = 1  # the leading factors the paper code leaves out of MIG and factor leakage


def _mutual_information(mus, factors):
  """(codes x kept factors) mutual information and the kept factors."""
  from disentanglement_lib.evaluation.metrics import utils  # pylint: disable=g-import-not-at-top
  mus, factors = np.asarray(mus), np.asarray(factors)
  if mus.ndim != 2 or factors.ndim != 2 or mus.shape[1] != factors.shape[1]:
    raise UserError(f"mus {mus.shape} and factors {factors.shape} must be (num_codes, num_points) "
                    "and (num_factors, num_points) with the same num_points.")
  if factors.shape[0] <= DROPPED_FACTORS or mus.shape[0] < 2:
    raise UserError(f"need 2 or more codes and {DROPPED_FACTORS + 1} or more factors (the first "
                    f"is left out), got {mus.shape[0]} codes and {factors.shape[0]} factors.")
  kept = factors[DROPPED_FACTORS:]
  discretised = utils._histogram_discretize(mus, num_bins=NUM_BINS)  # pylint: disable=protected-access
  return utils.discrete_mutual_info(discretised, kept), kept


def mig(mus, factors):
  """{'discrete_mig'}: the mean over kept factors of the gap between the two codes that inform
  most about it, over the factor's entropy."""
  from disentanglement_lib.evaluation.metrics import utils  # pylint: disable=g-import-not-at-top
  m, kept = _mutual_information(mus, factors)
  top_two = np.sort(m, axis=0)[::-1][:2]
  return {"discrete_mig": float(np.mean((top_two[0] - top_two[1]) / utils.discrete_entropy(kept)))}


def factor_leakage(mus, factors):
  """{'factor_leakage_mean', 'factor_leakage_norm_mean', 'factor_leakage_auc',
  'factor_leakage_nm_auc'} over the kept factors (see `factor_leakage.leakage_scores`)."""
  return leakage_scores(_mutual_information(mus, factors)[0])

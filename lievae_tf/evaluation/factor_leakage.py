"""Factor leakage: the extra metric of the Commutative Lie Group VAE paper code, for dlib.

For the mutual information matrix `m` (codes x factors) between the histogram-discretised
representation and the ground-truth factors (dlib's MIG estimator), each factor's column is sorted
in decreasing order. A disentangled representation puts a factor's information into one code, so
what the other codes carry "leaks":
- `factor_leakage_mean`: the mean of every entry but each factor's largest (nats);
- `factor_leakage_norm_mean`: the same after dividing each column by its largest entry;
- `factor_leakage_auc`: the mean over k = 0..D-1 of the normalised mean of the entries from rank k
  on (an area under the curve of leakage beyond the k best codes);
- `factor_leakage_nm_auc`: the same over k = 1..D-1.
Lower is better. A factor that no code informs about (column maximum 0) has no normalised
leakage: the normalised scores are then NaN (the reference divides by zero there too).

Registered with gin as `factor_leakage` (an `evaluation.evaluation_fn`) when this module is
imported: by the `import` line of its config `metric_configs/factor_leakage.gin` (so the stock
`dlib_evaluate` accepts that config) and by `registry.import_own_metrics` in our commands.
"""

import gin
import numpy as np

from lievae_tf.evaluation import registry


def leakage_scores(mutual_information):
  """The four scores from a (codes, factors) mutual information matrix."""
  m = np.sort(np.asarray(mutual_information, np.float64), axis=0)[::-1]
  num_codes = m.shape[0]
  with np.errstate(invalid="ignore", divide="ignore"):
    normalised = np.abs(m / m.max(axis=0))
  tail_mean = lambda matrix, k: float(np.mean(matrix[k:])) if k < num_codes else 0.0
  return {
      "factor_leakage_mean": tail_mean(m, 1),
      "factor_leakage_norm_mean": tail_mean(normalised, 1),
      "factor_leakage_auc": float(np.mean([tail_mean(normalised, k) for k in range(num_codes)])),
      "factor_leakage_nm_auc": (float(np.mean([tail_mean(normalised, k)
                                               for k in range(1, num_codes)]))
                                if num_codes > 1 else 0.0),
  }


@gin.configurable("factor_leakage", denylist=registry.DLIB_ARGUMENTS)
def compute_factor_leakage(ground_truth_data, representation_function, random_state,
                           artifact_dir=None, num_train=gin.REQUIRED, batch_size=16):
  """dlib evaluation function: the factor leakage scores on `num_train` sampled points."""
  del artifact_dir
  from disentanglement_lib.evaluation.metrics import utils  # pylint: disable=g-import-not-at-top
  codes, factors = utils.generate_batch_factor_code(ground_truth_data, representation_function,
                                                    num_train, random_state, batch_size)
  discretised = utils.make_discretizer(codes)
  scores = leakage_scores(utils.discrete_mutual_info(discretised, factors))
  scores["num_active_dims"] = int(np.sum(np.var(codes, axis=1) > 0))
  return scores

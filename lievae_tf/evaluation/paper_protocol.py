"""The paper code's metrics that disentanglement_lib has no binding for, as dlib evaluation
functions (gin configurables with dlib's signature).

The paper's protocol (its `metrics/aggregator.py`), metric by metric, with the gin file of each in
`metric_configs/paper_*.gin`:
- FactorVAE metric, SAP, DCI, modularity/explicitness and the unsupervised scores are dlib's own
  functions with the paper's bindings (sizes; FactorVAE pruning below a standard deviation of
  0.1; SAP on continuous factors).
- MIG and factor leakage leave out the dataset's first factor (`paper_metrics`): `paper_mig`,
  `paper_factor_leakage`.
- The β-VAE metric fits an unregularised multinomial logistic regression on batches of 5 pairs,
  where dlib's fits an L2-regularised one: `paper_beta_vae`.
Every result is named `paper_<metric>` (`evaluation.name`), so that both protocols' results sit in
one aggregated JSON.
"""

import gin
import numpy as np

from lievae_tf.evaluation import paper_metrics
from lievae_tf.evaluation import registry


def _codes_and_factors(ground_truth_data, representation_function, random_state, num_train,
                       batch_size):
  from disentanglement_lib.evaluation.metrics import utils  # pylint: disable=g-import-not-at-top
  return utils.generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                          random_state, batch_size)


@gin.configurable("paper_mig", denylist=registry.DLIB_ARGUMENTS)
def compute_paper_mig(ground_truth_data, representation_function, random_state,
                      artifact_dir=None, num_train=gin.REQUIRED, batch_size=16):
  """MIG without the first factor, on `num_train` points."""
  del artifact_dir
  return paper_metrics.mig(*_codes_and_factors(ground_truth_data, representation_function,
                                               random_state, num_train, batch_size))


@gin.configurable("paper_factor_leakage", denylist=registry.DLIB_ARGUMENTS)
def compute_paper_factor_leakage(ground_truth_data, representation_function, random_state,
                                 artifact_dir=None, num_train=gin.REQUIRED, batch_size=16):
  """Factor leakage without the first factor, on `num_train` points."""
  del artifact_dir
  return paper_metrics.factor_leakage(*_codes_and_factors(
      ground_truth_data, representation_function, random_state, num_train, batch_size))


def unpenalised_logistic_regression(num_samples):
  """Multinomial logistic regression without a penalty, fitted by Newton-CG: the paper's
  `LogisticRegression(penalty='none', multi_class='multinomial', solver='newton-cg')`, spelt for
  scikit-learn releases that dropped those arguments (C=inf is no penalty; multinomial is the
  default for several classes). Those releases minimise the mean loss where the paper's summed
  it, so the default tolerance (1e-4) would stop them about `num_samples` times earlier: it is
  divided by `num_samples` to stop where the paper's fit did."""
  from sklearn import linear_model  # pylint: disable=g-import-not-at-top
  return linear_model.LogisticRegression(C=np.inf, solver="newton-cg", tol=1e-4 / num_samples)


@gin.configurable("paper_beta_vae", denylist=registry.DLIB_ARGUMENTS)
def compute_paper_beta_vae(ground_truth_data, representation_function, random_state,
                           artifact_dir=None, batch_size=gin.REQUIRED, num_train=gin.REQUIRED,
                           num_eval=gin.REQUIRED):
  """The β-VAE metric with the paper's classifier; dlib's sampling of the training points."""
  del artifact_dir
  from disentanglement_lib.evaluation.metrics import beta_vae  # pylint: disable=g-import-not-at-top
  points = beta_vae._generate_training_batch  # pylint: disable=protected-access
  train_points, train_labels = points(ground_truth_data, representation_function, batch_size,
                                      num_train, random_state)
  model = unpenalised_logistic_regression(num_train).fit(train_points, train_labels)
  eval_points, eval_labels = points(ground_truth_data, representation_function, batch_size,
                                    num_eval, random_state)
  return {"train_accuracy": float(np.mean(model.predict(train_points) == train_labels)),
          "eval_accuracy": float(np.mean(model.predict(eval_points) == eval_labels))}

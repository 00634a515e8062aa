"""Factor leakage as a dlib evaluation function: behaviour on known representations (as dlib's
own metric tests), and from the stock `dlib_evaluate` through `lievae_evaluate`."""

import json
import os
import shutil

import numpy as np

from conftest import command
from lievae_tf.evaluation import factor_leakage


def _scores(representation_function, num_train=2000):
  from disentanglement_lib.data.ground_truth import dummy_data  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.evaluation.metrics import utils  # pylint: disable=g-import-not-at-top,unused-import (registers the discretizer)
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.parse_config(["discretizer.discretizer_fn = @histogram_discretizer",
                    "discretizer.num_bins = 10"])
  try:
    return factor_leakage.compute_factor_leakage(
        dummy_data.IdentityObservationsData(), representation_function,
        np.random.RandomState(0), num_train=num_train)
  finally:
    gin.clear_config()


def test_identity_representation_leaks_little():
  scores = _scores(lambda x: np.array(x, dtype=np.float64))
  assert scores["factor_leakage_norm_mean"] < 0.05
  assert scores["factor_leakage_mean"] < 0.05
  assert scores["factor_leakage_auc"] < 0.15  # the k = 0 term alone is 1/D of the area


def test_entangled_representation_leaks_much():
  # Every code holds every factor: the second-best code knows as much as the best.
  mixed = lambda x: np.tile(np.sum(x * np.arange(1, 11), axis=1, keepdims=True), (1, 10))
  scores = _scores(mixed)
  assert scores["factor_leakage_norm_mean"] > 0.95
  identity = _scores(lambda x: np.array(x, dtype=np.float64))
  assert scores["factor_leakage_auc"] > 5 * identity["factor_leakage_auc"]


def test_constant_representation_has_no_normalised_score():
  scores = _scores(lambda x: np.zeros_like(x, dtype=np.float64))
  assert scores["factor_leakage_mean"] == 0.0 and scores["num_active_dims"] == 0
  assert np.isnan(scores["factor_leakage_norm_mean"])  # never a good score


def test_scores_of_a_hand_made_matrix():
  m = np.array([[1.0, 0.2], [0.5, 2.0], [0.0, 0.4]])  # 3 codes x 2 factors
  scores = factor_leakage.leakage_scores(m)
  np.testing.assert_allclose(scores["factor_leakage_mean"], np.mean([0.5, 0.0, 0.4, 0.2]))
  normalised = np.array([[1.0, 1.0], [0.5, 0.2], [0.0, 0.1]])
  np.testing.assert_allclose(scores["factor_leakage_norm_mean"], np.mean(normalised[1:]))
  auc = np.mean([np.mean(normalised[k:]) for k in range(3)])
  np.testing.assert_allclose(scores["factor_leakage_auc"], auc)
  np.testing.assert_allclose(scores["factor_leakage_nm_auc"],
                             np.mean([np.mean(normalised[k:]) for k in (1, 2)]))


def test_lievae_evaluate_runs_factor_leakage_in_the_stock_dlib_evaluate(trained_model_dir,
                                                                         tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(trained_model_dir, model_dir)
  result = command("lievae_evaluate", f"--model_dir={model_dir}", "--metrics=factor_leakage,mig",
                   "--stock_dlib_evaluate", "--metric_bindings=factor_leakage.num_train = 300",
                   "--metric_bindings=mig.num_train = 300")
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  log = open(os.path.join(model_dir, "evaluate_logs", "evaluate_factor_leakage.log")).read()
  assert "/dlib_evaluate " in log.splitlines()[0]  # the stock command did the work
  with open(os.path.join(model_dir, "metrics", "mean", "factor_leakage", "results", "aggregate",
                         "evaluation.json")) as f:
    results = json.load(f)
  assert 0.0 <= results["evaluation_results.factor_leakage_mean"] < 10.0
  assert results["evaluation_config.factor_leakage.num_train"] == "300"
  assert os.path.isfile(os.path.join(model_dir, "metrics", "mean", "mig", "results", "aggregate",
                                     "evaluation.json"))

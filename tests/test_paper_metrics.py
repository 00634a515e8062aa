"""The paper protocol pinned to the paper code's own outputs (tests/data/README.md says how they
were made), and run by the stock `dlib_evaluate`.

The sampled metrics are replayed: the paper code drew its factor rows from a stored queue, and here
dlib's functions, configured by our gin files, draw the same rows in the same order, with the same
seed for the random choices (the factor a FactorVAE or β-VAE sample keeps fixed, the trees).
"""

import json
import os

import gin
import numpy as np
import pytest
import sklearn

import paper_vectors as pv
from lievae_tf.errors import UserError
from lievae_tf.evaluation import paper_metrics
from lievae_tf.evaluation import paper_protocol

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(paper_protocol.__file__)), "metric_configs")
with open(os.path.join(DATA, "paper_outputs.json")) as _f:
  PAPER = json.load(_f)
ARRAYS = dict(np.load(os.path.join(DATA, "paper_arrays.npz")))
REPLAY = dict(np.load(os.path.join(DATA, "paper_replay.npz")))
EXACT = dict(rtol=1e-9, atol=1e-12)
# Where a scikit-learn fit decides, the result is scikit-learn's, fixed by its version (the fits
# are float64 and deterministic for a seed): with the paper code's version (recorded in
# paper_outputs.json) DCI and explicitness equal the paper code's bit for bit, so they are EXACT.
# Other versions grow DCI's boosted trees differently and stop L-BFGS elsewhere; there the
# comparison can only bound the change. Informativeness is an accuracy over num_test x factors =
# 300 x 6 predictions, so 2e-3 is 3.6 of 1,800 predictions changing, and 2 % of the ~0.1
# disentanglement and completeness (scikit-learn 1.9.1 against 1.3.2: one prediction, 3e-4).
PAPERS_SKLEARN = sklearn.__version__ == PAPER["environment"]["sklearn"]
TREES = EXACT if PAPERS_SKLEARN else dict(rtol=0, atol=2e-3)
LBFGS = EXACT if PAPERS_SKLEARN else dict(rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", [c[0] for c in pv.ARRAY_CASES])
def test_mig_and_factor_leakage_match_the_paper_code(case):
  mus = ARRAYS[f"{case}.mus"].astype(np.float64)
  factors = ARRAYS[f"{case}.factors"].astype(np.int64)  # every factor: the function drops
  ours = {**paper_metrics.mig(mus, factors), **paper_metrics.factor_leakage(mus, factors)}
  assert set(ours) == set(PAPER["arrays"][case])
  for key, value in PAPER["arrays"][case].items():
    np.testing.assert_allclose(ours[key], value, err_msg=key, **EXACT)


def test_the_first_factor_is_left_out():
  # Only shape is encoded: dlib's MIG (every factor) sees it, the paper's does not.
  from disentanglement_lib.evaluation.metrics import utils  # pylint: disable=g-import-not-at-top
  mus = ARRAYS["dsprites_first_factor_only.mus"].astype(np.float64)
  factors = ARRAYS["dsprites_first_factor_only.factors"].astype(np.int64)
  shape_information = utils.discrete_mutual_info(
      utils._histogram_discretize(mus, num_bins=20), factors)[0, 0]  # pylint: disable=protected-access
  assert shape_information > 0.9 * utils.discrete_entropy(factors[:1])[0]
  assert paper_metrics.mig(mus, factors)["discrete_mig"] < 0.01


def test_bad_shapes_are_a_clear_error():
  from lievae_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="same num_points"):
    paper_metrics.mig(np.zeros((10, 5)), np.zeros((5, 6)))
  with pytest.raises(UserError, match="first is left out"):
    paper_metrics.factor_leakage(np.zeros((10, 5)), np.zeros((1, 5)))


def test_pruning_threshold_is_the_papers():
  from disentanglement_lib.evaluation.metrics import factor_vae  # pylint: disable=g-import-not-at-top
  _parse("paper_factor_vae")
  variances = np.array(PAPER["prune_dims"]["variances"])
  assert factor_vae._prune_dims(variances).tolist() == PAPER["prune_dims"]["active"]  # pylint: disable=protected-access


class _Replay:
  """dlib's GroundTruthData interface over the stored factor rows: each draw takes the next rows;
  an observation is its factor vector."""

  def __init__(self, rows):
    self.rows, self.position = rows.astype(np.int64), 0
    self.num_factors = rows.shape[1]

  def sample_factors(self, num, random_state):
    del random_state
    self.position += num
    return self.rows[self.position - num:self.position].copy()

  def sample_observations_from_factors(self, factors, random_state):
    del random_state
    return factors.astype(np.float64)

  def sample(self, num, random_state):
    factors = self.sample_factors(num, random_state)
    return factors, self.sample_observations_from_factors(factors, random_state)

  def sample_observations(self, num, random_state):
    return self.sample(num, random_state)[1]


def _parse(config, bindings=()):
  from disentanglement_lib.evaluation import evaluate  # pylint: disable=g-import-not-at-top,unused-import (registers dlib's configurables)
  gin.clear_config()
  gin.parse_config_files_and_bindings([os.path.join(CONFIGS, config + ".gin")], list(bindings))


# metric: (our gin file, the configurable the replay sizes are bound to, paper key -> our key,
# tolerance)
REPLAYED = {
    "factor_vae": ("paper_factor_vae", "factor_vae_score",
                   {"fac_train": "train_accuracy", "fac_eval": "eval_accuracy"}, EXACT),
    "beta_vae": ("paper_beta_vae", "paper_beta_vae",
                 {"hig_acc": "train_accuracy", "val_hig_acc": "eval_accuracy"}, EXACT),
    "sap": ("paper_sap", "sap_score", {"SAP_score": "SAP_score"}, EXACT),
    "dci": ("paper_dci", "dci",
            {"dci_disentanglement": "disentanglement", "dci_completeness": "completeness",
             "dci_informativeness_train": "informativeness_train",
             "dci_informativeness_test": "informativeness_test"}, TREES),
    "modularity": ("paper_modularity", "modularity_explicitness",
                   {"modularity_score": "modularity_score"}, EXACT),
    "explicitness": ("paper_modularity", "modularity_explicitness",
                     {"explicitness_score_train": "explicitness_score_train",
                      "explicitness_score_test": "explicitness_score_test"}, LBFGS),
    "unsupervised": ("paper_unsupervised", "unsupervised_metrics",
                     {k: k for k in ("gaussian_total_correlation",
                                     "gaussian_wasserstein_correlation",
                                     "gaussian_wasserstein_correlation_norm",
                                     "mutual_info_score")}, EXACT),
}


# DCI fits one boosted ensemble per factor class: on dSprites' 40 orientations that takes half a
# minute, so its end-to-end check runs on 3DShapes only (its importance matrix is pinned for both).
REPLAYED_PAIRS = [(metric, case[0]) for metric in sorted(REPLAYED) for case in pv.REPLAY_CASES
                  if not (metric == "dci" and case[0].startswith("dsprites"))]


@pytest.mark.parametrize("metric,case", REPLAYED_PAIRS)
def test_sampled_metrics_match_the_paper_code_on_the_same_samples(metric, case):
  config, configurable, keys, tolerance = REPLAYED[metric]
  sizes = pv.REPLAY_SIZES["modularity" if metric == "explicitness" else metric]
  _parse(config, [f"{configurable}.{k} = {v}" for k, v in sizes.items()])
  evaluation_fn = gin.query_parameter("evaluation.evaluation_fn").scoped_configurable_fn
  params = {k: REPLAY[f"{case}.{k}"] for k in ("sizes", "weights", "noise_scale", "salt")}
  representation = lambda x: pv.representation(np.rint(x).astype(np.int64), params)
  np.random.seed(pv.REPLAY_SEED)  # scikit-learn's trees draw from numpy's global state, as there
  ours = evaluation_fn(_Replay(REPLAY[f"{case}.rows"]), representation,
                       np.random.RandomState(pv.REPLAY_SEED))
  gin.clear_config()
  for paper_key, our_key in keys.items():
    paper = PAPER["replay"][case]["modularity" if metric == "explicitness" else metric]
    np.testing.assert_allclose(ours[our_key], paper[paper_key],
                               err_msg=our_key, **tolerance)


@pytest.mark.parametrize("case", [c[0] for c in pv.REPLAY_CASES])
def test_dci_scores_from_the_papers_importance_matrix(case):
  from disentanglement_lib.evaluation.metrics import dci  # pylint: disable=g-import-not-at-top
  importance = REPLAY[f"{case}.dci_importance"]
  expected = PAPER["replay"][case]["dci_from_importance"]
  np.testing.assert_allclose(dci.disentanglement(importance), expected["disentanglement"], **EXACT)
  np.testing.assert_allclose(dci.completeness(importance), expected["completeness"], **EXACT)


def test_gin_files_carry_the_papers_sizes():
  protocol = PAPER["protocol"]
  expected = {
      "paper_factor_vae": {"factor_vae_score.num_train": protocol["factor_vae"]["num_train"],
                           "factor_vae_score.num_eval": protocol["factor_vae"]["num_eval"],
                           "factor_vae_score.batch_size": protocol["factor_vae"]["batch_size"],
                           "factor_vae_score.num_variance_estimate":
                               protocol["factor_vae"]["num_variance_estimate"],
                           "prune_dims.threshold": protocol["factor_vae"]["prune_threshold"]},
      "paper_beta_vae": {"paper_beta_vae.num_train": protocol["beta_vae"]["num_points"],
                         "paper_beta_vae.num_eval": protocol["beta_vae"]["num_points"],
                         "paper_beta_vae.batch_size": protocol["beta_vae"]["batch_size"]},
      "paper_mig": {"paper_mig.num_train": protocol["mig"]["num_points"]},
      "paper_factor_leakage": {"paper_factor_leakage.num_train":
                                   protocol["factor_leakage"]["num_points"]},
      "paper_sap": {"sap_score.num_train": protocol["sap"]["num_points"],
                    "sap_score.num_test": protocol["sap"]["num_points"],
                    "sap_score.continuous_factors": True},
      "paper_dci": {"dci.num_train": protocol["dci"]["num_points"],
                    "dci.num_test": protocol["dci"]["num_points"]},
      "paper_modularity": {"modularity_explicitness.num_train":
                               protocol["modularity"]["num_points"],
                           "modularity_explicitness.num_test":
                               protocol["modularity"]["num_points"]},
      "paper_unsupervised": {"unsupervised_metrics.num_train":
                                 protocol["unsupervised"]["num_points"]},
  }
  for config, bindings in expected.items():
    _parse(config)
    assert gin.query_parameter("evaluation.name") == config
    for name, value in bindings.items():
      assert gin.query_parameter(name) == value, (config, name)
  gin.clear_config()


def test_protocols_choose_their_metrics():
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import studies  # pylint: disable=g-import-not-at-top
  names = lambda chosen: [b.metric.name for b in chosen]
  study = studies.get_study("paper_dsprites")
  dlib = names(studies.choose_metrics(study))
  paper = names(studies.choose_metrics(study, protocol="paper"))
  assert dlib == list(studies.PAPER_TABLE_METRICS)
  assert paper == registry.names("paper") and all(m.startswith("paper_") for m in paper)
  assert names(studies.choose_metrics(study, protocol="both")) == dlib + paper
  small = {b.metric.name: b.bindings
           for b in studies.choose_metrics(studies.get_study("comparison_synthetic"),
                                           protocol="paper")}
  assert small["paper_factor_vae"] == registry.get("paper_factor_vae").small_bindings
  chosen = lambda protocol: names(studies.choose_metrics(study, ["mig", "paper_sap"], protocol))
  assert chosen("dlib") == ["mig", "paper_sap"]
  assert chosen("paper") == ["paper_mig", "paper_sap"]
  assert chosen("both") == ["mig", "paper_mig", "paper_sap"]
  assert names(studies.choose_metrics(study, ["unsupervised"], "both")) == [
      "unsupervised", "paper_unsupervised"]
  # A metric without a paper version: itself under 'both', a one-line error under 'paper'.
  assert names(studies.choose_metrics(study, ["downstream_boosted_trees"], "both")) == [
      "downstream_boosted_trees"]
  with pytest.raises(UserError, match="downstream_boosted_trees has no paper-protocol version"):
    studies.choose_metrics(study, ["downstream_boosted_trees"], "paper")


def test_the_paper_version_is_found_by_the_registry_not_by_its_name():
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import studies  # pylint: disable=g-import-not-at-top
  # A paper-protocol metric named without `paper_`, the paper version of a dlib one.
  toy = registry.register(registry.Metric(
      "toy_leakage_of_the_paper", "factor_leakage_mean", ("paper_factor_leakage",),
      own_config="paper_factor_leakage.gin", protocol="paper",
      paper_version_of="downstream_logistic_regression"))
  try:
    study = studies.get_study("paper_dsprites")
    chosen = lambda metrics, protocol: [b.metric for b in studies.choose_metrics(study, metrics,
                                                                                 protocol)]
    dlib = registry.get("downstream_logistic_regression")
    assert chosen(["downstream_logistic_regression"], "paper") == [toy]
    assert chosen(["downstream_logistic_regression"], "both") == [dlib, toy]
    assert chosen([toy.name], "paper") == chosen([toy.name], "dlib") == [toy]
    assert toy in chosen(None, "paper")
  finally:
    registry._METRICS.pop(toy.name)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="paper version"):
    registry.register(registry.Metric("toy", "x", ("x",), own_config="x.gin",
                                      paper_version_of="mig"))  # a dlib-protocol one


TINY_METRICS = ["mig.num_train = 200", "paper_mig.num_train = 200"]


@pytest.mark.commands
def test_both_protocols_land_in_one_aggregated_json(trained_model_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from conftest import command  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "model")
  shutil.copytree(trained_model_dir, model_dir)
  # MIG of both protocols (each dlib_evaluate starts TensorFlow: ~10 s), among the whole
  # selection of each protocol as tested above.
  result = command("lievae_evaluate", f"--model_dir={model_dir}", "--protocol=both",
                   "--metrics=mig", "--stock_dlib_evaluate",  # each metric by its own dlib_evaluate
                   *[f"--metric_bindings={b}" for b in TINY_METRICS])
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  log = open(os.path.join(model_dir, "evaluate_logs", "evaluate_paper_mig.log")).read()
  assert "/dlib_evaluate " in log.splitlines()[0]  # the stock command did the work
  with open(os.path.join(model_dir, "metrics", "results.json")) as f:
    aggregated = json.load(f)
  names = {v.strip("'") for v in aggregated["evaluation_config.evaluation.name"].values()}
  assert names == {"mig", "paper_mig"}
  rows = {aggregated["evaluation_config.evaluation.name"][i].strip("'"): i
          for i in aggregated["evaluation_config.evaluation.name"]}
  scores = aggregated["evaluation_results.discrete_mig"]
  assert 0.0 <= scores[rows["paper_mig"]] <= 1.0 and 0.0 <= scores[rows["mig"]] <= 1.0
  assert aggregated["evaluation_config.paper_mig.num_train"][rows["paper_mig"]] == "200"


def test_collect_puts_the_published_numbers_beside_the_paper_protocols():
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import collect  # pylint: disable=g-import-not-at-top
  frame = pd.DataFrame({  # as dlib_aggregate_results writes it: gin values as strings
      "evaluation_config.evaluation.name": ["'paper_mig'", "'mig'", "'paper_mig'", "'paper_mig'"],
      "train_config.model.model": ["@LieGroupVAE"] * 3 + ["@BetaVAE"],
      "train_config.dataset.name": ["'dsprites_full'"] * 4,
      "train_config.model.random_seed": ["0", "0", "1", "0"],
      "evaluation_results.discrete_mig": [0.2, 0.1, 0.3, 0.05]})
  summary = collect.summarise(collect.long_table(frame, ["model.model"]), ["model.model"])
  columns = list(summary.columns)
  at = columns.index("paper_mig.discrete_mig.std")
  assert columns[at + 1:at + 3] == ["paper_mig.discrete_mig.published_mean",
                                    "paper_mig.discrete_mig.published_std"]
  assert "mig.discrete_mig.published_mean" not in columns  # dlib's protocol: not comparable
  clg = summary[summary["model.model"] == "@LieGroupVAE"].iloc[0]
  assert clg["paper_mig.discrete_mig.published_mean"] == 0.254
  assert clg["paper_mig.discrete_mig.published_std"] == 0.061
  beta = summary[summary["model.model"] == "@BetaVAE"].iloc[0]
  assert np.isnan(beta["paper_mig.discrete_mig.published_mean"])  # the paper's are CLG-VAE's

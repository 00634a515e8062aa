"""Writes the paper-code metric vectors (paper_arrays.npz, paper_replay.npz, paper_outputs.json).

Runs the metric functions of the Commutative Lie Group VAE paper code, unmodified, from a
checkout given by --paper_code, on the SYNTHETIC inputs of tests/paper_vectors.py, and stores
inputs and outputs. No code of the paper is copied here: it is imported from that path.

  python tests/data/make_paper_vectors.py --paper_code=/path/to/CommutativeLieGroupVAE-Pytorch \
      --output_dir=tests/data

Needs torch, numpy, scipy, six, absl-py and a scikit-learn that still accepts the paper's
`LogisticRegression(penalty='none', multi_class='multinomial')` (1.3.x); see README.md.
"""

import argparse
import importlib
import inspect
import json
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import paper_vectors as pv  # pylint: disable=g-import-not-at-top,wrong-import-position


def load_paper_metrics(paper_code):
  """The paper's metric modules. Its metrics/__init__.py also imports measure_independence,
  which pulls in the paper's training stack (torchvision, datasets); the metric modules need
  only torch, numpy, scipy and sklearn, so the package is entered without running __init__."""
  sys.path.insert(0, paper_code)
  package = types.ModuleType("metrics")
  package.__path__ = [os.path.join(paper_code, "metrics")]
  sys.modules["metrics"] = package
  names = ("utils", "mig", "factor_leakage", "factor", "beta", "sap", "dci",
           "modularity_explicitness", "unsupervised", "downstream")
  modules = {name: importlib.import_module(f"metrics.{name}") for name in names}
  # What the package's __init__ exports to aggregator.py's `from metrics import *`.
  exported = {"BetaVAEMetric": modules["beta"], "FactorVAEMetric": modules["factor"],
              "MigMetric": modules["mig"], "DciMetric": modules["dci"],
              "Modularity": modules["modularity_explicitness"], "SapMetric": modules["sap"],
              "UnsupervisedMetrics": modules["unsupervised"], "FLMetric": modules["factor_leakage"],
              "Downstream": modules["downstream"]}
  for name, module in exported.items():
    setattr(package, name, getattr(module, name))
  package.__all__ = list(exported)
  modules["aggregator"] = importlib.import_module("metrics.aggregator")
  return modules


def run_on_cpu():
  """The paper code moves every batch to 'cuda'; here everything stays on the CPU."""
  original_to = torch.Tensor.to
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  torch.Tensor.to = lambda self, *args, **kwargs: (
      self if args and args[0] == "cuda" else original_to(self, *args, **kwargs))


class ReplayData:
  """The paper's dataset interface over a queue of factor rows: `sample_latent` returns the next
  row; an 'image' is the factor vector itself."""

  def __init__(self, sizes, rows):
    self.latents_sizes = np.asarray(sizes)
    self.rows = np.asarray(rows, np.int64)
    self.position = 0

  def sample_latent(self):
    row = self.rows[self.position].copy()
    self.position += 1
    return row

  def get_img_by_latent(self, latent):
    return torch.from_numpy(np.asarray(latent, np.float64)), latent


class ReplayModel:
  """The paper's model interface: `encode` returns [mean, log-variance] of the representation of
  tests/paper_vectors.py, and `unwrap` splits them as the paper's VAE does."""

  def __init__(self, params):
    self.params = params

  def encode(self, images):
    factors = np.rint(images.numpy()).astype(np.int64)
    codes = pv.representation(factors, self.params)
    return torch.from_numpy(np.concatenate([codes, np.zeros_like(codes)], axis=1))

  def unwrap(self, x):
    return torch.split(x, x.shape[1] // 2, dim=1)


def strip(scores):
  """The paper's score names without its 'dmetric/' logging prefix, as plain floats."""
  return {k.split("/", 1)[1]: (None if v is None else float(v)) for k, v in scores.items()}


def beta_order(rows, sizes):
  """dlib's β-VAE sample draws a block of batch_size rows, then a second block, and copies the
  fixed factor from the first into the second; the paper draws (latent_1, latent_2) pairs and
  copies latent_2's value into latent_1. Serving the paper [b2_0, b1_0, b2_1, b1_1, ...] makes
  both see the same pairs."""
  batch = sizes["batch_size"]
  num_points = sizes["num_train"] + sizes["num_eval"]
  served = []
  for point in range(num_points):
    first = rows[2 * batch * point: 2 * batch * point + batch]
    second = rows[2 * batch * point + batch: 2 * batch * (point + 1)]
    for i in range(batch):
      served += [second[i], first[i]]
  return np.asarray(served)


def protocol_settings(m):
  """The sizes and settings the paper's MetricAggregator gives each metric."""
  aggregator = m["aggregator"].MetricAggregator(
      None, ReplayData(pv.DSPRITES_SIZES, np.zeros((1, 5))), 1000, None, False, 10,
      fixed_shape=None)
  by_type = {type(metric).__name__: metric for metric in aggregator.metrics}
  fac = by_type["FactorVAEMetric"]
  threshold = inspect.signature(m["factor"].FactorVAEMetric._prune_dims).parameters["threshold"]
  return {
      "factor_vae": {"num_train": fac.num_train, "num_eval": fac.num_eval,
                     "batch_size": fac.bs, "num_variance_estimate": fac.n_var_est,
                     "prune_threshold": threshold.default},
      "beta_vae": {"num_points": by_type["BetaVAEMetric"].num_points,
                   "batch_size": by_type["BetaVAEMetric"].bs},
      "mig": {"num_points": by_type["MigMetric"].num_points},
      "factor_leakage": {"num_points": by_type["FLMetric"].num_points},
      "dci": {"num_points": by_type["DciMetric"].num_points},
      "modularity": {"num_points": by_type["Modularity"].num_points},
      "sap": {"num_points": by_type["SapMetric"].num_points},
      "unsupervised": {"num_points": by_type["UnsupervisedMetrics"].num_points},
      "downstream": {"num_points": by_type["Downstream"].num_points,
                     "max_depth": by_type["Downstream"].max_depth},
  }


def array_cases(m):
  arrays, outputs = {}, {}
  for name, sizes, kind, seed in pv.ARRAY_CASES:
    params = pv.make_params(sizes, kind, seed)
    factors = pv.sample_factors(sizes, pv.ARRAY_POINTS, seed)
    model = ReplayModel(params)
    data = ReplayData(sizes, factors)
    scores = strip(m["mig"].MigMetric(data, num_points=pv.ARRAY_POINTS)(model))
    assert data.position == pv.ARRAY_POINTS
    data = ReplayData(sizes, factors)
    scores.update(strip(m["factor_leakage"].FLMetric(data, num_points=pv.ARRAY_POINTS)(model)))
    arrays[f"{name}.factors"] = factors.T  # (num_factors, num_points), all factors
    arrays[f"{name}.mus"] = pv.representation(factors, params).T.astype(np.float16)
    outputs[name] = scores
  return arrays, outputs


def replay_cases(m):
  arrays, outputs = {}, {}
  sizes_of = pv.REPLAY_SIZES
  for name, sizes, kind, seed in pv.REPLAY_CASES:
    params = pv.make_params(sizes, kind, seed)
    rows = pv.sample_factors(sizes, pv.replay_rows_needed(), seed)
    for key, value in params.items():
      arrays[f"{name}.{key}"] = value
    arrays[f"{name}.rows"] = rows
    model = ReplayModel(params)
    scores = {}

    def run(metric):
      np.random.seed(pv.REPLAY_SEED)
      return strip(metric(model))

    s = sizes_of["factor_vae"]
    scores["factor_vae"] = run(m["factor"].FactorVAEMetric(
        ReplayData(sizes, rows), num_train=s["num_train"], num_eval=s["num_eval"],
        bs=s["batch_size"], paired=False, fixed_shape=None,
        n_var_est=s["num_variance_estimate"]))
    s = sizes_of["beta_vae"]
    assert s["num_train"] == s["num_eval"]  # the paper uses one size for both
    scores["beta_vae"] = run(m["beta"].BetaVAEMetric(
        ReplayData(sizes, beta_order(rows, s)), num_points=s["num_train"], bs=s["batch_size"],
        paired=False, fixed_shape=None))
    scores["sap"] = run(m["sap"].SapMetric(ReplayData(sizes, rows),
                                           num_points=sizes_of["sap"]["num_train"]))
    scores["dci"] = run(m["dci"].DciMetric(ReplayData(sizes, rows),
                                           num_points=sizes_of["dci"]["num_train"]))
    assert scores["dci"], "the paper's DCI swallowed an error"
    scores["modularity"] = run(m["modularity_explicitness"].Modularity(
        ReplayData(sizes, rows), num_points=sizes_of["modularity"]["num_train"]))
    scores["unsupervised"] = run(m["unsupervised"].UnsupervisedMetrics(
        ReplayData(sizes, rows), num_points=sizes_of["unsupervised"]["num_train"]))

    # DCI's importance matrix, from the paper's own function on the same points and seed:
    # disentanglement and completeness are deterministic given it.
    n = sizes_of["dci"]["num_train"]
    codes = pv.representation(rows[:2 * n], params)
    np.random.seed(pv.REPLAY_SEED)
    importance, train_acc, test_acc = m["dci"].compute_importance_gbt(
        codes[:n].T, rows[:n].T.astype(np.int64), codes[n:].T, rows[n:2 * n].T.astype(np.int64))
    assert np.isclose(train_acc, scores["dci"]["dci_informativeness_train"])
    arrays[f"{name}.dci_importance"] = importance
    scores["dci_from_importance"] = {
        "disentanglement": float(m["dci"].disentanglement(importance)),
        "completeness": float(m["dci"].completeness(importance))}
    outputs[name] = scores
  return arrays, outputs


def pruning(m):
  """The FactorVAE metric's pruning at the paper's default threshold."""
  variances = np.array([0.0, 0.0024, 0.0025, 0.005, 0.0099, 0.01, 0.0101, 0.5, 2.0])
  metric = m["factor"].FactorVAEMetric(ReplayData(pv.DSPRITES_SIZES, np.zeros((1, 5))))
  return {"variances": variances.tolist(),
          "active": [bool(a) for a in metric._prune_dims(variances)]}  # pylint: disable=protected-access


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--paper_code", required=True)
  parser.add_argument("--output_dir", required=True)
  args = parser.parse_args()
  run_on_cpu()
  m = load_paper_metrics(os.path.abspath(args.paper_code))
  import scipy  # pylint: disable=g-import-not-at-top
  import sklearn  # pylint: disable=g-import-not-at-top
  outputs = {"environment": {"numpy": np.__version__, "scipy": scipy.__version__,
                             "sklearn": sklearn.__version__, "torch": torch.__version__},
             "protocol": protocol_settings(m), "prune_dims": pruning(m)}
  arrays, outputs["arrays"] = array_cases(m)
  np.savez_compressed(os.path.join(args.output_dir, "paper_arrays.npz"), **arrays)
  arrays, outputs["replay"] = replay_cases(m)
  np.savez_compressed(os.path.join(args.output_dir, "paper_replay.npz"), **arrays)
  with open(os.path.join(args.output_dir, "paper_outputs.json"), "w") as f:
    json.dump(outputs, f, indent=1, sort_keys=True)
    f.write("\n")


if __name__ == "__main__":
  main()

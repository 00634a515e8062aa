"""Every metric the project scores with, once: name, gin config, score key, bindings.

The sweep, the quickstart and `lievae_evaluate` read this table: a metric named on a command line
or in a study is looked up here once (`lookup`), and its `Metric` travels from there to the
metric suite. A new metric is one module (a
dlib evaluation function registered with `@gin.configurable`), one gin file in `metric_configs/`
that imports that module (so that the stock `dlib_evaluate` registers it too) and one
`register(Metric(...))` below (see docs/extending.md).

Importing this module imports neither TensorFlow nor disentanglement_lib.
"""

import dataclasses
import importlib.resources
import os

from lievae_tf.errors import UserError

# Package data (an installed package is a directory on disk, where dlib_evaluate reads them).
OWN_CONFIG_DIR = os.fspath(importlib.resources.files(__package__) / "metric_configs")
# A metric's protocol: disentanglement_lib's study configs, or the paper code's sizes and
# definitions (a study's choice of protocols is `studies.PROTOCOL_CHOICES`).
PROTOCOLS = ("dlib", "paper")
# What dlib's `evaluate` passes every evaluation function itself: its gin configurable denies
# them to bindings.
DLIB_ARGUMENTS = ("ground_truth_data", "representation_function", "random_state", "artifact_dir")


def dlib_config_dir():
  """disentanglement_lib's `unsupervised_study_v1` configs (postprocessing and metrics)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  package = os.path.dirname(importlib.util.find_spec("disentanglement_lib").origin)
  return os.path.join(package, "config", "unsupervised_study_v1")


@dataclasses.dataclass(frozen=True)
class Metric:
  """One metric as `dlib_evaluate` runs it.

  Attributes:
    name: `evaluation.name` of its results, and its directory under `metrics/mean/`.
    gin_config: its gin file: a name in dlib's `unsupervised_study_v1/metric_configs/`
      (`dlib_config`) or a file of ours in `metric_configs/` (`own_config`).
    score_key: the key of its headline score in dlib's results.
    binding_prefixes: the configurables it reads; a binding of any other configurable is not
      passed to its `dlib_evaluate` (gin would refuse a configurable the process lacks).
    small_bindings: sizes a 2-core CPU evaluates in seconds (trying things out, not reporting).
    protocol: 'dlib' (disentanglement_lib's study configs) or 'paper' (the paper code's).
    paper_version_of: a paper-protocol metric's dlib-protocol counterpart (its name): what
      `--protocol=paper` scores instead of that one (`paper_version`).
    module: the module that registers its evaluation function with gin, if it is ours.
    cost: roughly its seconds at its config's sizes on a 2-core CPU, dataset loading excluded
      (bench/RESULTS.md); `lievae_evaluate --metric_processes=N` starts the costliest first.
  """
  name: str
  score_key: str
  binding_prefixes: tuple
  dlib_config: str = None
  own_config: str = None
  small_bindings: tuple = ()
  protocol: str = "dlib"
  paper_version_of: str = None
  module: str = None
  cost: float = 10

  @property
  def gin_config(self):
    if self.own_config:
      return os.path.join(OWN_CONFIG_DIR, self.own_config)
    return os.path.join(dlib_config_dir(), "metric_configs", self.dlib_config)


@dataclasses.dataclass(frozen=True)
class BoundMetric:
  """A metric and the gin bindings it is scored with (its sizes in a study)."""
  metric: Metric
  bindings: tuple = ()


_METRICS = {}


def register(metric):
  if metric.name in _METRICS:
    raise ValueError(f"metric {metric.name!r} is registered twice")
  if metric.protocol not in PROTOCOLS or not (metric.dlib_config or metric.own_config):
    raise ValueError(f"metric {metric.name!r}: needs a protocol in {PROTOCOLS} and a gin config")
  if metric.paper_version_of is not None and (
      metric.protocol != "paper" or
      getattr(_METRICS.get(metric.paper_version_of), "protocol", None) != "dlib"):
    raise ValueError(f"metric {metric.name!r}: only a paper-protocol metric is the paper version "
                     "of a registered dlib-protocol metric")
  _METRICS[metric.name] = metric
  return metric


def get(name):
  """The metric called `name` (e.g. a result's `evaluation.name`)."""
  if name not in _METRICS:
    raise UserError(f"unknown metric {name!r}; choose from {', '.join(names())}.")
  return _METRICS[name]


def lookup(requested, flag="--metrics"):
  """The metrics named `requested`, in order; a UserError names every unknown one."""
  unknown = [m for m in requested if m not in _METRICS]
  if unknown:
    raise UserError(f"{flag}: unknown {unknown}; choose from {', '.join(names())}.")
  return [_METRICS[m] for m in requested]


def metrics(protocol=None):
  """The registered metrics (of `protocol`), in the order registered."""
  return [m for m in _METRICS.values() if protocol in (None, m.protocol)]


def names(protocol=None):
  return [m.name for m in metrics(protocol)]


def paper_version(metric):
  """The paper protocol's version of the dlib-protocol `metric`, or None."""
  found = [m for m in _METRICS.values() if m.paper_version_of == metric.name]
  return found[0] if found else None


def bindings_for(metric, bindings):
  """The bindings of `bindings` that configure `metric` (and `evaluation.*`)."""
  prefixes = tuple(p + "." for p in metric.binding_prefixes) + ("evaluation.",)
  return [b for b in bindings if b.strip().startswith(prefixes)]


def import_own_metrics():
  """Imports the modules of our own metrics, registering them with gin in this process (their gin
  files import them too, for `dlib_evaluate`)."""
  import importlib  # pylint: disable=g-import-not-at-top
  for module in sorted({m.module for m in _METRICS.values() if m.module}):
    importlib.import_module(module)


# disentanglement_lib's study metrics, with their configs as dlib ships them.
register(Metric("factor_vae", "eval_accuracy", ("factor_vae_score", "prune_dims"),
                dlib_config="factor_vae_metric.gin",
                small_bindings=("factor_vae_score.num_variance_estimate = 5000",
                                "factor_vae_score.num_train = 1000",
                                "factor_vae_score.num_eval = 500"),
                cost=123))
register(Metric("beta_vae", "eval_accuracy", ("beta_vae_sklearn",),
                dlib_config="beta_vae_sklearn.gin",
                small_bindings=("beta_vae_sklearn.num_train = 1000",
                                "beta_vae_sklearn.num_eval = 500"),
                cost=245))
register(Metric("mig", "discrete_mig", ("mig", "discretizer"), dlib_config="mig.gin",
                small_bindings=("mig.num_train = 5000",)))
register(Metric("sap", "SAP_score", ("sap_score",), dlib_config="sap_score.gin",
                small_bindings=("sap_score.num_train = 2000", "sap_score.num_test = 1000")))
register(Metric("dci", "disentanglement", ("dci",), dlib_config="dci.gin",
                small_bindings=("dci.num_train = 1000", "dci.num_test = 500"),
                cost=300))
register(Metric("modularity", "modularity_score", ("modularity_explicitness", "discretizer"),
                dlib_config="modularity_explicitness.gin",
                small_bindings=("modularity_explicitness.num_train = 2000",
                                "modularity_explicitness.num_test = 1000")))
# The rest of dlib's `unsupervised_study_v1` suite (in no study; `lievae_evaluate --metrics=all`).
register(Metric("downstream_boosted_trees", "10000:mean_test_accuracy",
                ("downstream_task", "predictor"), dlib_config="downstream_task_boosted_trees.gin",
                small_bindings=("downstream_task.num_train = [10, 100]",
                                "downstream_task.num_test = 500"),
                cost=337))
register(Metric("downstream_logistic_regression", "10000:mean_test_accuracy",
                ("downstream_task", "predictor"),
                dlib_config="downstream_task_logistic_regression.gin",
                small_bindings=("downstream_task.num_train = [10, 100]",
                                "downstream_task.num_test = 500"),
                cost=113))
register(Metric("unsupervised", "gaussian_total_correlation",
                ("unsupervised_metrics", "discretizer"), dlib_config="unsupervised.gin",
                small_bindings=("unsupervised_metrics.num_train = 2000",)))
# The paper code's extra metric (lievae_tf/evaluation/factor_leakage.py) at dlib's MIG sizes.
register(Metric("factor_leakage", "factor_leakage_mean", ("factor_leakage", "discretizer"),
                own_config="factor_leakage.gin", module="lievae_tf.evaluation.factor_leakage",
                small_bindings=("factor_leakage.num_train = 5000",)))

# The paper code's protocol (lievae_tf/evaluation/paper_protocol.py): its sizes and definitions,
# results named paper_<metric> so that both protocols sit in one aggregated JSON.
_PAPER_MODULE = "lievae_tf.evaluation.paper_protocol"
register(Metric("paper_factor_vae", "eval_accuracy", ("factor_vae_score", "prune_dims"),
                own_config="paper_factor_vae.gin", protocol="paper", paper_version_of="factor_vae",
                small_bindings=("factor_vae_score.num_variance_estimate = 5000",
                                "factor_vae_score.num_train = 1000",
                                "factor_vae_score.num_eval = 500"),
                cost=123))
register(Metric("paper_beta_vae", "eval_accuracy", ("paper_beta_vae",),
                own_config="paper_beta_vae.gin", protocol="paper", paper_version_of="beta_vae",
                module=_PAPER_MODULE))
register(Metric("paper_mig", "discrete_mig", ("paper_mig",), own_config="paper_mig.gin",
                protocol="paper", paper_version_of="mig", module=_PAPER_MODULE))
register(Metric("paper_sap", "SAP_score", ("sap_score",), own_config="paper_sap.gin",
                protocol="paper", paper_version_of="sap"))
register(Metric("paper_dci", "disentanglement", ("dci",), own_config="paper_dci.gin",
                protocol="paper", paper_version_of="dci", cost=30))
register(Metric("paper_modularity", "modularity_score", ("modularity_explicitness", "discretizer"),
                own_config="paper_modularity.gin", protocol="paper",
                paper_version_of="modularity"))
register(Metric("paper_unsupervised", "mutual_info_score", ("unsupervised_metrics", "discretizer"),
                own_config="paper_unsupervised.gin", protocol="paper",
                paper_version_of="unsupervised"))
register(Metric("paper_factor_leakage", "factor_leakage_mean", ("paper_factor_leakage",),
                own_config="paper_factor_leakage.gin", protocol="paper",
                paper_version_of="factor_leakage", module=_PAPER_MODULE))

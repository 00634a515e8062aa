"""The studies: which settings (gin files + bindings) a study trains and which metrics score them.

A study is a set of named settings and the metrics that score them; `lievae_sweep` runs one
over seeds (pipeline/sweep.py), `lievae_evaluate` scores one model with a study's metrics
(pipeline/scoring.py). `choose_metrics` picks the metrics of a protocol: the study's own (dlib's
configs), the paper code's, or both.
"""

import collections

from lievae_tf.evaluation import registry
from lievae_tf.errors import UserError

Setting = collections.namedtuple("Setting", "name gin_configs bindings")
# metrics: [registry.BoundMetric]; small: the study scores with the registry's small sizes (also
# for the paper protocol's metrics).
Study = collections.namedtuple("Study", "description settings metrics small", defaults=(False,))
# Which metrics score a study: its own (dlib's configs), the paper code's protocol, or both: a
# choice of `registry.PROTOCOLS`, not a metric's protocol.
BOTH = "both"
PROTOCOL_CHOICES = registry.PROTOCOLS + (BOTH,)

# The metrics of the paper's table, at dlib's sizes (registry: the paper protocol's own).
PAPER_TABLE_METRICS = ("factor_vae", "mig", "sap", "dci")

ALL_METRICS = "all"  # --metrics=all: every metric of the registry's dlib protocol


def study_metrics(metrics, small=False):
  """The `registry.BoundMetric`s of a study's `metrics`; `small`: the registry's sizes for a
  2-core CPU."""
  return tuple(registry.BoundMetric(m, m.small_bindings if small else ()) for m in metrics)


def _models(dataset):
  return (Setting("clg_vae", (f"{dataset}.gin",), ()),
          Setting("no_exp", (f"no_exp_{dataset}.gin",), ()),
          Setting("beta_vae", (f"beta_vae_{dataset}.gin",), ()))


_SHORT = ("model.training_steps = 1000", "model.batch_size = 64", "model.eval_steps = 10",
          "training.checkpoint_every = 500")

_PAPER_TABLE = study_metrics(registry.lookup(PAPER_TABLE_METRICS))

STUDIES = {
    "paper_dsprites": Study("The paper's dSprites runs (run with --seeds=0-9).",
                            (Setting("clg_vae", ("dsprites.gin",), ()),), _PAPER_TABLE),
    "paper_shapes3d": Study("The paper's 3DShapes runs (run with --seeds=0-9).",
                            (Setting("clg_vae", ("shapes3d.gin",), ()),), _PAPER_TABLE),
    "baselines_dsprites": Study("CLG-VAE, its no_exp ablation and dlib's β-VAE on dSprites, at "
                                "the paper's steps and batch.", _models("dsprites"), _PAPER_TABLE),
    "baselines_shapes3d": Study("The same on 3DShapes.", _models("shapes3d"), _PAPER_TABLE),
    "comparison_synthetic": Study(
        "CLG-VAE vs no_exp vs β-VAE, 1,000 steps at batch 64, small metric sizes: for the "
        "SYNTHETIC dSprites-format data of `lievae_make_data` (docs/comparison_synthetic.md).",
        tuple(Setting(s.name, s.gin_configs, _SHORT) for s in _models("dsprites")),
        study_metrics(registry.lookup(PAPER_TABLE_METRICS), small=True), small=True),
}


def get_study(name):
  if name not in STUDIES:
    raise UserError(f"--study={name!r} is not a study; choose one of {', '.join(STUDIES)}.")
  return STUDIES[name]


def _in_protocols(metric, choice):
  """A dlib-protocol metric under the choice 'paper' is its paper version, under 'both' itself
  and its paper version (if registered); a paper-protocol metric stays as it is."""
  if metric.protocol == "paper" or choice == "dlib":
    return [metric]
  paper = registry.paper_version(metric)
  if choice == "paper":
    if paper is None:
      raise UserError(f"--metrics={metric.name} has no paper-protocol version: score it with "
                      "--protocol=dlib or both.")
    return [paper]
  return [metric] + ([paper] if paper else [])


def choose_metrics(study, metrics=None, protocol="dlib"):
  """[registry.BoundMetric]: the study's own metrics (protocol 'dlib'), every metric of the paper
  code's protocol ('paper'), or both; or the metrics named `metrics` under that choice instead
  (see `_in_protocols`), with the study's bindings of each (small sizes for a small study's paper
  metrics)."""
  if protocol not in PROTOCOL_CHOICES:
    raise UserError(f"--protocol={protocol!r}: choose one of {', '.join(PROTOCOL_CHOICES)}.")
  paper_metrics = study_metrics(registry.metrics("paper"), small=study.small)
  if metrics:
    requested = (registry.metrics("dlib") if list(metrics) == [ALL_METRICS]
                 else registry.lookup(metrics))
    known = {b.metric: b.bindings for b in study.metrics + paper_metrics}
    return [registry.BoundMetric(m, known.get(m, ()))
            for metric in requested for m in _in_protocols(metric, protocol)]
  chosen = list(study.metrics) if protocol in ("dlib", BOTH) else []
  if protocol in ("paper", BOTH):
    chosen += paper_metrics
  return chosen

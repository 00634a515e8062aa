"""`lievae_collect`: mean, std and count of every metric per configuration across seeds.

Reads the JSON `dlib_aggregate_results` writes (one row per evaluation, with the train,
postprocess and evaluation configs flattened into columns), groups the rows by the given
configuration variables (gin names such as `LieGroupVAE.hy_hes` or `model.model`, looked up in the
training config), and writes `summary.csv`, `summary.md` and one PNG box plot per metric.

A metric is `<evaluation.name>.<score key>` for every numeric score dlib reports (e.g.
`mig.discrete_mig`, `dci.disentanglement`); elapsed times are left out. `std` is the sample
standard deviation (ddof = 1) over seeds; with one seed it is empty.

Beside the paper protocol's scores (`paper_<metric>`) of a CLG-VAE configuration trained on one
dataset the paper reports, the paper's published mean and std (`<metric>.published_mean`,
`.published_std`) follow ours.
"""

import os
import re

import numpy as np

from lievae_tf.errors import UserError

_SKIPPED_SCORES = ("elapsed_time", "uuid")

# The paper's table (CLG-VAE, mean ± std over 10 seeds), given there in %: here as the fractions
# dlib reports, keyed by dlib's dataset name and our paper-protocol metric.
PUBLISHED = {
    "dsprites_full": {"paper_factor_vae.eval_accuracy": (0.861, 0.020),
                      "paper_sap.SAP_score": (0.508, 0.050),
                      "paper_mig.discrete_mig": (0.254, 0.061),
                      "paper_dci.disentanglement": (0.197, 0.046)},
    "shapes3d": {"paper_factor_vae.eval_accuracy": (0.932, 0.040)},
}
PUBLISHED_MODEL = "@LieGroupVAE"


def load(aggregated_json):
  from disentanglement_lib.utils import aggregate_results  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(aggregated_json):
    raise UserError(f"--aggregated_json={aggregated_json}: no such file. It is what "
                    "dlib_aggregate_results (or lievae_sweep) writes, e.g. DIR/results.json.")
  try:
    return aggregate_results.load_aggregated_json_results(aggregated_json)
  except ValueError as e:
    raise UserError(f"{aggregated_json} is not the JSON of dlib_aggregate_results: {e}") from None


def _clean(value):
  """gin's string form of a value as a label: quotes stripped, missing as '-'."""
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return "-"
  return str(value).strip("'\"")


def long_table(frame, config_variables):
  """pandas DataFrame: one row per (run, metric) with the configuration, seed, metric, value."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  names = [c for c in frame.columns if c == "evaluation_config.evaluation.name"]
  if not names:
    raise UserError("the aggregated JSON has no evaluation_config.evaluation.name column: "
                    "evaluate with --gin_bindings=\"evaluation.name = '<metric>'\" (as "
                    "lievae_sweep does).")
  missing = [v for v in config_variables if f"train_config.{v}" not in frame.columns]
  if missing:
    known = sorted(c[len("train_config."):] for c in frame.columns
                   if c.startswith("train_config."))
    raise UserError(f"--config_variables: {missing} not in the training configs; known: "
                    f"{', '.join(known)}.")
  score_columns = [c for c in frame.columns if c.startswith("evaluation_results.") and
                   c[len("evaluation_results."):] not in _SKIPPED_SCORES]
  rows = []
  for _, row in frame.iterrows():
    metric = _clean(row["evaluation_config.evaluation.name"])
    config = {v: _clean(row[f"train_config.{v}"]) for v in config_variables}
    seed = _clean(row.get("train_config.model.random_seed"))
    # What the paper's published numbers are of: not grouped by, only matched.
    config["_published"] = (_clean(row.get("train_config.dataset.name")),
                            _clean(row.get("train_config.model.model")))
    for column in score_columns:
      value = row[column]
      if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        continue
      if np.isnan(value):
        continue
      rows.append(dict(config, seed=seed,
                       metric=f"{metric}.{column[len('evaluation_results.'):]}",
                       value=float(value)))
  if not rows:
    raise UserError("the aggregated JSON holds no numeric evaluation results.")
  return pd.DataFrame(rows)


def summarise(long, config_variables):
  """Wide DataFrame: config variables, then `<metric>.mean`, `<metric>.std` per metric, then n."""
  group = list(config_variables)
  stats = long.groupby(group + ["metric"])["value"].agg(["mean", "std", "count"]).reset_index()
  metrics = sorted(stats["metric"].unique())
  wide = stats.pivot_table(index=group, columns="metric", values=["mean", "std"], dropna=False)
  import pandas as pd  # pylint: disable=g-import-not-at-top
  keys = [k if isinstance(k, tuple) else (k,) for k in wide.index.tolist()]
  summary = pd.DataFrame(keys, columns=group)
  for metric in metrics:
    summary[f"{metric}.mean"] = wide[("mean", metric)].to_numpy()
    summary[f"{metric}.std"] = wide[("std", metric)].to_numpy()
  # n: seeds per configuration (the most evaluations any metric of it has).
  counts = long.groupby(group + ["metric"])["seed"].nunique().groupby(group).max()
  summary["n"] = counts.reindex(wide.index).to_numpy()
  # pivot_table(dropna=False) spans every combination of the variables; keep those that ran.
  summary = summary[summary["n"].notna()].reset_index(drop=True)
  summary["n"] = summary["n"].astype(int)
  return _with_published(summary, long, group, metrics)


def _with_published(summary, long, group, metrics):
  """Adds the paper's published mean and std after each of our scores it reports, on the rows
  whose runs are all a CLG-VAE on one dataset of the paper's table."""
  if "_published" not in long.columns:
    return summary
  origins = long.groupby(group)["_published"].apply(lambda v: sorted(set(v)))
  found = {}
  for i, row in summary.iterrows():
    origin = origins.get(tuple(row[g] for g in group) if len(group) > 1 else row[group[0]])
    if origin and len(origin) == 1 and origin[0][1] == PUBLISHED_MODEL:
      for metric, value in PUBLISHED.get(origin[0][0], {}).items():
        if metric in metrics:
          found.setdefault(metric, {})[i] = value
  for metric, values in found.items():
    at = summary.columns.get_loc(f"{metric}.std") + 1
    summary.insert(at, f"{metric}.published_mean",
                   [values.get(i, (np.nan, np.nan))[0] for i in summary.index])
    summary.insert(at + 1, f"{metric}.published_std",
                   [values.get(i, (np.nan, np.nan))[1] for i in summary.index])
  return summary


def to_markdown(summary):
  header = "| " + " | ".join(summary.columns) + " |"
  rule = "|" + "|".join("---" for _ in summary.columns) + "|"
  lines = [header, rule]
  for _, row in summary.iterrows():
    cells = []
    for column in summary.columns:
      value = row[column]
      if isinstance(value, float):
        cells.append("" if np.isnan(value) else f"{value:.4f}")
      else:
        cells.append(str(value))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(long, config_variables, output_dir):
  """One box plot per metric, the configurations side by side; returns the PNG paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  labels_of = lambda frame: [", ".join(str(v) for v in key) if isinstance(key, tuple) else str(key)
                             for key in frame]
  for metric, rows in long.groupby("metric"):
    groups = list(rows.groupby(list(config_variables)))
    labels = labels_of([g[0] for g in groups])
    values = [g[1]["value"].to_numpy() for g in groups]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(values)), 4.0))
    axes.boxplot(values, showmeans=True)
    axes.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right")
    for i, v in enumerate(values, start=1):  # the seeds themselves, over the boxes
      axes.plot(np.full(len(v), i), v, "k.", alpha=0.6)
    axes.set_title(metric)
    axes.set_xlabel(", ".join(config_variables))
    figure.tight_layout()
    path = os.path.join(output_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", metric) + ".png")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    paths.append(path)
  return paths


def collect(aggregated_json, config_variables, output_dir):
  """Writes summary.csv, summary.md and the plots; returns the summary DataFrame."""
  if not config_variables:
    raise UserError("--config_variables is empty: name the gin parameters that tell the "
                    "configurations apart, e.g. --config_variables=model.model.")
  long = long_table(load(aggregated_json), config_variables)
  summary = summarise(long, config_variables)
  os.makedirs(output_dir, exist_ok=True)
  summary.to_csv(os.path.join(output_dir, "summary.csv"), index=False)
  with open(os.path.join(output_dir, "summary.md"), "w") as f:
    f.write(to_markdown(summary))
  plot(long, config_variables, output_dir)
  return summary

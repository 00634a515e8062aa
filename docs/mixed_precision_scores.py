"""The float32 vs mixed_bfloat16 score comparison of docs/mixed_precision_scores.md.

Reads the JSON `dlib_aggregate_results` wrote over both precisions' sweeps
(docs/mixed_precision_scores.sh) and writes into `--output_dir`:
  - mixed_precision_scores.csv: one row per (precision, seed): the training's time, images/s and
    final evaluation losses, then every numeric score dlib reported (`<metric>.<score key>`);
  - mixed_precision_scores_summary.csv: per headline score, the mean and sample std of each
    precision over seeds, the difference of the means (bf16 - fp32), the pooled between-seed std,
    and the mean and largest absolute difference between the two precisions of the same seed;
  - mixed_precision_scores.png: one panel per headline score, float32 and mixed_bfloat16 box plots
    side by side, the seeds as dots, each seed's two runs joined by a line.
Prints the two tables as markdown.
"""

import argparse
import os

import numpy as np

PRECISIONS = ("float32", "mixed_bfloat16")
# The paper's table under both protocols: (metric, its headline score key).
HEADLINE_METRICS = ("factor_vae", "mig", "sap", "dci")
TRAINING_COLUMNS = {"train_results.elapsed_time": "train_seconds",
                    "train_results.images_per_second": "train_images_per_s",
                    "train_results.eval_loss": "eval_loss",
                    "train_results.eval_recon_loss": "eval_recon_loss",
                    "train_results.eval_total_kl": "eval_total_kl"}


def parse_flags():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--aggregated_json", required=True,
                      help="dlib_aggregate_results' output over both sweeps")
  parser.add_argument("--output_dir", default="docs")
  return parser.parse_args()


def headline_scores():
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  return [f"{name}.{registry.get(name).score_key}"
          for protocol in ("", "paper_") for name in (protocol + m for m in HEADLINE_METRICS)]


def per_run_table(aggregated_json):
  """DataFrame: one row per (precision, seed), training figures then every score."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import collect  # pylint: disable=g-import-not-at-top
  frame = collect.load(aggregated_json)
  variables = ["training.precision", "model.training_steps", "model.batch_size"]
  long = collect.long_table(frame, variables)
  unknown = sorted(set(long["training.precision"]) - set(PRECISIONS))
  if unknown:
    raise SystemExit(f"{aggregated_json}: unexpected precisions {unknown}")
  if long[variables[1:]].nunique().max() != 1:
    raise SystemExit(f"{aggregated_json}: the runs differ in steps or batch size")
  scores = long.pivot_table(index=["training.precision", "seed"], columns="metric",
                            values="value").reset_index()
  # The training's own results, repeated on every evaluation row of a run: once per run.
  training = frame[["train_config.training.precision", "train_config.model.random_seed"] +
                   list(TRAINING_COLUMNS)].drop_duplicates()
  training.columns = ["training.precision", "seed"] + list(TRAINING_COLUMNS.values())
  training["training.precision"] = training["training.precision"].map(collect._clean)  # pylint: disable=protected-access
  training["seed"] = training["seed"].map(collect._clean)  # pylint: disable=protected-access
  if training.duplicated(["training.precision", "seed"]).any():
    raise SystemExit(f"{aggregated_json}: a (precision, seed) has two trainings")
  table = pd.merge(training, scores, on=["training.precision", "seed"])
  table.insert(2, "training_steps", long["model.training_steps"].iloc[0])
  table.insert(3, "batch_size", long["model.batch_size"].iloc[0])
  table["seed"] = table["seed"].astype(int)
  return table.sort_values(["training.precision", "seed"]).reset_index(drop=True)


def summary_table(table, columns):
  """Per column: each precision's mean and sample std over seeds, their difference, the pooled
  between-seed std, and the same-seed differences (the two runs of a seed share the initial
  weights' seed, the batches and the draws; they differ in rounding only)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  by = {p: table[table["training.precision"] == p].set_index("seed") for p in PRECISIONS}
  rows = []
  for column in columns:
    fp32, bf16 = by["float32"][column], by["mixed_bfloat16"][column]
    paired = (bf16 - fp32).dropna()
    pooled = float(np.sqrt((fp32.var(ddof=1) + bf16.var(ddof=1)) / 2))
    difference = bf16.mean() - fp32.mean()
    rows.append({"score": column, "float32_mean": fp32.mean(), "float32_std": fp32.std(ddof=1),
                 "bf16_mean": bf16.mean(), "bf16_std": bf16.std(ddof=1),
                 "difference_of_means": difference, "pooled_seed_std": pooled,
                 "difference_in_seed_stds": difference / pooled if pooled else np.nan,
                 "same_seed_mean_abs_difference": paired.abs().mean(),
                 "same_seed_max_abs_difference": paired.abs().max(), "n": len(paired)})
  return pd.DataFrame(rows)


def to_markdown(frame, digits=3):
  lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns)
           + "|"]
  for _, row in frame.iterrows():
    cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(table, columns, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  per_row = 5
  rows = -(-len(columns) // per_row)
  figure, axes = plt.subplots(rows, per_row, figsize=(3.2 * per_row, 3.6 * rows), squeeze=False)
  by = {p: table[table["training.precision"] == p].set_index("seed") for p in PRECISIONS}
  for panel, column in zip(axes.flat, columns):
    values = [by[p][column].to_numpy() for p in PRECISIONS]
    panel.boxplot(values, showmeans=True, widths=0.5)
    for seed in sorted(set(by["float32"].index) & set(by["mixed_bfloat16"].index)):
      pair = [by[p].loc[seed, column] for p in PRECISIONS]
      panel.plot([1, 2], pair, color="grey", linewidth=0.8, alpha=0.7)
      panel.plot([1, 2], pair, "k.")
    panel.set_xticks([1, 2], ["float32", "mixed_bfloat16"])
    panel.set_title(column, fontsize=9)
  for panel in list(axes.flat)[len(columns):]:
    panel.axis("off")
  steps, batch = table["training_steps"].iloc[0], table["batch_size"].iloc[0]
  figure.suptitle(f"float32 vs mixed_bfloat16, {len(by['float32'])} seeds each, {steps} steps at "
                  f"batch {batch} (SYNTHETIC dSprites-format data; lines join a seed's two runs)",
                  fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=80)
  plt.close(figure)


def main():
  flags = parse_flags()
  table = per_run_table(flags.aggregated_json)
  scores = headline_scores()
  missing = [s for s in scores if s not in table.columns]
  if missing:
    raise SystemExit(f"{flags.aggregated_json}: no {missing}")
  os.makedirs(flags.output_dir, exist_ok=True)
  table.to_csv(os.path.join(flags.output_dir, "mixed_precision_scores.csv"), index=False,
               float_format="%.6g")
  summary = summary_table(table, scores + ["eval_recon_loss", "train_seconds",
                                           "train_images_per_s"])
  summary.to_csv(os.path.join(flags.output_dir, "mixed_precision_scores_summary.csv"),
                 index=False, float_format="%.6g")
  # A row per protocol (dlib's, the paper code's), then the reconstruction and the speed.
  plot(table, scores[:4] + ["eval_recon_loss"] + scores[4:] + ["train_images_per_s"],
       os.path.join(flags.output_dir, "mixed_precision_scores.png"))
  print(to_markdown(table[["training.precision", "seed", "train_seconds", "train_images_per_s",
                           "eval_recon_loss"] + scores]))
  print()
  print(to_markdown(summary))


if __name__ == "__main__":
  main()

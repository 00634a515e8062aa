"""A model's full metric suite: the stock `dlib_evaluate` commands vs `lievae_evaluate --metrics=all`.

  source .venv/bin/activate
  flock -x /tmp/lievae_cpu.lock python bench/metric_suite.py --work_dir=runs/bench_suite
  python bench/metric_suite.py --work_dir=DIR --sides=stock,suite_1,suite_2  # also one process

Sides, run one after the other on the same model (the registry's dlib-protocol metrics: dlib's
nine `unsupervised_study_v1` configs and factor_leakage, at their standard sizes):
  stock     one stock `dlib_evaluate` process per metric. Its process seeds NumPy's global random
            state with the metric's `evaluation.random_seed` first, as `lievae_evaluate` does (dlib
            never seeds it, and the gradient boosting of DCI and of the boosted-trees downstream
            task draws from it: unseeded, the stock DCI differs from run to run);
  suite_N   `lievae_evaluate --metrics=all --metric_processes=N` (dlib's own evaluation of each
            metric, in N processes side by side, each loading the dataset and module once).
Prints each side's wall time, CPU time and peak resident memory (its largest single process), its
ratio to the stock side, and whether every metric's results equal the stock ones (bit for bit, except the
per-run `uuid` and `elapsed_time` dlib writes).

Data: the full-size SYNTHETIC dSprites grid (737,280 images, `lievae_make_data`), written to
WORK_DIR/data unless --data_dir has one; the model: 200 steps of gin_configs/dsprites.gin, then
the stock `dlib_postprocess` (mean). The figures go to bench/RESULTS.md.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time

import core

FULL_DSPRITES = "1,3,6,40,32,32"


CPU_SECONDS = [0.0]  # of every command run so far, their waited-for workers included


def run(args, env, log_path):
  """Runs a command with its output in `log_path`; returns (wall s, its peak RSS in GB)."""
  seconds, usage, _ = core.run(args, env, log_path)
  CPU_SECONDS[0] += usage.ru_utime + usage.ru_stime
  return seconds, usage.ru_maxrss / 1e6


def prepare(work_dir, data_dir, env):
  from lievae_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(synthetic.dsprites_path(data_dir)):
    print(f"writing the full synthetic dSprites grid to {data_dir}", flush=True)
    run([core.command("lievae_make_data"), f"--output_dir={data_dir}",
         f"--factor_sizes={FULL_DSPRITES}"], env, os.path.join(work_dir, "make_data.log"))
  model_dir = os.path.join(work_dir, "model")
  core.trained_model(model_dir, env, work_dir)
  return model_dir


def stock_side(model_dir, side_dir, env):
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  from lievae_tf.evaluation import suite  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import scoring  # pylint: disable=g-import-not-at-top
  representation = os.path.join(model_dir, "postprocessed", "mean")
  wall = peak = 0.0
  for metric in registry.metrics(protocol="dlib"):
    command = scoring.evaluate_command(representation, os.path.join(side_dir, metric.name), metric,
                                       [])
    seconds, rss = run(suite.seeded_stock_command(command, metric.gin_config),
                       env, os.path.join(side_dir, f"{metric.name}.log"))
    print(f"  {metric.name}: {seconds:.0f} s, {rss:.2f} GB", flush=True)
    wall, peak = wall + seconds, max(peak, rss)
  return wall, peak


def suite_side(model_dir, side_dir, processes, env):
  metrics_dir = os.path.join(model_dir, "metrics")
  shutil.rmtree(metrics_dir, ignore_errors=True)
  # wait4's peak RSS is the largest of the process and its waited-for workers (Linux).
  wall, peak = run([core.command("lievae_evaluate"), f"--model_dir={model_dir}",
                    "--metrics=all", f"--metric_processes={processes}", "--nopostprocess",
                    "--noaggregate"], env, os.path.join(side_dir, "lievae_evaluate.log"))
  shutil.move(os.path.join(metrics_dir, "mean"), os.path.join(side_dir, "metrics"))
  return wall, peak


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--data_dir", default=None, help="default: WORK_DIR/data")
  parser.add_argument("--sides", default="stock,suite_2")
  args = parser.parse_args()
  sides = args.sides.split(",")
  if sides[0] != "stock":
    sys.exit("--sides: start with stock (the baseline every side is compared with)")
  work_dir = os.path.abspath(args.work_dir)
  data_dir = os.path.abspath(args.data_dir or os.path.join(work_dir, "data"))
  os.makedirs(work_dir, exist_ok=True)
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=data_dir, TF_CPP_MIN_LOG_LEVEL="2")
  model_dir = prepare(work_dir, data_dir, env)
  run_dir = os.path.join(work_dir, time.strftime("%Y%m%d-%H%M%S"))
  figures = {}
  for side in sides:
    side_dir = os.path.join(run_dir, side)
    os.makedirs(side_dir)
    print(f"{side} ...", flush=True)
    cpu_before = CPU_SECONDS[0]
    if side == "stock":
      wall, peak = stock_side(model_dir, side_dir, env)
    elif re.fullmatch(r"suite_\d+", side):
      wall, peak = suite_side(model_dir, side_dir, int(side.split("_")[1]), env)
    else:
      sys.exit(f"--sides: unknown side {side!r} (stock, suite_N)")
    figures[side] = {"wall_s": round(wall, 1), "cpu_s": round(CPU_SECONDS[0] - cpu_before, 1),
                     "peak_rss_gb": round(peak, 2)}
    print(f"{side}: {wall:.0f} s", flush=True)

  from lievae_tf.evaluation import registry, suite  # pylint: disable=g-import-not-at-top
  stock_dir = os.path.join(run_dir, "stock")
  print(f"\nThe full metric suite of one model ({len(registry.names(protocol='dlib'))} metrics, "
        f"standard sizes), outputs in {run_dir}:")
  print(f"{'side':<10} {'wall s':>8} {'min':>6} {'vs stock':>9} {'CPU s':>7} {'peak RSS GB':>12}"
        "  scores")
  for side, figure in figures.items():
    if side == "stock":
      verdict = "(baseline)"
    else:
      differ = [m for m in registry.names(protocol="dlib")
                if suite.comparable_results(os.path.join(run_dir, side, "metrics", m)) !=
                suite.comparable_results(os.path.join(stock_dir, m))]
      verdict = "all equal to stock" if not differ else f"DIFFER from stock: {differ}"
      figure["differ"] = differ
    figure["vs_stock"] = round(figures["stock"]["wall_s"] / figure["wall_s"], 3)
    print(f"{side:<10} {figure['wall_s']:>8.0f} {figure['wall_s'] / 60:>6.1f} "
          f"{figure['vs_stock']:>8.2f}x {figure['cpu_s']:>7.0f} {figure['peak_rss_gb']:>12.2f}  "
          f"{verdict}")
  print(json.dumps(figures))


if __name__ == "__main__":
  main()

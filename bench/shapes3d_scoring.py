"""3DShapes end to end on the full grid with the stock commands: peak memory and time of each step.

Issue 14: dlib's own `Shapes3D` holds the 480,000-image grid as float32 (23.6 GB held, 29.5 GB at
peak, extrapolated in bench/RESULTS.md), so `dlib_postprocess` and `dlib_evaluate` could not score
a 3DShapes model on a 24 GB machine. With the lean `Shapes3D` that `lievae_tf.dlib.speedups` puts
in its place (uint8, batches divided by 255 as dlib does) this runs, each command in its own process:

  1. lievae_make_data --dataset=shapes3d        the full-size SYNTHETIC 3dshapes.h5 (5.9 GB)
  2. loader (h5)                                dlib's `named_data` loading 3DShapes from the h5
  3. lievae_train gin_configs/shapes3d.gin      a short run (--steps, --batch_size)
  4. dlib_postprocess                           mean representation
  5. dlib_evaluate mig, factor_vae, dci         sizes bound down for a CPU (the registry's)
  6. dlib_aggregate_results
  and, with --npz (default): lievae_prepare_data (dlib's npz), the loader from the npz alone, and
  dlib_evaluate mig from the npz alone, whose observations and score must equal the h5's.

Peak resident memory is each command's own (`os.wait4`'s ru_maxrss); time is wall-clock. The
data (~6 GB, ~12 GB with --npz) is written to --data_dir and deleted at the end unless
--keep_data. Needs ~7 GB of RAM free; run it alone (exclusive lock):

  source .venv/bin/activate
  flock -x /tmp/lievae_cpu.lock python bench/shapes3d_scoring.py --work_dir=runs/bench_shapes3d
"""

import hashlib
import json
import os
import shutil
import sys
import time

from absl import app
from absl import flags

import core

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "runs/bench_shapes3d", "Model, metrics and results go here.")
flags.DEFINE_string("data_dir", None, "Data root for the synthetic files (default WORK_DIR/data).")
flags.DEFINE_integer("steps", 100, "Training steps of the short run.")
flags.DEFINE_integer("batch_size", 64, "Training batch size of the short run.")
flags.DEFINE_list("metrics", ["mig", "factor_vae", "dci"], "Metrics to evaluate (registry names).")
flags.DEFINE_boolean("npz", True, "Also write dlib's npz and check loader and MIG against it.")
flags.DEFINE_list("factor_sizes", None, "Only to try the script out: a smaller synthetic grid.")
flags.DEFINE_boolean("keep_data", False, "Keep the synthetic data files afterwards.")
flags.DEFINE_string("json", None, "Also write every figure to this JSON file.")
# Internal: run the loader in this process and print its figures.
flags.DEFINE_boolean("loader_case", False, "Internal: load 3DShapes as dlib does, print JSON.")

GB = 1e9


def _loader_case():
  """dlib's `named_data` (as postprocess/evaluate call it) loading 3DShapes; a digest of 10,000
  observations sampled as dlib's metrics sample them, to compare the h5 and the npz."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top
  gin.parse_config(["dataset.name = 'shapes3d'"])
  start = time.perf_counter()
  data = named_data.get_named_ground_truth_data()
  seconds = time.perf_counter() - start
  digest = hashlib.sha256()
  random_state = np.random.RandomState(0)
  for _ in range(10):
    digest.update(data.sample_observations(1000, random_state).tobytes())
  print(json.dumps(dict(source=data.data_file, images_dtype=str(data.images.dtype),
                        images_gb=data.images.nbytes / GB, load_seconds=seconds,
                        held_gb=core.memory_bytes("VmRSS") / GB,
                        peak_gb=core.memory_bytes("VmHWM") / GB,
                        observations_sha256=digest.hexdigest())))


def _run(step, args, data_root, figures):
  """Runs one command, records its wall time and peak RSS (its own, from wait4); returns its
  stdout."""
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=os.path.abspath(data_root),
             TF_CPP_MIN_LOG_LEVEL="1")
  log_path = os.path.join(FLAGS.work_dir, "logs", step.replace(" ", "_") + ".log")
  seconds, usage, output = core.run(args, env, log_path, capture_stdout=True)
  peak_gb = usage.ru_maxrss * 1024 / GB  # Linux: KiB
  figures.append(dict(step=step, seconds=round(seconds, 1), peak_gb=round(peak_gb, 2)))
  print(f"{step:<34} {seconds:8.1f} s {peak_gb:8.2f} GB peak", flush=True)
  return output


def _evaluate(metric_name, representation, data_root, figures, label=""):
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  metric = registry.get(metric_name)
  output_dir = os.path.join(FLAGS.work_dir, "model", "metrics", "mean" + label, metric.name)
  shutil.rmtree(output_dir, ignore_errors=True)
  bindings = [f"evaluation.name = '{metric.name}'"] + list(metric.small_bindings)
  _run(f"dlib_evaluate {metric.name}{label}",
       [core.command("dlib_evaluate"), f"--input_dir={representation}",
        f"--output_dir={output_dir}", f"--gin_config={metric.gin_config}"] + [f"--gin_bindings={b}" for b in bindings],
       data_root, figures)
  with open(os.path.join(output_dir, "results", "json", "evaluation_results.json")) as f:
    results = json.load(f)
  return {k: v for k, v in results.items() if k not in ("elapsed_time", "uuid")}


def main(argv):
  del argv
  if FLAGS.loader_case:
    return _loader_case()
  from lievae_tf.data import shapes3d  # pylint: disable=g-import-not-at-top
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  data_dir = FLAGS.data_dir or os.path.join(FLAGS.work_dir, "data")
  h5_root, npz_root = os.path.join(data_dir, "h5_only"), os.path.join(data_dir, "npz_only")
  h5_path = shapes3d.default_h5_path(h5_root)
  model_dir = os.path.join(FLAGS.work_dir, "model")
  representation = os.path.join(model_dir, "postprocessed", "mean")
  figures, checks = [], {}
  print(f"{'step':<34} {'time':>10} {'peak RSS':>13}")
  try:
    if not os.path.isfile(h5_path):
      _run("lievae_make_data (h5)", [core.command("lievae_make_data"), "--dataset=shapes3d",
                                     f"--output_dir={h5_root}"] +
           ([f"--factor_sizes={','.join(FLAGS.factor_sizes)}"] if FLAGS.factor_sizes else []),
           h5_root, figures)
    loader_h5 = json.loads(_run("loader from the h5", [sys.executable, __file__, "--loader_case"],
                                h5_root, figures).strip().splitlines()[-1])
    shutil.rmtree(model_dir, ignore_errors=True)
    _run("lievae_train", [
        core.command("lievae_train"), f"--model_dir={model_dir}",
        f"--gin_config={core.gin_config('shapes3d.gin')}",
        f"--gin_bindings=model.training_steps = {FLAGS.steps}",
        f"--gin_bindings=model.batch_size = {FLAGS.batch_size}",
        f"--gin_bindings=training.checkpoint_every = {FLAGS.steps}",
        "--gin_bindings=training.image_every = 0"], h5_root, figures)
    _run("dlib_postprocess mean", [
        core.command("dlib_postprocess"), f"--model_dir={model_dir}",
        f"--output_dir={representation}",
        "--gin_config=" + os.path.join(registry.dlib_config_dir(), "postprocess_configs",
                                       "mean.gin")], h5_root, figures)
    scores = {m: _evaluate(m, representation, h5_root, figures) for m in FLAGS.metrics}
    aggregated = os.path.join(FLAGS.work_dir, "results.json")
    _run("dlib_aggregate_results", [
        core.command("dlib_aggregate_results"),
        f"--result_file_pattern={model_dir}/metrics/mean/*/results/aggregate/evaluation.json",
        f"--output_path={aggregated}"], h5_root, figures)
    if FLAGS.npz:
      _run("lievae_prepare_data (npz)", [core.command("lievae_prepare_data"), "shapes3d",
                                          f"--h5={h5_path}", f"--output_dir={npz_root}",
                                          "--overwrite"], npz_root, figures)
      loader_npz = json.loads(_run("loader from the npz", [sys.executable, __file__,
                                                           "--loader_case"],
                                   npz_root, figures).strip().splitlines()[-1])
      checks["observations_equal_h5_npz"] = (loader_h5["observations_sha256"] ==
                                             loader_npz["observations_sha256"])
      checks["loader_npz"] = loader_npz
      if "mig" in FLAGS.metrics:
        checks["mig_equal_h5_npz"] = (
            _evaluate("mig", representation, npz_root, figures, label="_npz") == scores["mig"])
    checks["loader_h5"] = loader_h5
  finally:
    if not FLAGS.keep_data:
      shutil.rmtree(data_dir, ignore_errors=True)
  print()
  print("scores (from the h5):", json.dumps(scores))
  print("checks:", json.dumps(checks))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(dict(figures=figures, scores=scores, checks=checks), f, indent=1)
  if not all(v for k, v in checks.items() if k.endswith("_equal_h5_npz")):
    sys.exit("the h5 and the npz gave different observations or scores")


if __name__ == "__main__":
  app.run(main)

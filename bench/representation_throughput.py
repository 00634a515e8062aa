"""How fast disentanglement_lib can call our representation, and what a full scoring costs.

Two parts (`--parts`):

throughput: images/s of the encoder mean, at the batch sizes dlib's metrics call it with (16 in
  `generate_batch_factor_code`: MIG, DCI, SAP, modularity, downstream, unsupervised; 64 in the
  beta-VAE and FactorVAE metrics), through five paths:
    hub_frozen   how dlib scores here: the `eval_function_for_module` of dlib's `evaluate.hub`
                 (`lievae_tf.dlib.frozen_scoring`: the module's weights frozen to constants) on
                 the postprocessed module, called exactly as
                 `disentanglement_lib/evaluation/evaluate.py` does (signature "representation",
                 `np.array(output["default"])`);
    hub          the same through the stock `tensorflow_hub.eval_function_for_module` (how dlib
                 scored before, and with LIEVAE_TF_DLIB_SPEEDUPS=0);
    keras        `LieGroupVAE.gaussian_encoder` called eagerly, `.numpy()` of the mean;
    keras_tf_fn  the same in a `tf.function` (one trace for any batch size);
    torch        `torch_reference.Encoder` under `torch.inference_mode()` (channels-first
                 images prepared beforehand, as the paper code's loader gives them).
  Each path lives in its own subprocess (TF's and torch's thread pools in one process fight) with
  2 threads; only one works at a time. A round asks every path in turn (order rotated each round)
  to encode the same fixed images; warm-up calls are excluded. Printed: the median images/s with
  min and max over rounds, and each path's median ratio to torch within the same round;
  `--json_line` then prints one JSON line: {"batch_16": {"vs_torch": <hub_frozen>,
  "stock_hub_vs_torch": <hub>}, "batch_64": {...}} (median ratios).

metric_suite (opt-in, ~30+ min on 2 cores): every `unsupervised_study_v1` metric config (9 files:
  the issue's "eight" counts the two downstream_task variants as one) at its standard sizes, each
  run by the stock `dlib_evaluate` script on the mean representation, in a child process that
  wraps (without changing) the representation function, the dataset's sampling methods and the
  sklearn estimators' `fit`, so that each metric's wall time splits into: start-up (imports, data
  load), module load, encoding images, sampling ground-truth data, sklearn fitting, and the rest
  (dlib's metric numpy, discretisation, mutual information, writing results).

Ratios, not absolute times, are the result: other load on the machine moves single figures.

  source .venv/bin/activate
  export DISENTANGLEMENT_LIB_DATA=runs/bench_data  # full-size dSprites (lievae_make_data)
  python bench/representation_throughput.py \\
      --model_dir=runs/bench_representation_model --rounds=15
  python bench/representation_throughput.py --model_dir=runs/bench_representation_model \\
      --rounds=15 --paths=hub,hub_frozen,torch --json_line
  python bench/representation_throughput.py \\
      --model_dir=runs/bench_representation_model --parts=metric_suite

A `--model_dir` without `tfhub/` is trained first (`lievae_train`, 200 steps of
`gin_configs/dsprites.gin`); one without `postprocessed/mean` is postprocessed with the stock
`dlib_postprocess` (mean); their logs go to MODEL_DIR_logs.
"""

import argparse
import contextlib
import functools
import glob
import json
import os
import runpy
import statistics
import sys
import tempfile
import time

from lievae_tf.evaluation import registry
from lievae_tf.pipeline import scoring

import core

THREADS = core.THREADS
PATHS = ("hub_frozen", "hub", "keras", "keras_tf_fn", "torch")
IMAGE_SHAPE = (64, 64, 1)


# ---------------------------------------------------------------------------------------------
# The model directory.


def model_sizes(model_dir):
  """(subgroup_sizes, subspace_sizes) from the run's operative gin config."""
  from disentanglement_lib.utils import results  # pylint: disable=g-import-not-at-top
  config = results.gin_dict(os.path.join(model_dir, "results", "gin", "train.gin"))
  parse = lambda key, default: json.loads(config.get(key, default).replace("(", "[").replace(
      ")", "]").replace(",]", "]"))
  return (parse("LieGroupVAE.subgroup_sizes", "[100]"),
          parse("LieGroupVAE.subspace_sizes", "[10]"))


# ---------------------------------------------------------------------------------------------
# Throughput: one worker process per path.


def fixed_images(num_images):
  """The same binary sprites-like images for every path (speed does not depend on content)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  return (rng.uniform(size=(num_images,) + IMAGE_SHAPE) < 0.1).astype(np.float32)


def make_encoder(path, model_dir):
  """A function batch (NHWC float32 numpy) -> mean (numpy), the way `path` computes it."""
  subgroup_sizes, subspace_sizes = model_sizes(model_dir)
  if path == "torch":
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(THREADS)
    encoder = core.torch_reference().Encoder(subgroup_sizes, subspace_sizes, nc=1).eval()

    def encode_torch(images_nchw):
      with torch.inference_mode():
        _, mu, _ = encoder(torch.from_numpy(images_nchw))
      return mu.numpy()

    return encode_torch

  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if path in ("hub", "hub_frozen"):
    from lievae_tf.dlib import shims  # pylint: disable=g-import-not-at-top
    shims.apply()  # dlib's shims (and the speed-ups, unless switched off)
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    if path == "hub_frozen":
      from disentanglement_lib.evaluation import evaluate  # pylint: disable=g-import-not-at-top
      from lievae_tf.dlib import frozen_scoring  # pylint: disable=g-import-not-at-top
      hub = evaluate.hub  # what dlib calls
      if not isinstance(hub, frozen_scoring.HubForScoring):
        raise SystemExit(f"hub_frozen: dlib's evaluate.hub is not frozen_scoring's ({hub!r}); "
                         f"is {shims.SPEEDUPS_SWITCH}=0 set?")
    module_path = os.path.join(scoring.representation_dir(model_dir), "tfhub")
    # Open for the worker's life, as dlib keeps it open for a whole metric; the closure holds
    # the context, whose collection would close the session.
    context = hub.eval_function_for_module(module_path)
    f = context.__enter__()

    def encode_hub(images, context=context):
      del context
      output = f(dict(images=images), signature="representation", as_dict=True)
      return np.array(output["default"])

    return encode_hub

  from lievae_tf import models  # pylint: disable=g-import-not-at-top
  vae = models.LieGroupVAE(num_channels=1, subgroup_sizes=subgroup_sizes,
                            subspace_sizes=subspace_sizes).build_variables(IMAGE_SHAPE)
  if path == "keras":
    return lambda images: vae.gaussian_encoder(images)[0].numpy()
  encode_graph = tf.function(lambda images: vae.gaussian_encoder(images)[0],
                             input_signature=[tf.TensorSpec((None,) + IMAGE_SHAPE, tf.float32)])
  return lambda images: encode_graph(images).numpy()


def worker(path, model_dir, max_images):
  """Serves `time BATCH_SIZE NUM_IMAGES` on stdin: {"seconds", "cpu_seconds"} of encoding."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  encode = make_encoder(path, model_dir)
  images = fixed_images(max_images)
  if path == "torch":
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))

  def time_encoding(batch_size, num_images):
    batches = [images[i:i + batch_size] for i in range(0, num_images, batch_size)]
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in batches:
      encode(batch)
    return {"seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started}

  core.serve({"time": time_encoding})


def measure_throughput(model_dir, paths, batch_sizes, images_per_round, rounds, warmup_rounds):
  """{batch_size: {path: [images/s of each round]}}; every round runs every path once."""
  workers = []
  try:
    for path in paths:  # started one after another: their imports must not overlap the timing
      workers.append(core.Worker(path, [os.path.abspath(__file__), f"--_worker={path}",
                                        f"--model_dir={model_dir}",
                                        f"--_max_images={images_per_round}"],
                                 {"OMP_NUM_THREADS": str(THREADS)}))
      workers[-1].ready()
    figures = {b: {w.name: [] for w in workers} for b in batch_sizes}
    for batch_size in batch_sizes:
      for worker_ in workers:
        for _ in range(warmup_rounds):
          worker_.ask("time", batch_size, images_per_round)
      for round_index in range(rounds):
        shift = round_index % len(workers)  # rotate who goes first: drift hits all alike
        for worker_ in workers[shift:] + workers[:shift]:
          seconds = worker_.ask("time", batch_size, images_per_round)["seconds"]
          figures[batch_size][worker_.name].append(images_per_round / seconds)
      print(f"  batch {batch_size}: {rounds} rounds done", flush=True)
    return figures
  finally:
    for worker_ in workers:
      worker_.close()


def median_ratio(by_path, path, baseline):
  """The median over rounds of `path`'s images/s over `baseline`'s in the same round."""
  return statistics.median(r / b for r, b in zip(by_path[path], by_path[baseline]))


def json_line(figures):
  """{"batch_16": {"vs_torch": hub_frozen's ratio, "stock_hub_vs_torch": hub's}, ...}."""
  keys = {"hub_frozen": "vs_torch", "hub": "stock_hub_vs_torch"}
  return json.dumps({f"batch_{b}": {key: round(median_ratio(by_path, path, "torch"), 3)
                                    for path, key in keys.items() if path in by_path}
                     for b, by_path in figures.items()})


def print_throughput(figures, baseline="torch"):
  print("\nImages/s of the representation (encoder mean), median [min, max] over rounds; "
        f"ratio = median over rounds of (path / {baseline} in the same round):")
  header = (f"{'batch':>5}  {'path':<12} {'images/s':>9} {'[min, max]':>17}  {'vs ' + baseline:>8}"
            f"  {'ms/call':>7}")
  print(header)
  print("-" * len(header))
  for batch_size, by_path in figures.items():
    for path, rates in by_path.items():
      ratio = ""
      if baseline in by_path:
        ratio = f"{median_ratio(by_path, path, baseline):.2f}x"
      median = statistics.median(rates)
      print(f"{batch_size:>5}  {path:<12} {median:>9.0f} "
            f"[{min(rates):>7.0f}, {max(rates):>7.0f}]  {ratio:>8}  {1000 * batch_size / median:>7.2f}")
    print()


# ---------------------------------------------------------------------------------------------
# The metric suite: the stock dlib_evaluate, instrumented from outside.


class Buckets:
  """Wall and CPU seconds spent in named kinds of work, outermost only (no double counting)."""

  def __init__(self):
    self.wall, self.cpu, self.calls = {}, {}, {}
    self._depth = 0

  @contextlib.contextmanager
  def timing(self, name):
    self._depth += 1
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
      yield
    finally:
      self._depth -= 1
      if self._depth == 0:
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - started
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu_started
        self.calls[name] = self.calls.get(name, 0) + 1

  def wrap(self, name, function):
    @functools.wraps(function)
    def timed(*args, **kwargs):
      with self.timing(name):
        return function(*args, **kwargs)
    return timed


def instrumented_evaluate(report_path, argv):
  """Runs the stock `dlib_evaluate` script with timers around the work it delegates."""
  started = time.perf_counter()
  buckets = Buckets()
  marks = {}
  import lievae_tf  # pylint: disable=g-import-not-at-top,unused-import  # dlib's shims
  from disentanglement_lib.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from sklearn import ensemble, linear_model, svm  # pylint: disable=g-import-not-at-top

  for estimator in (ensemble.GradientBoostingClassifier, linear_model.LogisticRegression,
                    linear_model.LogisticRegressionCV, svm.LinearSVC):
    estimator.fit = buckets.wrap("sklearn fit", estimator.fit)

  get_data = evaluate.named_data.get_named_ground_truth_data

  def timed_data():
    with buckets.timing("load data"):
      dataset = get_data()
    for method in ("sample_factors", "sample_observations_from_factors"):
      setattr(dataset, method, buckets.wrap("sample data", getattr(dataset, method)))
    return dataset

  evaluate.named_data.get_named_ground_truth_data = timed_data
  hub = evaluate.hub  # what dlib calls: frozen_scoring's proxy of tensorflow_hub (see dlib/shims)
  eval_function_for_module = hub.eval_function_for_module

  @contextlib.contextmanager
  def timed_module(*args, **kwargs):
    marks["module_load_start"] = time.perf_counter()
    with eval_function_for_module(*args, **kwargs) as f:
      marks["metric_start"] = time.perf_counter()
      timed_f = buckets.wrap("encode images", f)

      def counted_f(inputs, *args, **kwargs):
        marks["images_encoded"] = marks.get("images_encoded", 0) + len(inputs["images"])
        return timed_f(inputs, *args, **kwargs)

      yield counted_f
      marks["metric_end"] = time.perf_counter()

  hub.eval_function_for_module = timed_module
  sys.argv = [core.command("dlib_evaluate")] + argv
  try:
    runpy.run_path(sys.argv[0], run_name="__main__")
  except SystemExit as exit_:  # absl's app.run exits
    if exit_.code:
      raise
  finally:
    marks["end"] = time.perf_counter()
    with open(report_path, "w") as f:
      json.dump({"started": started, "marks": marks, "wall": buckets.wall, "cpu": buckets.cpu,
                 "calls": buckets.calls}, f)


def run_metric_suite(model_dir, configs, extra_bindings, output_root):
  """Runs each metric config once; returns a list of per-metric timing dicts."""
  rows = []
  for config in configs:
    name = os.path.basename(config)[:-len(".gin")]
    output_dir = os.path.join(output_root, name)
    report_path = os.path.join(output_root, f"{name}.timing.json")
    log_path = os.path.join(output_root, f"{name}.log")
    argv = [f"--input_dir={scoring.representation_dir(model_dir)}", f"--output_dir={output_dir}",
            f"--gin_config={config}", f"--gin_bindings=evaluation.name = '{name}'",
            "--overwrite"] + [f"--gin_bindings={b}" for b in extra_bindings]
    print(f"  {name} ...", end="", flush=True)
    wall, usage, _ = core.run(
        [sys.executable, os.path.abspath(__file__), f"--_evaluate_report={report_path}", "--"] +
        argv, {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}, log_path)
    cpu = usage.ru_utime + usage.ru_stime
    with open(report_path) as f:
      report = json.load(f)
    print(f" {wall:.0f} s", flush=True)
    rows.append(dict(report, name=name, wall_total=wall, cpu_total=cpu,
                     score_file=os.path.join(output_dir, "results", "json",
                                             "evaluation_results.json")))
  return rows


def split_row(row):
  """{part: wall seconds} of one metric run; the parts add up to its wall time."""
  marks, wall = row["marks"], row["wall"]
  metric_span = marks["metric_end"] - marks["metric_start"]
  inside = {k: wall.get(k, 0.0) for k in ("encode images", "sample data", "sklearn fit")}
  load_data = wall.get("load data", 0.0)
  parts = {
      "start-up": marks["module_load_start"] - row["started"] - load_data + (
          row["wall_total"] - (marks["end"] - row["started"])),  # + interpreter start and exit
      "load data": load_data,
      "module load": marks["metric_start"] - marks["module_load_start"],
      **inside,
      "other in metric": metric_span - sum(inside.values()),
      "write results": marks["end"] - marks["metric_end"],
  }
  return parts


def print_metric_suite(rows, standard_sizes=True):
  parts_order = ("start-up", "load data", "module load", "encode images", "sample data", "sklearn fit",
                 "other in metric", "write results")
  sizes = "standard sizes" if standard_sizes else "SIZES BOUND DOWN (a smoke run)"
  print(f"\nThe unsupervised_study_v1 metric suite, {sizes}, stock dlib_evaluate (one run "
        "each); wall seconds by kind of work:")
  short = {"start-up": "startup", "load data": "data", "module load": "modload", "encode images": "encode",
           "sample data": "sample", "sklearn fit": "sklearn", "other in metric": "other",
           "write results": "write"}
  header = (f"{'metric config':<36} {'wall s':>7} {'CPU s':>7} {'CPU/wall':>8} " +
            " ".join(f"{short[p]:>7}" for p in parts_order) + "  dominant")
  print(header)
  print("-" * len(header))
  totals = {p: 0.0 for p in parts_order}
  wall_sum = cpu_sum = 0.0
  for row in rows:
    parts = split_row(row)
    for p in parts_order:
      totals[p] += parts[p]
    wall_sum += row["wall_total"]
    cpu_sum += row["cpu_total"]
    dominant = max(parts_order, key=parts.get)
    print(f"{row['name']:<36} {row['wall_total']:>7.0f} {row['cpu_total']:>7.0f} "
          f"{row['cpu_total'] / row['wall_total']:>8.2f} " +
          " ".join(f"{parts[p]:>7.1f}" for p in parts_order) +
          f"  {dominant} {100 * parts[dominant] / row['wall_total']:.0f}%")
  print("-" * len(header))
  print(f"{'all ' + str(len(rows)) + ' configs':<36} {wall_sum:>7.0f} {cpu_sum:>7.0f} "
        f"{cpu_sum / wall_sum:>8.2f} " + " ".join(f"{totals[p]:>7.1f}" for p in parts_order))
  print("share of the suite's wall time: " + ", ".join(
      f"{p} {100 * totals[p] / wall_sum:.1f}%"
      for p in sorted(parts_order, key=totals.get, reverse=True)))
  print("\nencoding inside each metric: calls, images, seconds, images/s, CPU s:")
  for row in rows:
    images = row["marks"].get("images_encoded", 0)
    seconds = row["wall"].get("encode images", 0.0)
    print(f"  {row['name']:<36} {row['calls'].get('encode images', 0):>6} {images:>7} "
          f"{seconds:7.1f} s {images / max(seconds, 1e-9):7.0f}/s  CPU "
          f"{row['cpu'].get('encode images', 0.0):6.1f} s")


# ---------------------------------------------------------------------------------------------


def main():
  if "--_evaluate_report" in " ".join(sys.argv[1:2]):  # the instrumented dlib_evaluate child
    report_path = sys.argv[1].split("=", 1)[1]
    instrumented_evaluate(report_path, sys.argv[3:])
    return
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", default="runs/bench_representation_model",
                      help="a lievae_train model directory (trained and postprocessed if not)")
  parser.add_argument("--parts", default="throughput",
                      help="comma-separated: throughput, metric_suite")
  parser.add_argument("--paths", default=",".join(PATHS), help=f"of {PATHS}")
  parser.add_argument("--batch_sizes", default="16,64",
                      help="dlib's metrics call the representation at 16 and 64")
  parser.add_argument("--images_per_round", type=int, default=1024)
  parser.add_argument("--rounds", type=int, default=15)
  parser.add_argument("--warmup_rounds", type=int, default=2)
  parser.add_argument("--metric_configs", default="*",
                      help="glob of unsupervised_study_v1/metric_configs names (default all 9)")
  parser.add_argument("--metric_bindings", action="append", default=[],
                      help="extra gin bindings for every metric: for smoke runs only (the "
                      "suite's figures are for the standard sizes)")
  parser.add_argument("--output_root", default=None,
                      help="where the metric suite writes (default: a fresh dir under "
                      "MODEL_DIR/bench_metrics)")
  parser.add_argument("--json", default=None, help="also write every figure to this file")
  parser.add_argument("--json_line", action="store_true",
                      help="print one last JSON line of the median ratios to torch: "
                      '{"batch_16": {"vs_torch": <hub_frozen>, "stock_hub_vs_torch": <hub>}, ...}')
  parser.add_argument("--_worker", choices=PATHS, help=argparse.SUPPRESS)
  parser.add_argument("--_max_images", type=int, default=1024, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args._worker:  # pylint: disable=protected-access
    worker(args._worker, args.model_dir, args._max_images)  # pylint: disable=protected-access
    return

  parts = set(args.parts.split(","))
  unknown = set(args.paths.split(",")) - set(PATHS)
  if unknown:
    parser.error(f"--paths: unknown {sorted(unknown)}; choose from {PATHS}")
  if args.json_line and ("throughput" not in parts or "torch" not in args.paths.split(",")):
    parser.error("--json_line reports ratios to torch: it needs the throughput part and the "
                 "torch path")
  core.trained_model(args.model_dir, {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ},
                     f"{args.model_dir.rstrip('/')}_logs")
  everything = {"model_dir": args.model_dir}
  if "throughput" in parts:
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    paths = args.paths.split(",")
    print(f"throughput: {args.rounds} rounds of {args.images_per_round} images per path and "
          f"batch size, {args.warmup_rounds} warm-up rounds, {THREADS} threads each", flush=True)
    started = time.perf_counter()
    figures = measure_throughput(args.model_dir, paths, batch_sizes, args.images_per_round,
                                 args.rounds, args.warmup_rounds)
    print_throughput(figures, baseline="torch" if "torch" in paths else paths[0])
    print(f"(throughput part took {time.perf_counter() - started:.0f} s)")
    everything["throughput"] = {str(b): v for b, v in figures.items()}
  if "metric_suite" in parts:
    configs = sorted(glob.glob(os.path.join(registry.dlib_config_dir(), "metric_configs",
                                            args.metric_configs + ".gin")))
    if "DISENTANGLEMENT_LIB_DATA" not in os.environ:
      raise SystemExit("set DISENTANGLEMENT_LIB_DATA (the metrics sample the dataset)")
    output_root = args.output_root or tempfile.mkdtemp(
        prefix=time.strftime("%Y%m%d-%H%M%S-"),
        dir=os.makedirs(os.path.join(args.model_dir, "bench_metrics"), exist_ok=True) or
        os.path.join(args.model_dir, "bench_metrics"))
    os.makedirs(output_root, exist_ok=True)
    print(f"metric suite: {len(configs)} configs, outputs and logs in {output_root}", flush=True)
    if args.metric_bindings:
      print(f"  NOT the standard sizes: extra bindings {args.metric_bindings}")
    rows = run_metric_suite(args.model_dir, configs, args.metric_bindings, output_root)
    print_metric_suite(rows, standard_sizes=not args.metric_bindings)
    everything["metric_suite"] = [dict(r, parts=split_row(r)) for r in rows]
  if args.json:
    with open(args.json, "w") as f:
      json.dump(everything, f, indent=1)
  if args.json_line:
    print(json_line(figures))


if __name__ == "__main__":
  main()

"""Images/s and peak memory of the training input pipeline versus dlib's generator pipeline.

Issue 5: the pipeline must never be what the training step waits on. This prints, side by side
from one run (figures drift 10-15 % between runs on a shared machine: read the ratios):

1. The pipeline alone: images/s of `lievae_tf.data.make_input_fn` (one uint8 gather per batch)
   versus dlib's `tf_data_set_from_ground_truth_data` batched as dlib's training batches it (one
   Python generator call per image), on the same full-size grid; warm-up excluded, rounds
   alternate between the two, each round pulls batches for at least --round_seconds. Also the CPU
   time (all threads of the process) each spends per batch.
2. The step does not wait: images/s of the real training step (`LieGroupVAE.fit` with the paper's
   gin config, batch --step_batch) fed by a constant in-memory batch, by the lievae pipeline and by
   dlib's generator pipeline, in alternating rounds of --steps steps, each timed from the end of
   its first step to the end of its last (as in one long `fit`). lievae/constant ~ 1.0 means the
   step never waits on the pipeline; the cores other processes used meanwhile are printed too.
3. Peak memory, each case in a fresh process (Linux VmHWM, reset by /proc/self/clear_refs between
   loading and pipelining): the full dSprites grid (737,280 images, uint8, 3.0 GB) and the
   3DShapes-size grid (480,000 x 64 x 64 x 3 uint8, 5.9 GB) loaded from its h5 by lievae_tf, each
   then run through the pipeline. dlib's own Shapes3D loader is NOT run at full size (it keeps a
   23.6 GB float32 copy on a 24 GB machine): it is measured on a 1/15 fraction of the grid and
   extrapolated per image, beside the lievae h5 loader on the same fraction.

The data are SYNTHETIC full-size grids in the files' formats, written by `lievae_make_data` into
--data_dir if missing (the pipeline's cost does not depend on what the images show).

  source .venv/bin/activate
  python bench/input_pipeline.py --data_dir=runs/bench_data

Takes about 8 minutes on 2 cores (less with --skip_shapes3d); the run needs ~7 GB of RAM free.
Run it alone on the machine: other timed work shares the cores.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

import core

FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", "runs/bench_data",
                    "Where the synthetic datasets are (DISENTANGLEMENT_LIB_DATA layout); missing "
                    "ones are written there (dSprites ~15 s, 3DShapes h5 5.9 GB, a few minutes).")
flags.DEFINE_integer("rounds", 5, "Alternating rounds per comparison (the median is reported).")
flags.DEFINE_float("round_seconds", 2.0, "Minimum seconds each pipeline is pulled per round.")
flags.DEFINE_list("batch_sizes", ["256", "64"], "Batch sizes of the pipeline-alone comparison.")
flags.DEFINE_integer("step_batch", 256, "Batch size of the training-step comparison.")
flags.DEFINE_integer("steps", 30, "Training steps per round of the training-step comparison.")
flags.DEFINE_integer("memory_batches", 50, "Batches pulled through the pipeline in memory cases.")
flags.DEFINE_boolean("skip_shapes3d", False, "Only dSprites (no 5.9 GB 3DShapes grid).")
flags.DEFINE_boolean("skip_step", False, "Skip the training-step comparison.")
flags.DEFINE_string("json", None, "Also write every figure to this JSON file.")
# Internal: the parent runs each case in a fresh process with these.
flags.DEFINE_enum("case", None, ["speed", "memory"], "Internal: run one case in this process.")
flags.DEFINE_enum("loader", "lievae", ["lievae", "dlib_shapes3d"], "Internal: memory case loader.")
flags.DEFINE_string("dataset", None, "Internal: dataset.name of the case.")
flags.DEFINE_string("result_file", None, "Internal: where the case writes its JSON result.")

SEED = 0
DSPRITES_SIZES = "1,3,6,40,32,32"
FRACTION_SIZES = "10,10,10,8,4,1"  # 32,000 images: 1/15 of the 3DShapes grid
FULL_SHAPES3D_IMAGES = 480000
GB = 1e9


# ---------------------------------------------------------------- measuring, in a case process


def _memory():
  """(current RSS, peak RSS since start or the last reset) of this process, in bytes."""
  return core.memory_bytes("VmRSS"), core.memory_bytes("VmHWM")


def _reset_peak_memory():
  # Linux: writing 5 resets VmHWM to the current RSS, so later phases get their own peak.
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: tf.data's too
  return usage.ru_utime + usage.ru_stime


def _machine_busy_seconds():
  """CPU seconds all processes (and the hypervisor's steal) have used since boot."""
  with open("/proc/stat") as stat:
    ticks = [int(t) for t in stat.readline().split()[1:9]]
  user, nice, system, _, _, irq, softirq, steal = ticks
  return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _load(dataset_name):
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  gin.bind_parameter("dataset.name", dataset_name)
  return data_lib.load_ground_truth_data()


def _dlib_batches(ground_truth_data, batch_size):
  """dlib's training input: its per-image generator, batched as its `_make_input_fn` does."""
  from disentanglement_lib.data.ground_truth import util as dlib_util  # pylint: disable=g-import-not-at-top
  return dlib_util.tf_data_set_from_ground_truth_data(ground_truth_data, SEED).batch(
      batch_size, drop_remainder=True)


def _pull(iterator, batch_size, min_seconds):
  """(images/s, CPU ms per batch) of pulling batches for at least min_seconds."""
  batches, cpu_start, start = 0, _cpu_seconds(), time.perf_counter()
  while True:
    next(iterator)
    batches += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds and batches >= 3:
      return batches * batch_size / elapsed, 1000 * (_cpu_seconds() - cpu_start) / batches


def _alternate(runs, rounds):
  """Calls each of runs {name: fn() -> tuple} once per round, in alternating order."""
  names = list(runs)
  results = {name: [] for name in names}
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      results[name].append(runs[name]())
  return results


def _pipeline_comparison(ground_truth_data, batch_size):
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  iterators = {
      "lievae": iter(data_lib.make_input_fn(ground_truth_data, batch_size, SEED)()),
      "dlib": iter(_dlib_batches(ground_truth_data, batch_size)),
  }
  for iterator in iterators.values():  # warm-up: thread pools, tracing, autotuning
    _pull(iterator, batch_size, 0.5)
  return _alternate({name: (lambda it=it: _pull(it, batch_size, FLAGS.round_seconds))
                     for name, it in iterators.items()}, FLAGS.rounds)


def _step_comparison(ground_truth_data, dataset_name):
  """Images/s of the training step under each feed, and its CPU ms per step."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  # The paper's model for this dataset (shapes3d: 400-dim group features, l2 loss), as
  # lievae_train builds it.
  gin_file = {"dsprites_full": "dsprites.gin", "shapes3d": "shapes3d.gin"}[dataset_name]
  built = core.build([core.gin_config(gin_file)],
                     image_shape=data_lib.observation_shape(ground_truth_data))
  batch_size, vae, strategy = FLAGS.step_batch, built.vae, built.strategy
  input_fn = data_lib.make_input_fn(ground_truth_data, batch_size, SEED)
  constant = next(iter(input_fn()))
  feeds = {
      "constant": strategy.distribute_datasets_from_function(
          lambda _: tf.data.Dataset.from_tensors(constant).repeat()),
      "lievae": strategy.distribute_datasets_from_function(input_fn),
      "dlib": strategy.distribute_datasets_from_function(
          lambda _: _dlib_batches(ground_truth_data, batch_size)),
  }
  for feed in feeds.values():  # tracing, and the first steps' allocations
    vae.fit(feed, epochs=1, steps_per_epoch=3, verbose=0)

  class StepClock(keras.callbacks.Callback):
    """(wall, own CPU, machine busy) seconds at the end of each training step."""

    def __init__(self):
      super().__init__()
      self.ends = []

    def on_train_batch_end(self, batch, logs=None):
      self.ends.append((time.perf_counter(), _cpu_seconds(), _machine_busy_seconds()))

  def fit(feed):
    """(images/s, CPU ms per step of this process, cores other processes used meanwhile).

    Timed from the end of the first step to the end of the last, as a long training runs:
    each `fit` call's own start and teardown (up to seconds here, whatever feeds it) are left out.
    """
    clock = StepClock()
    vae.fit(feed, epochs=1, steps_per_epoch=FLAGS.steps, verbose=0, callbacks=[clock])
    (wall_0, cpu_0, busy_0), (wall_1, cpu_1, busy_1) = clock.ends[0], clock.ends[-1]
    steps, elapsed, cpu = len(clock.ends) - 1, wall_1 - wall_0, cpu_1 - cpu_0
    others = (busy_1 - busy_0 - cpu) / elapsed
    return steps * batch_size / elapsed, 1000 * cpu / steps, max(others, 0.0)

  return _alternate({name: (lambda f=feed: fit(f)) for name, feed in feeds.items()},
                    FLAGS.rounds)


def _speed_case():
  started = time.perf_counter()
  ground_truth_data = _load(FLAGS.dataset)
  print(f"  loaded {FLAGS.dataset} in {time.perf_counter() - started:.0f} s", flush=True)
  result = {"pipeline": {}}
  for batch_size in map(int, FLAGS.batch_sizes):
    result["pipeline"][batch_size] = _pipeline_comparison(ground_truth_data, batch_size)
    print(f"  pipeline comparison at batch {batch_size} done", flush=True)
  if not FLAGS.skip_step:
    result["step"] = _step_comparison(ground_truth_data, FLAGS.dataset)
  return result


def _memory_case():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  tf.constant(0.0) + 1.0  # start TF's runtime before the baseline
  before_load, _ = _memory()
  _reset_peak_memory()
  if FLAGS.loader == "dlib_shapes3d":
    from disentanglement_lib.data.ground_truth import shapes3d  # pylint: disable=g-import-not-at-top
    # dlib's own loader (float32 copy of the grid), not the lean one `lievae_tf.dlib.speedups` puts in its place.
    ground_truth_data = getattr(shapes3d.Shapes3D, "dlib_class", shapes3d.Shapes3D)()
  else:
    ground_truth_data = _load(FLAGS.dataset)
  after_load, peak_load = _memory()
  images = ground_truth_data.images
  result = dict(before_load=before_load, peak_load=peak_load, after_load=after_load,
                num_images=len(images), grid_bytes=images.nbytes, grid_dtype=str(images.dtype))
  if FLAGS.loader == "lievae":
    _reset_peak_memory()
    batches = data_lib.make_input_fn(ground_truth_data, FLAGS.step_batch, SEED)()
    for _ in batches.take(FLAGS.memory_batches):
      pass
    result["after_pipeline"], result["peak_pipeline"] = _memory()
  return result


def _run_case():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import
  from lievae_tf import training  # pylint: disable=g-import-not-at-top,unused-import  (gin scopes)
  result = _speed_case() if FLAGS.case == "speed" else _memory_case()
  with open(FLAGS.result_file, "w") as f:
    json.dump(result, f)


# ---------------------------------------------------------------- orchestrating, in the parent


def _make_data(command, what, path):
  if os.path.exists(path):
    return
  print(f"{path} is missing: writing {what} (SYNTHETIC, in the real file's format) with "
        f"`{' '.join(command)}` ...", flush=True)
  started = time.perf_counter()
  subprocess.run(command, check=True)
  print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)


def _prepare_data(data_dir):
  from lievae_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  make_data = core.command("lievae_make_data")
  os.makedirs(data_dir, exist_ok=True)
  _make_data([make_data, f"--output_dir={data_dir}", f"--factor_sizes={DSPRITES_SIZES}"],
             "the full-size dSprites grid (737,280 images)",
             synthetic.dsprites_path(data_dir))
  if FLAGS.skip_shapes3d:
    return
  _make_data([make_data, "--dataset=shapes3d", f"--output_dir={data_dir}"],
             "the full-size 3DShapes grid (480,000 images, 5.9 GB)",
             os.path.join(data_dir, "3dshapes", "3dshapes.h5"))
  fraction_dir = _fraction_dir(data_dir)
  _make_data([make_data, "--dataset=shapes3d", f"--output_dir={fraction_dir}",
              f"--factor_sizes={FRACTION_SIZES}", "--dlib_npz"],
             "a 1/15 3DShapes grid (32,000 images) and dlib's npz of it",
             os.path.join(fraction_dir, "3dshapes", "3dshapes.h5"))


def _fraction_dir(data_dir):
  return os.path.join(data_dir, "shapes3d_fraction")


def _case(name, data_root, *args):
  """Runs one case in a fresh process; returns its result dict."""
  print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    result_file = os.path.join(tmp, "result.json")
    env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=data_root, TF_CPP_MIN_LOG_LEVEL="2")
    passed = [FLAGS[flag].serialize() for flag in
              ("rounds", "round_seconds", "batch_sizes", "step_batch", "steps",
               "memory_batches", "skip_step")]
    # tensorflow_hub's pkg_resources warning would print once per case.
    subprocess.run([sys.executable, "-W", "ignore:pkg_resources is deprecated:UserWarning",
                    os.path.abspath(__file__), f"--result_file={result_file}",
                    *passed, *args], env=env, check=True)
    with open(result_file) as f:
      return json.load(f)


def _spread(values):
  return statistics.median(values), min(values), max(values)


def _rate(values):
  median, low, high = _spread(values)
  return f"{median:>9,.0f} [{low:,.0f}-{high:,.0f}]"


def _median(pairs, index):
  return _spread([pair[index] for pair in pairs])[0]


def _print_pipeline_table(speed):
  print(f"\n== 1. The input pipeline alone: images/s, median [min-max] of {FLAGS.rounds} "
        f"alternating rounds of >= {FLAGS.round_seconds:g} s ==")
  print(f"{'dataset':14s} {'batch':>5s}  {'lievae make_input_fn':>28s}  "
        f"{'dlib generator, batched':>26s}  {'ratio':>6s}  {'CPU ms/batch lievae | dlib':>26s}")
  for dataset, result in speed.items():
    for batch_size, runs in result["pipeline"].items():
      lievae = [run[0] for run in runs["lievae"]]
      dlib = [run[0] for run in runs["dlib"]]
      ratio = _spread(lievae)[0] / _spread(dlib)[0]
      cpu = f"{_median(runs['lievae'], 1):.1f} | {_median(runs['dlib'], 1):.0f}"
      print(f"{dataset:14s} {batch_size:>5s}  {_rate(lievae):>28s}  {_rate(dlib):>26s}  "
            f"{ratio:>5.1f}x  {cpu:>26s}")


def _print_step_table(speed):
  print(f"\n== 2. The training step (LieGroupVAE.fit, paper's gin config, batch "
        f"{FLAGS.step_batch}) by what feeds it: images/s, median [min-max] of {FLAGS.rounds} "
        f"alternating rounds of {FLAGS.steps} steps, timed from the first step's end ==")
  print(f"{'dataset':14s}  {'constant batch':>24s}  {'lievae pipeline':>24s}  "
        f"{'dlib generator':>24s}  {'lievae/const':>12s}  {'dlib/const':>10s}")
  for dataset, result in speed.items():
    if "step" not in result:
      continue
    rates = {name: [run[0] for run in runs] for name, runs in result["step"].items()}
    constant = _spread(rates["constant"])[0]
    # Per round: each feed against the constant batch of the same round.
    per_round = {name: _spread([a / b for a, b in zip(rates[name], rates["constant"])])[0]
                 for name in ("lievae", "dlib")}
    print(f"{dataset:14s}  {_rate(rates['constant']):>24s}  {_rate(rates['lievae']):>24s}  "
          f"{_rate(rates['dlib']):>24s}  {per_round['lievae']:>12.3f}  {per_round['dlib']:>10.3f}")
    cpu = {name: _median(runs, 1) for name, runs in result["step"].items()}
    print(f"{'':14s}  CPU per step (all threads): constant {cpu['constant']:.0f} ms, lievae "
          f"{cpu['lievae']:.0f} ms, dlib {cpu['dlib']:.0f} ms")
    # Rounds slowed by other processes show here, not as extra CPU of our own.
    others = "; ".join(f"{name} " + " ".join(f"{run[2]:.2f}" for run in runs)
                       for name, runs in result["step"].items())
    print(f"{'':14s}  cores used by other processes, per round: {others}")
    pipeline = result["pipeline"].get(str(FLAGS.step_batch))
    if pipeline:
      alone = _spread([run[0] for run in pipeline["lievae"]])[0]
      cpu_batch = _median(pipeline["lievae"], 1)
      step_ms = 1000 * FLAGS.step_batch / constant
      print(f"{'':14s}  pipeline alone is {alone / constant:,.0f}x the step's rate; it costs "
            f"{cpu_batch:.1f} CPU ms per batch against a {step_ms:.0f} ms step "
            f"({100 * cpu_batch / step_ms:.1f} % of one step's wall time on one core)")


def _print_memory_table(memory):
  print("\n== 3. Memory (GB = 1e9 bytes; each case a fresh process; peak = VmHWM, reset between "
        "phases) ==")
  print(f"{'case':44s} {'grid array':>16s} {'RSS before':>10s} {'peak load':>10s} "
        f"{'RSS loaded':>10s} {'peak pipeline':>13s}")
  for name, m in memory.items():
    grid = f"{m['grid_bytes'] / GB:.2f} {m['grid_dtype']}"
    pipeline = f"{m['peak_pipeline'] / GB:.2f}" if "peak_pipeline" in m else "-"
    print(f"{name:44s} {grid:>16s} {m['before_load'] / GB:>10.2f} {m['peak_load'] / GB:>10.2f} "
          f"{m['after_load'] / GB:>10.2f} {pipeline:>13s}")
  dlib, lievae = memory.get("dlib Shapes3D, 1/15 grid (npz)"), memory.get(
      "lievae 3DShapes h5, 1/15 grid")
  if dlib and lievae:
    def full_size(m, key):
      return (m[key] - m["before_load"]) / m["num_images"] * FULL_SHAPES3D_IMAGES / GB
    print(f"Extrapolated per image to 480,000 images (above the process's baseline): dlib's "
          f"Shapes3D peak {full_size(dlib, 'peak_load'):.1f} GB, held "
          f"{full_size(dlib, 'after_load'):.1f} GB; lievae's h5 loader peak "
          f"{full_size(lievae, 'peak_load'):.1f} GB, held {full_size(lievae, 'after_load'):.1f} GB.")
    print("From dlib's source (shapes3d.py): np.load keeps the uint8 npz images (5.9 GB) while "
          "`.astype(np.float32) / 255.` builds the float32 grid (23.6 GB): >= 29.5 GB at peak, "
          "23.6 GB held; not run at full size here (24 GB of RAM).")


def _orchestrate():
  started = time.perf_counter()
  data_dir = os.path.abspath(FLAGS.data_dir)
  print(f"lievae_tf input-pipeline benchmark; data in {data_dir}; load average "
        f"{os.getloadavg()[0]:.2f} (others' load skews the figures)", flush=True)
  _prepare_data(data_dir)
  datasets = ["dsprites_full"] + ([] if FLAGS.skip_shapes3d else ["shapes3d"])
  speed = {name: _case(f"speed: {name}", data_dir, "--case=speed", f"--dataset={name}")
           for name in datasets}
  memory = {"lievae dSprites (dlib's loader), full grid":
            _case("memory: dSprites", data_dir, "--case=memory", "--dataset=dsprites_full")}
  if not FLAGS.skip_shapes3d:
    memory["lievae 3DShapes h5, full grid"] = _case(
        "memory: 3DShapes h5", data_dir, "--case=memory", "--dataset=shapes3d")
    fraction_dir = _fraction_dir(data_dir)
    memory["lievae 3DShapes h5, 1/15 grid"] = _case(
        "memory: 3DShapes h5, 1/15", fraction_dir, "--case=memory", "--dataset=shapes3d")
    memory["dlib Shapes3D, 1/15 grid (npz)"] = _case(
        "memory: dlib Shapes3D, 1/15", fraction_dir, "--case=memory", "--dataset=shapes3d",
        "--loader=dlib_shapes3d")
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(dict(speed=speed, memory=memory, flags={
          name: FLAGS[name].value for name in ("rounds", "round_seconds", "batch_sizes",
                                               "step_batch", "steps", "memory_batches")}), f,
                indent=1)
  print("\nSYNTHETIC data of the real grids' sizes and formats. Rates are of this machine now: "
        "compare within a row.")
  _print_pipeline_table(speed)
  if not FLAGS.skip_step:
    _print_step_table(speed)
  _print_memory_table(memory)
  print(f"\nTotal {time.perf_counter() - started:.0f} s; load average at the end "
        f"{os.getloadavg()[0]:.2f}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if FLAGS.case:
    _run_case()
  else:
    _orchestrate()


if __name__ == "__main__":
  app.run(main)

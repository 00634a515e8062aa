"""The speed a user sees: `lievae_train` with the shipped gin files against the bare step, one run.

  source .venv/bin/activate
  python bench/end_to_end.py --json                 # {"dsprites": {"end_to_end_vs_step": ...}, ...}
  python bench/end_to_end.py --without all          # + each per-step feature switched off alone

End to end: the real `lievae_train` command with `gin_configs/<setting>.gin`, only
`model.training_steps`, `model.batch_size` and `model.eval_steps` shortened by --gin_bindings
(logging, checkpoints and images at the gin files' defaults), on a small SYNTHETIC grid in the real
file format (dSprites .npz, 3dshapes.h5). Its images/s are the run's own: the `images_per_second`
TensorBoard scalars it logs every `training.log_every` steps, over every window after the first
(the first holds the warm-up), so everything a step costs in a real run is in them, the checkpoint
and the pictures of step 1,000 included (the default --steps 1,100 reaches them).

The bare step: the same model (the gin file's settings) with Keras' Adam and zero biases, trained by
Keras `fit` from the real input pipeline in uniform order, without any callback but a clock, in a
warm worker process. It is timed just before and just after every end-to-end run, and each run's
ratio is to the mean of the two, so that load from elsewhere on the machine hits both alike; the
medians of the rounds are reported.

`--without`: end-to-end runs with one feature of the shipped configuration switched off each (gin
bindings where a gin option exists; otherwise the callback is left out by a runner that starts
the same `bin/lievae_train` with that callback class replaced by one without a per-step hook).
"""

import argparse
import glob
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position (its grids)

REPO = train_throughput.REPO
SETTINGS = train_throughput.SETTINGS
LIEVAE_TRAIN = os.path.join(REPO, "bin", "lievae_train")

# What the bare step leaves out of the shipped gin files.
BARE_BINDINGS = ("optimizer.epsilon_placement = 'keras'", "LieGroupVAE.bias_init = 'zeros'",
                 "training.batch_order = 'uniform'")

# Each per-step feature of the shipped configuration, and how it is switched off alone: gin
# bindings, or callback classes of `lievae_tf.training.callbacks` the runner replaces.
FEATURES = {
    "pytorch_adam": dict(bindings=["optimizer.epsilon_placement = 'keras'"]),
    "epoch_batches": dict(bindings=["training.batch_order = 'uniform'"]),
    "pytorch_bias_init": dict(bindings=["LieGroupVAE.bias_init = 'zeros'"]),
    "image_logging": dict(bindings=["training.image_every = 0"]),
    "checkpoints": dict(bindings=["training.checkpoint_every = 1000000000"]),
    # Logged once, at the last step: the run's figure is then that one window (after step 1).
    "scalar_logging": dict(bindings=["training.log_every = {steps}"]),
    "progress_bar": dict(callbacks=["ProgressBar"]),
    "stop_signal_callback": dict(callbacks=["CheckpointOnStopSignal"]),
    "non_finite_check": dict(callbacks=["StopOnNonFiniteLoss"]),
}


# The bare step's worker.


def step_worker(setting, batch, data_dir):
  """Serves `run N` (seconds for N steps after one more untimed) on stdin until `quit`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf import models, training  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top

  os.environ["DISENTANGLEMENT_LIB_DATA"] = data_dir
  training.parse_gin([os.path.join(REPO, "gin_configs", SETTINGS[setting]["gin"])],
                     list(BARE_BINDINGS))
  ground_truth_data = data_lib.load_ground_truth_data()
  image_shape = data_lib.observation_shape(ground_truth_data)
  strategy = tf.distribute.get_strategy()  # what lievae_train's "auto" picks without a GPU
  vae = training.build_model(models.LieGroupVAE, image_shape, 0)
  dataset = strategy.distribute_datasets_from_function(
      data_lib.make_input_fn(ground_truth_data, batch, seed=0))
  gin.clear_config()
  step_ends = []
  clock = tf.keras.callbacks.LambdaCallback(
      on_train_batch_end=lambda batch, logs: step_ends.append(time.perf_counter()))

  def run(steps):
    # From the end of the first step to the end of the last, inside one `fit` (as a run pays
    # `fit`'s set-up once).
    step_ends.clear()
    vae.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock])
    return step_ends[-1] - step_ends[0]

  train_throughput.serve(run, peak=lambda: None)


class StepWorker:
  def __init__(self, setting, batch, data_dir):
    command = [sys.executable, os.path.abspath(__file__), "--step_worker", setting,
               "--batch", str(batch), "--data_dir", data_dir]
    self.stderr = tempfile.TemporaryFile("w+")
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=self.stderr, text=True,
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    self.ask()  # "ready"

  def ask(self, command=None):
    if command:
      self.process.stdin.write(command + "\n")
      self.process.stdin.flush()
    for line in self.process.stdout:
      if line.startswith(train_throughput.REPLY):
        return json.loads(line[len(train_throughput.REPLY):])
    self.stderr.seek(0)
    raise RuntimeError("the step worker died: " + self.stderr.read()[-3000:])

  def close(self):
    if self.process.poll() is None:
      self.process.stdin.write("quit\n")
      self.process.stdin.close()
      self.process.wait()
    self.stderr.close()


# End to end.


def runner(replaced, argv):
  """Runs bin/lievae_train with `argv`, each callback class named in `replaced` swapped for one
  without a per-step hook (what the run needs of it otherwise kept)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import callbacks  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top

  class NoBar(tf.keras.callbacks.Callback):
    def __init__(self, *args, **kwargs):
      super().__init__()
      self.bar = type("Closed", (), {"close": lambda self: None})()

  class NoStopSignalCheck(tf.keras.callbacks.Callback):
    def __init__(self, received, manager, strategy):
      super().__init__()
      self.any_worker = strategy_lib.AnyWorker(strategy)  # run.fit asks it once, at the end

  stand_ins = {"ProgressBar": NoBar, "CheckpointOnStopSignal": NoStopSignalCheck,
               "StopOnNonFiniteLoss": tf.keras.callbacks.Callback}
  for name in replaced:
    setattr(callbacks, name, stand_ins[name])
  sys.argv = [LIEVAE_TRAIN] + argv
  runpy.run_path(LIEVAE_TRAIN, run_name="__main__")


def read_images_per_second(model_dir):
  """(images/s over every logged window after the first, [(step, images/s) of each window])."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (events,) = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
  accumulator = event_accumulator.EventAccumulator(
      events, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  windows = [(e.step, float(tf.make_ndarray(e.tensor_proto)))
             for e in accumulator.Tensors("images_per_second")]
  return windows


def after_warm_up(windows, first_step):
  """Images/s over the windows after the first: total steps / total seconds (a rate each)."""
  steps = [b - a for a, b in zip([first_step] + [s for s, _ in windows], [s for s, _ in windows])]
  timed = list(zip(steps, (rate for _, rate in windows)))[1:] or list(zip(steps, (
      rate for _, rate in windows)))  # one window only (scalar logging off): that one
  seconds = sum(n / rate for n, rate in timed)
  return sum(n for n, _ in timed) / seconds


def end_to_end(setting, batch, steps, data_dir, work_dir, feature=None, log_every=None):
  """One `lievae_train` run; returns its images/s after warm-up and its windows."""
  model_dir = tempfile.mkdtemp(prefix=f"{setting}_{feature or 'shipped'}_", dir=work_dir)
  bindings = [f"model.training_steps = {steps}", f"model.batch_size = {batch}",
              "model.eval_steps = 1"]
  spec = FEATURES.get(feature, {})
  if log_every:
    bindings.append(f"training.log_every = {log_every}")
  bindings += [b.format(steps=steps) for b in spec.get("bindings", [])]
  argv = [f"--model_dir={model_dir}",
          f"--gin_config={os.path.join(REPO, 'gin_configs', SETTINGS[setting]['gin'])}"]
  argv += [f"--gin_bindings={b}" for b in bindings]
  if spec.get("callbacks"):
    command = [sys.executable, os.path.abspath(__file__), "--runner",
               ",".join(spec["callbacks"]), "--"] + argv
  else:
    command = [sys.executable, LIEVAE_TRAIN] + argv
  result = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "DISENTANGLEMENT_LIB_DATA": data_dir})
  if result.returncode:
    raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-3000:]}")
  windows = read_images_per_second(model_dir)
  # The first window starts after step 1 (the tracing step).
  return after_warm_up(windows, 1), windows


def measure(setting, args):
  """Rounds of [step, end to end, step, end to end without f1, step, ...]."""
  worker = StepWorker(setting, args.batch, args.data_dir)
  runs = [None] + args.without
  ratios = {run: [] for run in runs}
  rates = {run: [] for run in runs}
  step_rates = []
  try:
    worker.ask(f"run {args.warmup_steps}")
    for _ in range(args.rounds):
      before = args.step_steps * args.batch / worker.ask(f"run {args.step_steps}")
      for run in runs:
        rate, _ = end_to_end(setting, args.batch, args.steps, args.data_dir, args.work_dir, run,
                             args.log_every)
        after = args.step_steps * args.batch / worker.ask(f"run {args.step_steps}")
        step_rate = (before + after) / 2
        rates[run].append(rate)
        ratios[run].append(rate / step_rate)
        step_rates.append(step_rate)
        before = after
  finally:
    worker.close()
  result = dict(end_to_end_vs_step=statistics.median(ratios[None]),
                end_to_end_vs_step_rounds=ratios[None],
                end_to_end_images_per_s=statistics.median(rates[None]),
                step_images_per_s=statistics.median(step_rates))
  if args.without:
    result["without"] = {f: dict(vs_step=statistics.median(ratios[f]), rounds=ratios[f],
                                 images_per_s=statistics.median(rates[f]))
                         for f in args.without}
  return result


def print_table(setting, result, args):
  print(f"\n{setting}, batch {args.batch}, {args.steps} steps a run: bare step "
        f"{result['step_images_per_s']:.0f} img/s (median)")
  print(f"  {'run':28s} {'img/s':>7s} {'vs bare step: median':>21s}  rounds")
  rows = [("lievae_train as shipped", result["end_to_end_images_per_s"],
           result["end_to_end_vs_step"], result["end_to_end_vs_step_rounds"])]
  rows += [(f"  without {f}", r["images_per_s"], r["vs_step"], r["rounds"])
           for f, r in result.get("without", {}).items()]
  for name, rate, ratio, rounds in rows:
    print(f"  {name:28s} {rate:7.0f} {ratio:21.3f}  {' '.join(f'{x:.3f}' for x in rounds)}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--settings", default="dsprites,shapes3d")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=1100,
                      help="steps of each lievae_train run (1,100 reaches the default "
                      "checkpoint and pictures of step 1,000)")
  parser.add_argument("--step_steps", type=int, default=200,
                      help="bare steps timed before and after each run")
  parser.add_argument("--warmup_steps", type=int, default=10)
  parser.add_argument("--log_every", type=int,
                      help="training.log_every of the runs (default: the gin files', 100)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--without", default="",
                      help=f"comma-separated features to switch off, one a run, or 'all': "
                      f"{', '.join(FEATURES)}")
  parser.add_argument("--data_dir", help="where the synthetic grids are written (default: a "
                      "temporary directory)")
  parser.add_argument("--json", action="store_true", help="print one JSON line: {setting: "
                      "{end_to_end_vs_step, ...}}")
  parser.add_argument("--step_worker", help=argparse.SUPPRESS)
  parser.add_argument("--runner", help=argparse.SUPPRESS)
  args, rest = parser.parse_known_args()

  if args.runner:
    runner(args.runner.split(","), [a for a in rest if a != "--"])
    return
  if args.step_worker:
    step_worker(args.step_worker, args.batch, args.data_dir)
    return

  settings = args.settings.split(",")
  args.without = (list(FEATURES) if args.without == "all" else
                  [f for f in args.without.split(",") if f])
  unknown = [s for s in settings if s not in SETTINGS] + [
      f for f in args.without if f not in FEATURES]
  if unknown or rest:
    parser.error(f"unknown {unknown or rest}: settings are {', '.join(SETTINGS)}; features are "
                 f"{', '.join(FEATURES)}")
  with tempfile.TemporaryDirectory(prefix="lievae_e2e_") as temporary:
    args.data_dir = args.data_dir or os.path.join(temporary, "data")
    args.work_dir = os.path.join(temporary, "runs")
    os.makedirs(args.work_dir)
    for setting in settings:  # written once, before any clock runs
      train_throughput._write_data(args.data_dir, setting)  # pylint: disable=protected-access
    everything = {}
    for setting in settings:
      everything[setting] = measure(setting, args)
      if not args.json:
        print_table(setting, everything[setting], args)
  if args.json:
    print(json.dumps(everything))
  else:
    print(f"\n{args.rounds} rounds; every ratio is to the bare step timed ({args.step_steps} "
          "steps) just before and after the same run.")


if __name__ == "__main__":
  main()

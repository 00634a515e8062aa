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
warm worker process. It runs *during* each end-to-end run, in time slices: the bench lets
`lievae_train` run for `--slice_seconds`, stops it (SIGSTOP), times the bare step for about as long,
lets `lievae_train` go on (SIGCONT), and so on, so the two never compute at once and load from
elsewhere on the machine, which drifts 10-30 % over a minute here, hits both alike. A logged window
of `lievae_train` then spans its own work and the pauses inside it; the bench knows each pause and
takes it out (the window's end is its TensorBoard event's wall time). The ratio of a run is its
images/s after warm-up to the bare step's over the same span; the medians of the rounds are reported.

`--without`: end-to-end runs with one feature of the shipped configuration switched off each (gin
bindings where a gin option exists; otherwise the callback is left out by a runner that starts
the same `bin/lievae_train` with that callback class replaced by one without a per-step hook).
"""

import argparse
import glob
import json
import os
import runpy
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import core

SETTINGS = core.SETTINGS

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
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top

  os.environ["DISENTANGLEMENT_LIB_DATA"] = data_dir
  built = core.build([core.gin_config(SETTINGS[setting]["gin"])], BARE_BINDINGS)
  vae, dataset = built.vae, core.input_dataset(built, batch)
  step_ends = []
  clock = keras.callbacks.LambdaCallback(
      on_train_batch_end=lambda batch, logs: step_ends.append(time.perf_counter()))

  def run(steps):
    # From the end of the first step to the end of the last, inside one `fit` (as a run pays
    # `fit`'s set-up once).
    step_ends.clear()
    vae.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock])
    return step_ends[-1] - step_ends[0]

  core.serve({"run": run})


# Per-step costs one by one, in one process (--parts micro).


def _median_seconds(function, repeats, rounds=5):
  """Median over `rounds` of the seconds per call of `function` called `repeats` times."""
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(repeats):
      function()
    times.append((time.perf_counter() - start) / repeats)
  return statistics.median(times)


def micro_costs(setting, batch, data_dir):
  """ms a step of each feature of the shipped configuration, timed alone beside the bare step:
  each callback's hook on a step where it has nothing to do and, per event, where it acts; Adam's
  update in both forms; the input pipeline's CPU time per batch in both orders."""
  import threading  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  from lievae_tf import visualize  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import adam as adam_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top

  os.environ["DISENTANGLEMENT_LIB_DATA"] = data_dir
  vae, data, _, options, strategy = core.build([core.gin_config(SETTINGS[setting]["gin"])])
  costs = {}

  # The bare step, for scale (through fit, no callback but the clock).
  dataset = data_lib.make_input_fn(data, batch, seed=0)()
  step_ends = []
  clock = keras.callbacks.LambdaCallback(
      on_train_batch_end=lambda b, logs: step_ends.append(time.perf_counter()))
  vae.fit(dataset, epochs=1, steps_per_epoch=5, verbose=0)
  vae.fit(dataset, epochs=1, steps_per_epoch=31, verbose=0, callbacks=[clock])
  costs["bare_step_ms"] = 1e3 * statistics.median(np.diff(step_ends))

  # Callbacks, as lievae_train makes them, at a step where none acts (iterations = 1).
  work = tempfile.mkdtemp(prefix="lievae_micro_")
  writer = tf.summary.create_file_writer(work)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=vae, optimizer=vae.optimizer),
                                       work, max_to_keep=1)
  made = {
      "non_finite_check": callbacks_lib.StopOnNonFiniteLoss(),
      "scalar_logging": callbacks_lib.ScalarLogger(writer, options["log_every"], batch),
      "checkpoints": callbacks_lib.PeriodicCheckpoint(manager, options["checkpoint_every"]),
      "stop_signal_callback": callbacks_lib.CheckpointOnStopSignal(threading.Event(), manager,
                                                                   strategy),
      "progress_bar": callbacks_lib.ProgressBar(10**9, 0, options["log_every"], batch),
      "image_logging": callbacks_lib.ImageLogger(writer, options["image_every"],
                                                 visualize.sample_images(data, 0)),
  }
  logs = {name: tracker.result() for name, tracker in vae.trackers.items()}
  per_step, per_event = {}, {}
  for name, callback in made.items():
    callback.set_model(vae)
    callback.set_params({"steps": 10**9, "epochs": 1, "verbose": 0})
    vae.optimizer.iterations.assign(1)
    callback.on_epoch_begin(0)
    # Batch 0 of an epoch begun at step 1: step 2, where none of them acts.
    per_step[name] = 1e3 * _median_seconds(lambda c=callback: c.on_train_batch_end(0, logs), 500)
  made["progress_bar"].bar.close()
  for name, every in (("scalar_logging", options["log_every"]),
                      ("checkpoints", options["checkpoint_every"]),
                      ("image_logging", options["image_every"])):
    vae.optimizer.iterations.assign(999)
    made[name].on_epoch_begin(0)  # batch 0 is then step 1,000, where all three act
    made[name].on_train_batch_end(0, logs)  # the first pays for tracing (once a run)
    event_ms = 1e3 * _median_seconds(lambda c=made[name]: c.on_train_batch_end(0, logs), 1, 5)
    per_event[name] = dict(ms_per_event=event_ms, every=every, ms_per_step=event_ms / every)
  costs["callback_ms_per_step_idle"] = per_step
  costs["callback_events"] = per_event

  # Adam: the update of every variable, from fixed gradients, in one tf.function.
  variables = vae.trainable_variables
  gradients = [tf.random.normal(v.shape) * 1e-3 for v in variables]
  updates = {}
  for placement in adam_lib.EPSILON_PLACEMENTS:
    optimizer = adam_lib.make_adam(1e-4, 0.9, 0.999, 1e-8, placement)
    optimizer.build(variables)
    updates[placement] = tf.function(
        lambda o=optimizer: o.apply_gradients(zip(gradients, variables)))
    updates[placement]()
  adam_ms = {placement: [] for placement in updates}
  for _ in range(7):  # interleaved rounds: load from elsewhere hits both alike
    for placement, update in updates.items():
      adam_ms[placement].append(1e3 * _median_seconds(update, 20, rounds=1))
  costs["adam_update_ms"] = {p: statistics.median(ms) for p, ms in adam_ms.items()}

  # The input pipeline alone: CPU seconds per batch (it runs beside the step on the same cores).
  pipeline = {}
  for order in ("uniform", "epochs"):
    iterator = iter(data_lib.make_input_fn(data, batch, seed=0, order=order)())
    for _ in range(20):
      next(iterator)
    start_cpu, start = time.process_time(), time.perf_counter()
    for _ in range(300):
      next(iterator)
    pipeline[order] = dict(cpu_ms_per_batch=1e3 * (time.process_time() - start_cpu) / 300,
                           wall_ms_per_batch=1e3 * (time.perf_counter() - start) / 300)
  costs["pipeline"] = pipeline
  return costs


# End to end.


def runner(replaced, argv):
  """Runs bin/lievae_train with `argv`, each callback class named in `replaced` swapped for one
  without a per-step hook (what the run needs of it otherwise kept)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import callbacks  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top

  class NoBar(keras.callbacks.Callback):
    def __init__(self, *args, **kwargs):
      super().__init__()
      self.bar = type("Closed", (), {"close": lambda self: None})()

  class NoStopSignalCheck(keras.callbacks.Callback):
    def __init__(self, received, manager, strategy):
      super().__init__()
      self.any_worker = strategy_lib.AnyWorker(strategy)  # run.fit asks it once, at the end

  stand_ins = {"ProgressBar": NoBar, "CheckpointOnStopSignal": NoStopSignalCheck,
               "StopOnNonFiniteLoss": keras.callbacks.Callback}
  for name in replaced:
    setattr(callbacks, name, stand_ins[name])
  sys.argv = [core.command("lievae_train")] + argv
  runpy.run_path(sys.argv[0], run_name="__main__")


def read_images_per_second(model_dir):
  """[(step, images/s, wall time of the event)] of each logged window, in order."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (events,) = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
  accumulator = event_accumulator.EventAccumulator(
      events, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return [(e.step, float(tf.make_ndarray(e.tensor_proto)), e.wall_time)
          for e in accumulator.Tensors("images_per_second")]


def _overlap(begin, end, intervals):
  return sum(max(0.0, min(end, b) - max(begin, a)) for a, b in intervals)


def active_rates(windows, first_step, batch, pauses):
  """Each logged window's images/s with the bench's pauses inside it taken out.

  A window's rate was logged over its wall-clock seconds, which ended at its event's wall time;
  `pauses` are the (stopped, continued) wall times of the run. Returns [(step, images/s)]."""
  rates, previous = [], first_step
  for step, rate, wall_time in windows:
    seconds = (step - previous) * batch / rate
    active = seconds - _overlap(wall_time - seconds, wall_time, pauses)
    rates.append((step, (step - previous) * batch / active))
    previous = step
  return rates


def after_warm_up(windows, first_step):
  """Images/s over the windows after the first: total steps / total seconds (a rate each)."""
  steps = [b - a for a, b in zip([first_step] + [s for s, _ in windows], [s for s, _ in windows])]
  timed = list(zip(steps, (rate for _, rate in windows)))[1:] or list(zip(steps, (
      rate for _, rate in windows)))  # one window only (scalar logging off): that one
  seconds = sum(n / rate for n, rate in timed)
  return sum(n for n, _ in timed) / seconds


def bare_rate_between(slices, begin, end, batch):
  """The bare step's images/s over its slices inside [begin, end] (wall times)."""
  inside = [(n, seconds) for started, ended, n, seconds in slices
            if started >= begin and ended <= end]
  if not inside:  # a run too short for a whole slice in its timed span (tests): all of them
    inside = [(n, seconds) for _, _, n, seconds in slices]
  if not inside:
    raise RuntimeError("the lievae_train run ended before the first slice of the bare step: "
                       "lower --slice_seconds or raise --steps")
  return sum(n for n, _ in inside) * batch / sum(seconds for _, seconds in inside)


def run_sliced(command, env, worker, slice_seconds, slice_steps):
  """Runs `command`, stopping it every `slice_seconds` while `worker` times `slice_steps` bare
  steps. Returns (pauses [(stopped, continued)], bare slices [(started, ended, steps, seconds)])."""
  log = tempfile.TemporaryFile("w+")
  process = subprocess.Popen(command, stdout=log, stderr=log, text=True, env=env,
                             start_new_session=True)  # its own group: every thread stops
  pauses, slices = [], []
  try:
    while True:
      try:
        process.wait(timeout=slice_seconds)
        break
      except subprocess.TimeoutExpired:
        pass
      os.killpg(process.pid, signal.SIGSTOP)
      stopped = time.time()
      seconds = worker.ask("run", slice_steps)
      slices.append((stopped, time.time(), slice_steps, seconds))
      os.killpg(process.pid, signal.SIGCONT)
      pauses.append((stopped, time.time()))
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGCONT)
      process.kill()
      process.wait()
  if process.returncode:
    log.seek(0)
    raise RuntimeError(f"{' '.join(command)} failed: {log.read()[-3000:]}")
  log.close()
  return pauses, slices


def end_to_end(setting, args, worker, slice_steps, feature=None):
  """One `lievae_train` run beside the bare step; returns (its images/s after warm-up, the bare
  step's over the same span, its windows [(step, images/s)] with the pauses taken out)."""
  model_dir = tempfile.mkdtemp(prefix=f"{setting}_{feature or 'shipped'}_", dir=args.work_dir)
  bindings = [f"model.training_steps = {args.steps}", f"model.batch_size = {args.batch}",
              "model.eval_steps = 1"]
  spec = FEATURES.get(feature, {})
  if args.log_every:
    bindings.append(f"training.log_every = {args.log_every}")
  bindings += [b.format(steps=args.steps) for b in spec.get("bindings", [])]
  argv = [f"--model_dir={model_dir}",
          f"--gin_config={core.gin_config(SETTINGS[setting]['gin'])}"]
  argv += [f"--gin_bindings={b}" for b in bindings]
  if spec.get("callbacks"):
    command = [sys.executable, os.path.abspath(__file__), "--runner",
               ",".join(spec["callbacks"]), "--"] + argv
  else:
    command = [sys.executable, core.command("lievae_train")] + argv
  pauses, slices = run_sliced(command, {**os.environ, "DISENTANGLEMENT_LIB_DATA": args.data_dir},
                              worker, args.slice_seconds, slice_steps)
  logged = read_images_per_second(model_dir)
  windows = active_rates(logged, 1, args.batch, pauses)  # the first window starts after step 1
  # The timed span: from the end of the warm-up window to the last logged window.
  bare = bare_rate_between(slices, logged[0][2], logged[-1][2], args.batch)
  return after_warm_up(windows, 1), bare, windows


def measure(setting, args):
  """Rounds of [end to end, end to end without f1, ...], each beside the bare step."""
  worker = core.Worker("bare step", [os.path.abspath(__file__), "--step_worker", setting,
                                     "--batch", str(args.batch), "--data_dir", args.data_dir])
  runs = [None] + args.without
  ratios = {run: [] for run in runs}
  rates = {run: [] for run in runs}
  step_rates = []
  shipped_windows = []  # each shipped run's (step, images/s) windows, to see where time goes
  try:
    worker.ready()
    worker.ask("run", args.warmup_steps)  # tracing
    seconds = worker.ask("run", args.warmup_steps)
    slice_steps = max(1, round(args.slice_seconds * args.warmup_steps / seconds))
    for _ in range(args.rounds):
      for run in runs:
        rate, step_rate, windows = end_to_end(setting, args, worker, slice_steps, run)
        if run is None:
          shipped_windows.append([[step, round(images, 1)] for step, images in windows])
          step_rates.append(step_rate)
        rates[run].append(rate)
        ratios[run].append(rate / step_rate)
  finally:
    worker.close()
  result = dict(end_to_end_vs_step=statistics.median(ratios[None]),
                end_to_end_vs_step_rounds=ratios[None],
                end_to_end_images_per_s=statistics.median(rates[None]),
                step_images_per_s=statistics.median(step_rates),
                step_images_per_s_rounds=step_rates,
                end_to_end_windows=shipped_windows)
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


def print_micro(setting, costs, args):
  step = costs["bare_step_ms"]
  print(f"\n{setting}, batch {args.batch}: each per-step cost alone, in ms a step (bare step "
        f"{step:.1f} ms)")
  rows = [(f"{name} hook, idle step", ms)
          for name, ms in costs["callback_ms_per_step_idle"].items()]
  rows += [(f"{name}: {e['ms_per_event']:.1f} ms every {e['every']} steps", e["ms_per_step"])
           for name, e in costs["callback_events"].items()]
  adam = costs["adam_update_ms"]
  rows.append((f"PyTorchAdam update {adam['pytorch']:.2f} ms - Keras Adam {adam['keras']:.2f} ms",
               adam["pytorch"] - adam["keras"]))
  pipeline = costs["pipeline"]
  rows.append(("epoch batches - uniform, CPU of the pipeline",
               pipeline["epochs"]["cpu_ms_per_batch"] - pipeline["uniform"]["cpu_ms_per_batch"]))
  for name, ms in rows:
    print(f"  {name:62s} {ms:8.3f} ms  {ms / step:7.2%}")
  print(f"  (pipeline CPU per batch: uniform {pipeline['uniform']['cpu_ms_per_batch']:.2f} ms, "
        f"epochs {pipeline['epochs']['cpu_ms_per_batch']:.2f} ms)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--settings", default="dsprites,shapes3d")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=1100,
                      help="steps of each lievae_train run (1,100 reaches the default "
                      "checkpoint and pictures of step 1,000)")
  parser.add_argument("--slice_seconds", type=float, default=2.0,
                      help="lievae_train runs this long between two slices of the bare step "
                      "(which is given about as long)")
  parser.add_argument("--warmup_steps", type=int, default=10)
  parser.add_argument("--log_every", type=int,
                      help="training.log_every of the runs (default: the gin files', 100)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--without", default="",
                      help=f"comma-separated features to switch off, one a run, or 'all': "
                      f"{', '.join(FEATURES)}")
  parser.add_argument("--parts", default="end_to_end",
                      help="end_to_end (lievae_train against the bare step), micro (each "
                      "per-step cost timed alone, in this process), or both")
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
  parts = args.parts.split(",")
  with tempfile.TemporaryDirectory(prefix="lievae_e2e_") as temporary:
    args.data_dir = args.data_dir or os.path.join(temporary, "data")
    args.work_dir = os.path.join(temporary, "runs")
    os.makedirs(args.work_dir)
    for setting in settings:  # written once, before any clock runs
      core.write_data(args.data_dir, setting)
    everything = {setting: {} for setting in settings}
    for setting in settings:
      if "end_to_end" in parts:
        everything[setting] = measure(setting, args)
        if not args.json:
          print_table(setting, everything[setting], args)
      if "micro" in parts:
        everything[setting]["micro"] = micro_costs(setting, args.batch, args.data_dir)
        if not args.json:
          print_micro(setting, everything[setting]["micro"], args)
  if args.json:
    print(json.dumps(everything))
  elif "end_to_end" in parts:
    print(f"\n{args.rounds} rounds; every ratio is to the bare step timed in slices of "
          f"~{args.slice_seconds:g} s between slices of the same run.")


if __name__ == "__main__":
  main()

"""What the benches share: the repository, the worker protocol, the model and data `lievae_train`
builds, the console commands, the small synthetic grids, the PyTorch reference.

A bench runs as `python bench/<name>.py`: Python puts bench/ first on sys.path, so `import core`
finds this file with no path edits, in a bench and in the worker processes it starts the same way.
"""

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import typing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2  # every side of every bench computes on the same 2 threads

# The published settings (their shipped gin configs) and small synthetic grids in their formats.
SETTINGS = {
    "dsprites": dict(gin="dsprites.gin", factor_sizes=(1, 3, 6, 10, 8, 8)),
    "shapes3d": dict(gin="shapes3d.gin", factor_sizes=(4, 4, 4, 4, 4, 5)),
}


def gin_config(name):
  """The shipped gin config `name` (e.g. 'dsprites.gin'), where `lievae_train` finds it."""
  from lievae_tf import gin_configs  # pylint: disable=g-import-not-at-top
  return gin_configs.path(name)


def write_data(data_dir, setting):
  """Writes the setting's small synthetic grid where dlib / lievae look for it (idempotent);
  returns its path."""
  from lievae_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  sizes = SETTINGS[setting]["factor_sizes"]
  if setting == "dsprites":
    path = synthetic.dsprites_path(data_dir)
    if not os.path.exists(path):
      synthetic.write_synthetic_dsprites(data_dir, sizes)
  else:
    path = os.path.join(data_dir, "3dshapes", "3dshapes.h5")
    if not os.path.exists(path):
      synthetic.write_synthetic_shapes3d_h5(path, sizes)
  return path


# What lievae_train builds.


class Built(typing.NamedTuple):
  vae: object  # the compiled LieGroupVAE
  data: object  # the ground-truth data (None where an image shape was given instead)
  image_shape: list
  options: dict  # training.training_options() under the same gin configuration
  strategy: object


def build(gin_files, bindings=(), strategy=None, image_shape=None):
  """The model `lievae_train` builds from `gin_files` (paths or shipped names) and `bindings`:
  its gin parse, its refusal of a precision the devices cannot run, `training.build_model` with
  `training.precision` and `training.jit_compile` (which refuses a step XLA cannot compile), in
  `strategy`'s scope (default: what lievae_train's "auto" picks without a GPU), seeded by
  `model.random_seed` as lievae_train seeds it. The data of
  `dataset.name` are loaded unless `image_shape` is given. The gin configuration is cleared."""
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf import models, training  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import devices  # pylint: disable=g-import-not-at-top
  training.parse_gin(list(gin_files), list(bindings))
  try:
    options = training.training_options()
    strategy = strategy or tf.distribute.get_strategy()
    problem = devices.precision_problem(options["precision"], strategy)
    if problem:  # e.g. bfloat16 where oneDNN is held below AVX-512
      raise UserError(problem + ".")
    data = None
    if image_shape is None:
      data = data_lib.load_ground_truth_data()
      image_shape = data_lib.observation_shape(data)
    try:
      random_seed = gin.query_parameter("model.random_seed")
    except ValueError:  # not bound
      random_seed = 0
    keras.utils.set_random_seed(random_seed)  # as lievae_train: its initial weights
    with strategy.scope():
      vae = training.build_model(models.LieGroupVAE, image_shape, random_seed,
                                 options["precision"], jit_compile=options["jit_compile"])
  finally:
    gin.clear_config()
  return Built(vae, data, list(image_shape), options, strategy)


def input_dataset(built, batch, order="uniform"):
  """The real input pipeline over `built.data`, distributed as lievae_train distributes it."""
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  return built.strategy.distribute_datasets_from_function(
      data_lib.make_input_fn(built.data, batch, seed=0, order=order))


def memory_bytes(key, pid="self"):
  """A memory figure of /proc/<pid>/status (Linux) in bytes: VmRSS (resident now), VmHWM (its
  peak since the process started or /proc/<pid>/clear_refs was last told 5)."""
  with open(f"/proc/{pid}/status") as status:
    for line in status:
      if line.startswith(key + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f"no {key} in /proc/{pid}/status")


# The worker protocol: a warm worker process answers one command line at a time.

REPLY = "@@"  # a worker's replies are its stdout lines that start with this (libraries print too)


def _reply(value):
  print(REPLY + json.dumps(value), flush=True)


def serve(handlers, facts=None):
  """A worker's loop: says it is ready, with its `facts` (a dict, e.g. which kernels it runs),
  then answers each command line `name arg ...` (JSON arguments) of stdin with one reply,
  `handlers[name](*args)` (None for an unknown name), until `quit` or the end of stdin."""
  _reply(dict(ready=True, **(facts or {})))
  for line in sys.stdin:
    name, *args = line.split()
    if name == "quit":
      return
    handler = handlers.get(name)
    _reply(handler(*(json.loads(a) for a in args)) if handler else None)


class WorkerDied(RuntimeError):
  pass


class Worker:
  """The coordinator's handle on one warm worker: `python <argv>` (the bench itself, told which
  worker to be) with `env` added to this environment."""

  def __init__(self, name, argv, env=None):
    self.name = name
    self.stderr = tempfile.TemporaryFile("w+")
    self.process = subprocess.Popen(
        [sys.executable] + list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=self.stderr, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})

  def ready(self):
    """Waits until the worker is ready (e.g. its model built); returns its facts."""
    facts = self.ask()
    facts.pop("ready")
    return facts

  def ask(self, name=None, *args):
    """Sends the command `name` with `args` (if any) and returns the worker's next reply."""
    if name:
      self.process.stdin.write(" ".join([name] + [json.dumps(a) for a in args]) + "\n")
      self.process.stdin.flush()
    for line in self.process.stdout:
      if line.startswith(REPLY):
        return json.loads(line[len(REPLY):])
    self.process.wait()
    raise WorkerDied(self._last_error())

  def _last_error(self):
    self.stderr.seek(0)
    lines = [line.rstrip() for line in self.stderr if line.strip()]
    last_error = max((i for i, line in enumerate(lines) if "Error" in line), default=None)
    if last_error is None:
      return f"exit code {self.process.returncode}: {' | '.join(lines[-3:])}"
    # TF's "...Error: Graph execution error:" says what failed in the first unindented line
    # after the node and its traceback (or "<stack traces unavailable>").
    reason = next((line for line in lines[last_error + 1:] if not line[0].isspace()
                   and not line.startswith(("Detected at node", "<"))), "")
    return f"{lines[last_error].strip()} {reason}"

  def close(self):
    if self.process.poll() is None:
      self.process.stdin.write("quit\n")
      self.process.stdin.close()
      self.process.wait()
    self.stderr.close()


# The console commands.


def command(name):
  """The console command `name` of this environment (lievae_tf's own lookup)."""
  from lievae_tf.pipeline import commands  # pylint: disable=g-import-not-at-top
  return commands.console_command(name)[0]


def run(args, env, log_path, capture_stdout=False):
  """Runs a command with its output in `log_path` (stdout returned instead, if `capture_stdout`);
  a failure exits with the log's tail. Returns (wall seconds, its rusage, stdout): os.wait4's
  rusage is the command's own, its waited-for children included (Linux: ru_maxrss in KiB)."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  started = time.perf_counter()
  with open(log_path, "w") as log:
    process = subprocess.Popen(args, env=env, stderr=log, text=True,
                               stdout=subprocess.PIPE if capture_stdout else log)
    output = process.stdout.read() if capture_stdout else None
    _, status, usage = os.wait4(process.pid, 0)
  seconds = time.perf_counter() - started
  if os.waitstatus_to_exitcode(status):
    with open(log_path) as log:
      sys.exit(f"{os.path.basename(args[0])} failed (exit {os.waitstatus_to_exitcode(status)}); "
               f"{log_path}:\n{log.read()[-3000:]}")
  return seconds, usage, output


def trained_model(model_dir, env, log_dir):
  """`model_dir` with a 200-step model of dsprites.gin (trained unless it has its module) and
  its mean representation (the stock `dlib_postprocess`, unless done); returns that directory."""
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import scoring  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(model_dir, "tfhub")):
    print(f"training a 200-step model in {model_dir}", flush=True)
    run([command("lievae_train"), f"--model_dir={model_dir}", "--overwrite",
         f"--gin_config={gin_config('dsprites.gin')}", "--gin_bindings=model.training_steps = 200"],
        env, os.path.join(log_dir, "train.log"))
  representation = scoring.representation_dir(model_dir)
  if not os.path.isdir(os.path.join(representation, "tfhub")):
    print(f"postprocessing {model_dir} (mean)", flush=True)
    run([command("dlib_postprocess"), f"--model_dir={model_dir}", f"--output_dir={representation}",
         "--gin_config=" + os.path.join(registry.dlib_config_dir(), "postprocess_configs",
                                        "mean.gin")], env, os.path.join(log_dir, "postprocess.log"))
  return representation


@functools.cache
def torch_reference():
  """tests/torch_reference.py (the paper code's model and step in PyTorch), loaded from its file:
  it lives with the tests, outside the package (which imports without torch), and a bench loading
  it this way puts nothing of tests/ on its sys.path."""
  spec = importlib.util.spec_from_file_location(
      "torch_reference", os.path.join(REPO, "tests", "torch_reference.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module

"""tf.distribute for real: MirroredStrategy over 2 logical CPU devices takes the step one device
takes; MultiWorkerMirroredStrategy over two processes keeps both workers' weights identical and
only the chief writes outputs. Each runs in its own process: logical devices and the collective
ops of a worker must be configured before TF initialises.

Every process here runs with CUDA_VISIBLE_DEVICES="" (`CPU_ONLY`): on a machine with GPUs they are
hidden, so that the expected devices are the same everywhere. These tests are about the CPU
replicas (two logical CPUs, two local workers that would otherwise share one GPU's memory, and a
CPU reference whose rounding the comparisons bound); test_devices.py checks what a run on a
visible GPU reports."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import conftest
from conftest import SMALL_RUN

CPU_ONLY = dict(os.environ, CUDA_VISIBLE_DEVICES="")

# The same 3 steps from the same initial weights and data stream, under the default strategy (one
# device) and MirroredStrategy over two logical CPUs; then a whole run under the latter.
MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import gin
import numpy as np
from lievae_tf import models, random_streams, training
from lievae_tf.keras2 import keras
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.errors import UserError
from disentanglement_lib.data.ground_truth import named_data  # registers `dataset`

gin.bind_parameter("dataset.name", "dsprites_full")
data = data_lib.load_ground_truth_data()
gin.clear_config()

vae_weights = []
optimizer_names = []  # what each run stepped with

def run(strategy_name, optimizer, steps, batch=16):
  strategy = training.make_strategy(strategy_name)
  with strategy.scope():
    keras.utils.set_random_seed(0)
    # forward_eg_prob 0.5: with seed 0 the first steps take both reconstruction paths.
    vae = models.LieGroupVAE(num_channels=1, subgroup_sizes=[16, 9], subspace_sizes=[3, 2],
                                lie_alg_init_scale=0.1, forward_eg_prob=0.5, seed=0)
    vae.build_variables([64, 64, 1])
    vae.compile(optimizer=optimizer())
  dataset = strategy.distribute_datasets_from_function(data_lib.make_input_fn(data, batch, 0))
  before = [w.numpy() for w in vae.trainable_weights]
  vae.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
  vae_weights[:] = vae.trainable_weights
  optimizer_names.append(type(vae.optimizer).__name__)
  return strategy.num_replicas_in_sync, before, [w.numpy() for w in vae.trainable_weights]

out = {}
# Plain SGD: Adam's first steps are nearly invariant to the scale of the loss, SGD's are not.
# Adam as the shipped gin files build it (PyTorchAdam: gin_configs/dsprites.gin's
# `optimizer.epsilon_placement = 'pytorch'`): a wrong scale or split shows in its moments and
# so in the later steps, and its own per-step bias corrections run in each replica.
shipped_adam = lambda: training.make_optimizer(epsilon_placement="pytorch")
for name, optimizer, steps in (("sgd", lambda: keras.optimizers.SGD(1e-5), 3),
                               ("adam", shipped_adam, 3)):
  n1, before1, after1 = run("default", optimizer, steps)
  n2, before2, after2 = run("mirrored", optimizer, steps)
  out[name] = dict(
      replicas=[n1, n2],
      init_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(before1, before2)),
      # Per weight, in norm (element-wise maxima would be set by the few elements whose gradient
      # is near Adam's epsilon, where the update amplifies any rounding of the gradient): the
      # difference between the two, and the weight's own update.
      diffs=[float(np.linalg.norm(a - b)) for a, b in zip(after1, after2)],
      updates=[float(np.linalg.norm(a - b)) for a, b in zip(after1, before1)],
      # float32 resolves a weight w to ~6e-8 |w|: an update far below that is rounding.
      resolution=[float(np.linalg.norm(a) * np.finfo(np.float32).eps) for a in after1],
      names=[w.name for w in vae_weights])
out["optimizers"] = optimizer_names
out["eg_draws"] = [bool(models.LieGroupVAE(subgroup_sizes=[16, 9], subspace_sizes=[3, 2],
                                           forward_eg_prob=0.5, seed=0).training_draws(
    random_streams.step_key(0, s))["use_eg_path"]) for s in range(3)]

gin.parse_config(["training.strategy = 'mirrored'"])
try:
  training.train(sys.argv[1], model=models.LieGroupVAE, training_steps=5, random_seed=0,
              batch_size=7)
  out["indivisible"] = None
except UserError as e:
  out["indivisible"] = str(e)
print("RESULT " + json.dumps(out))
"""

# The whole `lievae_train` protocol under the 2-replica MirroredStrategy: checkpoints, images,
# export. In a process of its own: two MirroredStrategy objects in one process can mix up their
# collective ops (TF 2.15: "Shape mismatch in the collective instance"); lievae_train makes one.
MIRRORED_RUN_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lievae_tf import training
vae = training.train_with_gin(sys.argv[1], gin_config_files=[sys.argv[2]],
                           gin_bindings=sys.argv[3:] + ["training.strategy = 'mirrored'"])
print("RESULT " + json.dumps(dict(
    replicas=vae.distribute_strategy.num_replicas_in_sync,
    finished=training.is_finished(sys.argv[1]),
    checkpoint=tf.train.latest_checkpoint(sys.argv[1] + "/tf_checkpoint"))))
"""


def _result(completed):
  assert completed.returncode == 0, completed.stderr[-4000:]
  line = [l for l in completed.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


# Two replicas sum in another order than one device: measured worst difference per weight (in norm)
# 4.8e-5 of the weight's own update under SGD, 1.9e-3 under the shipped PyTorchAdam (3 steps, both
# reconstruction paths; its epsilon sits after the square root, so elements whose gradient is near
# it pass gradient rounding on to the update); an unscaled loss under SGD: 1.05;
# two workers on a shared model_dir, 24 Adam steps: 1.9e-4 (three steps lost would be 0.19).
RELATIVE_TOLERANCE = 1e-2
LEARNING_RATE = 1e-4  # gin_configs/dsprites.gin's


def test_mirrored_on_two_logical_cpus_steps_as_one_device(tmp_path):
  completed = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "m")],
                             env=CPU_ONLY, capture_output=True, text=True, timeout=600)
  out = _result(completed)
  assert out["eg_draws"] != [out["eg_draws"][0]] * 3  # the 3 steps take both paths
  assert out["optimizers"] == ["SGD", "SGD", "PyTorchAdam", "PyTorchAdam"]
  for optimizer in ("sgd", "adam"):
    result = out[optimizer]
    assert result["replicas"] == [1, 2]
    assert result["init_diff"] == 0.0
    # Each weight against its own update, so that weights with small gradients (the Lie algebra
    # basis, the logvar heads) count as much as the large ones: a mis-scaled loss, a wrongly
    # split batch or noise, or replicas taking different paths would show.
    assert all(u > 0 for u in result["updates"]), (optimizer, result)
    ratios = {n: d / (u + 8 * r) for n, d, u, r in zip(
        result["names"], result["diffs"], result["updates"], result["resolution"])}
    worst = max(ratios, key=ratios.get)
    print(optimizer, "worst difference / (own update + 8 float32 steps):", worst, ratios[worst])
    assert ratios[worst] < RELATIVE_TOLERANCE, (optimizer, ratios)
  assert "model.batch_size = 7" in out["indivisible"] and "2 replicas" in out["indivisible"]


def test_a_whole_mirrored_run_on_two_logical_cpus(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-c", MIRRORED_RUN_SCRIPT, str(tmp_path / "run"),
       os.path.join(conftest.GIN_CONFIGS, "dsprites.gin"), *SMALL_RUN],
      env=CPU_ONLY, capture_output=True, text=True, timeout=600)
  out = _result(completed)
  assert out["replicas"] == 2
  assert out["finished"] and out["checkpoint"].endswith("ckpt-6")
  assert os.path.isfile(tmp_path / "run" / "results" / "latent_traversals.png")
  # What trains, said once at the start and recorded in the results.
  assert completed.stderr.splitlines().count(
      "lievae_train: strategy mirrored, 2 replicas on CPU:0, CPU:1; "
      "global batch 8 = 4 per replica") == 1, completed.stderr[-3000:]
  with open(tmp_path / "run" / "results" / "json" / "train_results.json") as f:
    results = json.load(f)
  assert [results[k] for k in ("strategy", "num_replicas", "num_workers", "devices",
                               "global_batch_size", "per_replica_batch_size")] == [
      "mirrored", 2, 1, "CPU:0, CPU:1", 8, 4]


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


WORKER_SCRIPT = r"""
import sys
import numpy as np
from lievae_tf import training
model_dir, out, gin_file = sys.argv[1:4]
vae = training.train_with_gin(model_dir, gin_config_files=[gin_file], gin_bindings=sys.argv[4:])
np.savez(out, *[w.numpy() for w in vae.trainable_weights])
"""


def test_two_workers_keep_identical_weights_and_only_the_chief_writes(tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  bindings = SMALL_RUN + ["training.strategy = 'multi_worker'"]
  processes = []
  for index in range(2):
    # A model_dir per worker, as on machines without a shared disk: the non-chief's stays empty.
    env = dict(CPU_ONLY, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    processes.append(subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(tmp_path / f"model_{index}"),
         str(tmp_path / f"weights_{index}.npz"),
         os.path.join(conftest.GIN_CONFIGS, "dsprites.gin"), *bindings],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  try:
    outputs = [p.communicate(timeout=600) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-4000:]
    assert ("lievae_train: strategy multi_worker, 2 replicas on 2 workers (this one: CPU:0); "
            "global batch 8 = 4 per replica") in err.splitlines()

  weights = [np.load(tmp_path / f"weights_{i}.npz") for i in range(2)]
  assert len(weights[0].files) == len(weights[1].files) > 0
  for name in weights[0].files:
    np.testing.assert_array_equal(weights[0][name], weights[1][name])

  chief = tmp_path / "model_0"
  assert (chief / "results" / "aggregate" / "train.json").is_file()
  assert (chief / "tfhub" / "saved_model.pb").is_file()
  assert sorted(os.listdir(chief / "tf_checkpoint")) == [
      "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index", "ckpt-6.data-00000-of-00001",
      "ckpt-6.index", "operative_config.gin"]
  written_by_other = [os.path.join(root, f) for root, _, files in os.walk(tmp_path / "model_1")
                      for f in files]
  assert written_by_other == []
  with open(chief / "results" / "json" / "train_results.json") as f:
    results = json.load(f)
  assert results["training_steps"] == 6
  assert [results[k] for k in ("strategy", "num_replicas", "num_workers", "devices")] == [
      "multi_worker", 2, 2, "CPU:0"]


@pytest.mark.parametrize("tf_config, words", [
    ('{"cluster": {"worker": ["localhost:1"]', ["not valid JSON"]),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     ["'localhost'", "host:port"]),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     ["'index': 2", "{'worker': 2}"]),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     ["'ps'"]),
])
def test_malformed_tf_config_is_a_clear_error(tf_config, words):
  from lievae_tf import training  # pylint: disable=g-import-not-at-top
  from lievae_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError) as error:
    training.parse_tf_config(tf_config)
  for word in words:
    assert word in str(error.value)
  assert "TF_CONFIG" in str(error.value)


_LAST_WORDS_PROGRAM = """
import os, sys
from lievae_tf import cli
from lievae_tf.errors import Stopped
if sys.argv[1] == "worker":
  from tensorflow.python.eager import context
  # What MultiWorkerMirroredStrategy configures on every worker of a cluster.
  context.context().configure_coordination_service(service_type="standalone")

def main(argv):
  # A C++ thread that logs while the interpreter tears down (TF's coordination heartbeat does,
  # once the chief has exited): it writes to file descriptor 2 after `main` has ended.
  import atexit
  atexit.register(os.write, 2, b"teardown noise\\n")
  if argv[2] == "stopped":
    raise Stopped("stopped by SIGTERM at step 4")
  print("finished")

cli.run(main)
"""


@pytest.mark.parametrize("ending", ["stopped", "finished"])
def test_a_workers_last_line_is_its_own_and_nothing_follows_it(ending):
  """A worker of a multi-worker run ends its stderr with its own last line (a scheduler shows the
  last line of a job), even when TF's C++ logs during the interpreter's teardown; a process
  outside a cluster keeps its stderr open to the end."""
  outcomes = {}
  for kind in ("worker", "single"):
    completed = subprocess.run([sys.executable, "-c", _LAST_WORDS_PROGRAM, kind, ending],
                               capture_output=True, text=True, timeout=120)
    outcomes[kind] = completed
  worker, single = outcomes["worker"], outcomes["single"]
  assert worker.returncode == single.returncode == (75 if ending == "stopped" else 0), (
      worker.stderr[-2000:], single.stderr[-2000:])
  assert "teardown noise" not in worker.stderr, worker.stderr[-2000:]
  assert single.stderr.rstrip().endswith("teardown noise"), single.stderr[-2000:]
  if ending == "stopped":
    assert worker.stderr.rstrip().splitlines()[-1] == (
        "-c: error: stopped by SIGTERM at step 4"), worker.stderr[-2000:]
  else:
    assert worker.stdout.strip() == "finished"


def _start_workers(model_dir, ports, bindings, indexes=(0, 1), extra_env=None):
  """`lievae_train` as worker `index` of a localhost cluster, for each of `indexes`;
  `extra_env`: {index: environment variables of that worker}."""
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  processes = {}
  for index in indexes:
    env = dict(CPU_ONLY, **(extra_env or {}).get(index, {}), TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    processes[index] = subprocess.Popen(
        [os.path.join(conftest.BIN, "lievae_train"), *conftest.train_args(model_dir, *bindings)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  return processes


def _finish(processes, timeout=300):
  try:
    return {i: (p.wait(timeout=timeout), p.stderr.read()) for i, p in processes.items()}
  finally:
    for p in processes.values():
      if p.poll() is None:
        p.kill()


def _latest_step(model_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  latest = tf.train.latest_checkpoint(os.path.join(model_dir, "tf_checkpoint"))
  return int(latest.rsplit("-", 1)[1]) if latest else 0


def _wait_for_checkpoint_after(step, model_dir, processes, timeout=300):
  deadline = time.time() + timeout
  while _latest_step(model_dir) <= step:
    assert all(p.poll() is None for p in processes.values()) and time.time() < deadline, (
        "no checkpoint was written")
    time.sleep(0.05)
  return _latest_step(model_dir)


def _one_line_error(stderr):
  """The error message of a failed `lievae_train`: one line, the last."""
  message = stderr.rstrip().splitlines()[-1]
  assert message.startswith("lievae_train: error: ") and "Traceback" not in stderr, stderr[-3000:]
  return message


def assert_same_training(workers, single, start, max_update=np.inf, label=""):
  """Asserts that the weights `workers` trained from `start` equal the one-device run's `single`:
  per weight, the largest difference over the weight's own update (+ 8 float32 steps of its size)
  is below RELATIVE_TOLERANCE. Every weight must have trained (0 < update <= `max_update`)."""
  assert set(workers) == set(single) == set(start) and len(single) > 10
  ratios = {}
  for name in single:
    update = np.max(np.abs(single[name] - start[name]))
    resolution = np.max(np.abs(single[name])) * np.finfo(np.float32).eps
    assert 0 < update <= max_update, (name, update)
    ratios[name] = np.max(np.abs(workers[name] - single[name])) / (update + 8 * resolution)
  worst = max(ratios, key=ratios.get)
  print(f"{label}worst difference / (own update + 8 float32 steps): {worst} "
        f"{ratios[worst]:.3g} (bound {RELATIVE_TOLERANCE})")
  assert ratios[worst] < RELATIVE_TOLERANCE, ratios


def _model_weights(checkpoint_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(checkpoint_path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith("model/") and "trackers" not in name}


# The weights a run starts from: lievae_train's own set-up (seeded build, before the first step),
# saved as the step-0 checkpoint it never writes itself.
INITIAL_WEIGHTS_SCRIPT = r"""
import sys
import gin
from lievae_tf.training import run as run_lib
model_dir, args = sys.argv[1], sys.argv[2:]
configs = [a.split("=", 1)[1] for a in args if a.startswith("--gin_config=")]
bindings = [a.split("=", 1)[1] for a in args if a.startswith("--gin_bindings=")]
run_lib.parse_gin(configs, bindings)
run = run_lib.set_up(model_dir, False, gin.query_parameter("model.model").scoped_configurable_fn,
                     gin.query_parameter("model.random_seed"),
                     gin.query_parameter("model.batch_size"))
run.manager.save(checkpoint_number=0)
"""


def test_shared_model_dir_survives_preemption_and_a_lost_worker(tmp_path):
  """Two workers on one shared model_dir. SIGTERM to one: both save the same step and stop.
  Re-run; SIGKILL of worker 1: worker 0 stops within seconds with one line naming it. Re-run
  both: they resume from the chief's checkpoint and end with the weights of a one-device run of
  the same global batch and steps."""
  model_dir = str(tmp_path / "shared")
  bindings = ["model.training_steps = 24", "training.checkpoint_every = 3",
                          "training.log_every = 1000", "training.image_every = 0",
                          "training.strategy = 'multi_worker'"]
  ports = _free_ports(2)

  processes = _start_workers(model_dir, ports, bindings)
  _wait_for_checkpoint_after(0, model_dir, processes)
  processes[1].send_signal(signal.SIGTERM)  # only one VM is preempted
  outcome = _finish(processes, timeout=120)
  messages = {i: _one_line_error(err) for i, (_, err) in outcome.items()}
  assert all(code != 0 for code, _ in outcome.values())
  steps = {i: int(m.split(" at step ")[1].split(",")[0]) for i, m in messages.items()}
  assert steps[0] == steps[1] and 3 <= steps[0] < 24, messages
  assert "stopped by SIGTERM" in messages[1] and "Re-run the same command" in messages[0]
  preempted_at = steps[0]
  assert _latest_step(model_dir) == preempted_at

  processes = _start_workers(model_dir, ports, bindings)
  _wait_for_checkpoint_after(preempted_at, model_dir, processes)
  processes[1].send_signal(signal.SIGKILL)
  killed = time.time()
  outcome = _finish({0: processes[0]}, timeout=120)
  assert time.time() - killed < 60
  code, stderr = outcome[0]
  message = _one_line_error(stderr)
  assert code != 0 and "lost contact with worker 1" in message, message
  assert "Re-run every worker" in message
  resume_from = _latest_step(model_dir)
  assert preempted_at < resume_from < 24

  processes = _start_workers(model_dir, ports, bindings)
  for code, stderr in _finish(processes).values():
    assert code == 0, stderr[-3000:]
    assert f"resuming from step {resume_from}" in stderr
  assert _latest_step(model_dir) == 24
  assert os.path.isfile(os.path.join(model_dir, "results", "aggregate", "train.json"))

  one_device_dir = str(tmp_path / "one_device")
  one_device_bindings = [*bindings[:-1], "training.strategy = 'default'"]
  one_device = conftest.command("lievae_train", *conftest.train_args(one_device_dir,
                                                                     *one_device_bindings),
                                env=CPU_ONLY)
  assert one_device.returncode == 0, one_device.stderr[-3000:]
  initial_dir = str(tmp_path / "initial")
  initial = subprocess.run([sys.executable, "-c", INITIAL_WEIGHTS_SCRIPT, initial_dir,
                            *conftest.train_args(initial_dir, *one_device_bindings)],
                           env=CPU_ONLY, capture_output=True, text=True, timeout=600)
  assert initial.returncode == 0, initial.stderr[-3000:]
  workers = _model_weights(os.path.join(model_dir, "tf_checkpoint", "ckpt-24"))
  single = _model_weights(os.path.join(one_device_dir, "tf_checkpoint", "ckpt-24"))
  start = _model_weights(os.path.join(initial_dir, "tf_checkpoint", "ckpt-0"))
  # Per weight, the difference against the weight's own update over the 24 steps (as in the
  # mirrored test): two workers sum two half-batch gradients in another order than one device,
  # which moves each update by a small fraction of itself; a wrongly split or repeated batch, a
  # resume from the wrong step or a lost update moves it by a large one.
  # <= 24 Adam steps of at most ~4 lr each: `start` is the run's start.
  assert_same_training(workers, single, start, max_update=24 * 4 * LEARNING_RATE)


# Loaded by worker 1 at start-up (Python imports `sitecustomize` from PYTHONPATH): on SIGWINCH its
# main thread stops in Python while its TensorFlow threads (the heartbeats too) keep running, as in
# a deadlock or a hung file system. The cluster sees a live worker that never joins a collective.
# SIGWINCH because lievae_train leaves it alone (SIGUSR1/SIGUSR2 are its stop signals, which would
# replace this handler) and its default action is to be ignored.
_HANG_ON_SIGWINCH = ("import signal, time\n"
                     "signal.signal(signal.SIGWINCH, lambda *_: time.sleep(3600))\n")


def test_a_hung_worker_stops_the_others_within_the_collective_timeout(tmp_path):
  (tmp_path / "hang").mkdir()
  (tmp_path / "hang" / "sitecustomize.py").write_text(_HANG_ON_SIGWINCH)
  model_dir = str(tmp_path / "shared")
  timeout = 10
  bindings = ["model.training_steps = 100000", "training.checkpoint_every = 3",
              "training.log_every = 1000", "training.image_every = 0",
              "training.strategy = 'multi_worker'", f"training.collective_timeout = {timeout}"]
  processes = _start_workers(model_dir, _free_ports(2), bindings,
                             extra_env={1: {"PYTHONPATH": str(tmp_path / "hang")}})
  try:
    _wait_for_checkpoint_after(0, model_dir, processes)
    processes[1].send_signal(signal.SIGWINCH)
    hung = time.time()
    code, stderr = _finish({0: processes[0]}, timeout=timeout + 240)[0]
    waited = time.time() - hung
  finally:
    processes[1].kill()
  message = _one_line_error(stderr)
  assert code != 0 and "Re-run every worker" in message, message
  assert (f"worker 1 did not take part in a collective operation within "
          f"training.collective_timeout = {timeout} s") in message, message
  # Not the heartbeats (they kept going) but the collective's own deadline, then the exit (slow
  # on a loaded machine; without the timeout it would wait forever).
  assert timeout - 1 < waited < timeout + 180, (waited, message)

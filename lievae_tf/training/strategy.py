"""Which devices train: the `tf.distribute` strategy of a run, and what a worker of a cluster is."""

import json
import os
import re

import tensorflow as tf

from lievae_tf.errors import UserError

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def parse_tf_config(raw):
  """Validates a TF_CONFIG for MultiWorkerMirroredStrategy; returns (cluster, task type, index).

  TF itself reports a malformed TF_CONFIG late and obscurely (or hangs waiting for a worker that
  cannot exist), so it is checked here first.
  """
  fix = (f"Set TF_CONFIG to JSON like {_TF_CONFIG_EXAMPLE}, the same cluster on every worker "
         "and each its own task index (or unset it to train on one machine).")
  try:
    config = json.loads(raw)
  except ValueError as e:
    raise UserError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}. {fix}") from None
  cluster = config.get("cluster") if isinstance(config, dict) else None
  if not isinstance(cluster, dict) or not cluster:
    raise UserError(f"TF_CONFIG {raw!r} has no \"cluster\" of jobs. {fix}")
  for job, addresses in cluster.items():
    if job not in ("chief", "worker"):
      raise UserError(f"TF_CONFIG job {job!r}: multi-worker training has only 'chief' and "
                      f"'worker' jobs. {fix}")
    if (not isinstance(addresses, list) or not addresses or not all(
        isinstance(a, str) and a.rpartition(":")[0] and a.rpartition(":")[2].isdigit()
        for a in addresses)):
      raise UserError(f"TF_CONFIG cluster job {job!r} = {addresses!r} is not a list of "
                      f"'host:port' addresses. {fix}")
  task = config.get("task")
  task_type = task.get("type") if isinstance(task, dict) else None
  index = task.get("index", 0) if isinstance(task, dict) else None
  if task_type not in cluster or not isinstance(index, int) or not (
      0 <= index < len(cluster[task_type])):
    raise UserError(f"TF_CONFIG task {task!r} is not one of its cluster's tasks "
                    f"{ {job: len(a) for job, a in cluster.items()} } (type and 0-based index). "
                    f"{fix}")
  return cluster, task_type, index


# A SLURM job step's ports: below Linux's ephemeral range (32768-60999, which the kernel hands to
# outgoing connections), above the well-known services.
SLURM_PORT_RANGE = (20000, 32768)


def slurm_step_tasks(environ=None):
  """How many tasks the SLURM job step this process belongs to has (0 outside a step)."""
  environ = os.environ if environ is None else environ
  if "SLURM_PROCID" not in environ:
    return 0
  try:
    return int(environ.get("SLURM_STEP_NUM_TASKS", ""))
  except ValueError:
    return 0


def slurm_port_base(job_id, tasks_per_node):
  """The first port of a job's tasks on a node (task k of the node takes base + k): a slot of
  `tasks_per_node` ports chosen by the job id, so that jobs sharing a node (array tasks, other
  users' runs) take disjoint ports, until SLURM's job ids wrap around the range's slots (jobs
  running at once on one node are far fewer). TF's default, 8888 for every job, would collide."""
  low, high = SLURM_PORT_RANGE
  slots = (high - low) // tasks_per_node
  return low + (job_id % slots) * tasks_per_node


class _SlurmResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
  """TF's SlurmClusterResolver, its accelerators the GPUs this task trains on (0: the CPU)."""

  def __init__(self, task_gpus, **kwargs):
    super().__init__(**kwargs)
    self.task_gpus = task_gpus

  def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
    del task_type, task_id, config_proto
    return {"GPU": self.task_gpus}


def slurm_cluster_resolver(environ=None):
  """The cluster of this SLURM job step, from SLURM's environment, through TF's
  SlurmClusterResolver, with its GPUs per node and port base given explicitly (its defaults ask
  nvidia-smi, which counts the node's GPUs rather than the job's, and take port 8888).

  The GPUs are those SLURM allocated on the node (SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES):
  when every task of the node sees all of them, each takes its share by its local id (set in
  CUDA_VISIBLE_DEVICES here, before TF initialises the GPUs); when SLURM bound them to the tasks,
  each keeps its own.
  """
  environ = os.environ if environ is None else environ
  try:
    job_id = int(environ["SLURM_JOB_ID"])
    tasks_per_node = max(int(part.split("(")[0]) for part in
                         environ["SLURM_STEP_TASKS_PER_NODE"].split(","))
    local_id = int(environ["SLURM_LOCALID"])
  except (KeyError, ValueError) as e:
    raise UserError(f"SLURM's environment of this job step is incomplete ({e} missing or "
                    "malformed): start lievae_train with srun inside a job (lievae_sweep "
                    "--launcher=slurm does).") from None
  visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
  on_node = environ.get("SLURM_GPUS_ON_NODE", "").strip()
  node_gpus = int(on_node) if on_node.isdigit() else len(visible)
  task_gpus = node_gpus // tasks_per_node
  if node_gpus and (not task_gpus or node_gpus % tasks_per_node):
    raise UserError(f"{node_gpus} GPUs per node do not split evenly over {tasks_per_node} tasks "
                    "per node: request a multiple of the tasks per node (lievae_sweep "
                    "--gpus_per_run, --tasks_per_node).")
  if task_gpus and len(visible) == node_gpus and tasks_per_node > 1:
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(
        visible[local_id * task_gpus:(local_id + 1) * task_gpus])
  # TF's resolver lays out a node's tasks over its GPUs and needs one per task at least; on CPUs
  # it is given one slot per task, and reports none (`task_gpus`) to the strategy.
  try:
    return _SlurmResolver(
        task_gpus, port_base=slurm_port_base(job_id, tasks_per_node),
        gpus_per_node=node_gpus if task_gpus else tasks_per_node,
        gpus_per_task=task_gpus or 1, auto_set_gpu=False)
  except (RuntimeError, ValueError) as e:
    raise UserError(f"SLURM's cluster of this job step: {e}") from None


_cluster = {}  # this process's cluster under MultiWorkerMirroredStrategy, for error messages


def current_cluster():
  """(cluster {job: [address]}, task type, index) of this multi-worker process, else None."""
  return _cluster.get("cluster")


def make_strategy(name, collective_timeout=0):
  """The tf.distribute strategy called `name` (see `training_options`); under 'multi_worker' a
  collective waits at most `collective_timeout` seconds (0: forever).

  'multi_worker' (and 'auto', when there is a cluster) takes its cluster from TF_CONFIG when it is
  set, else from the SLURM job step this process is one task of, when that step has more tasks.
  """
  if name not in STRATEGIES:
    raise UserError(f"training.strategy = {name!r} is not one of {', '.join(STRATEGIES)}.")
  _cluster.clear()
  tf_config = os.environ.get("TF_CONFIG", "").strip()
  in_slurm_step = not tf_config and slurm_step_tasks() > 1
  if name == "auto" and (tf_config or in_slurm_step):
    name = "multi_worker"
  if name == "multi_worker":
    if not tf_config and not in_slurm_step:
      raise UserError("training.strategy = 'multi_worker' needs a cluster: TF_CONFIG, which is "
                      "not set, or a SLURM job step of several tasks (srun --ntasks=N, as "
                      "lievae_sweep --launcher=slurm --tasks_per_node starts). Set TF_CONFIG on "
                      f"each worker, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'.")
    resolver = None
    if tf_config:
      _cluster["cluster"] = parse_tf_config(tf_config)
    else:
      resolver = slurm_cluster_resolver()
      spec = resolver.cluster_spec().as_dict()
      _cluster["cluster"] = (spec, resolver.task_type, resolver.task_id)
    # Must come before any other TF op: it configures the collective ops of this process.
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver,
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout or None))
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "mirrored" if gpus else "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  return tf.distribute.MirroredStrategy()


def is_chief(strategy):
  """Whether this process writes the outputs (always, except on non-chief workers)."""
  return strategy.extended.should_checkpoint


def sync_workers(strategy):
  """Returns once every worker got here (a collective all-reduce); no-op on one machine."""
  if getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
    strategy.reduce("SUM", strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)


def in_multi_worker_mode(strategy):
  return getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)()


class AnyWorker:
  """`any_worker(flag)`: whether `flag` is true on any worker (a collective all-reduce under
  MultiWorkerMirroredStrategy, so every worker must call it at the same point); else `flag`."""

  def __init__(self, strategy):
    self.strategy = strategy
    self.multi_worker = in_multi_worker_mode(strategy)
    # One traced function for every call (a new one per call would retrace each step).
    self.replica_value = tf.function(tf.identity)

  def __call__(self, flag):
    if not self.multi_worker:
      return bool(flag)
    value = self.strategy.run(self.replica_value, args=(tf.constant(1.0 if flag else 0.0),))
    return float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)) > 0


# What TF raises in a worker whose peer died, hung or was preempted.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                 tf.errors.AbortedError, tf.errors.CancelledError)


def lost_worker_error(error, collective_timeout, checkpoint_dir):
  """The one-line UserError for `error` (one of PEER_FAILURES) in a multi-worker run."""
  text = getattr(error, "message", None) or str(error)
  tasks = re.findall(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)", text)
  cluster, *own = current_cluster()
  own = tuple(own)
  others = [f"{job} {index}" for job, index in dict.fromkeys(tasks) if (job, int(index)) != own]
  if others:
    what = f"lost contact with {', '.join(others)} of the cluster"
  elif isinstance(error, tf.errors.DeadlineExceededError):
    # TF's timeout names no task; with one other task there is only one it can be.
    rest = [f"{job} {i}" for job, addresses in cluster.items() for i in range(len(addresses))
            if (job, i) != own]
    who = rest[0] if len(rest) == 1 else f"another worker (one of {', '.join(rest)})"
    what = (f"{who} did not take part in a collective operation within "
            f"training.collective_timeout = {collective_timeout:g} s")
  else:
    what = "lost contact with the cluster"
  lines = [line.strip() for line in text.splitlines()
           if line.strip() and not line.startswith(("Graph execution error", "Detected at node"))
           and not line.strip().startswith(("File ", "[["))]
  reason = next((line for line in lines if "heartbeat" in line or "timeout" in line.lower()
                 or "deadline" in line.lower()), lines[0] if lines else type(error).__name__)
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  return UserError(
      f"{what} ({type(error).__name__}: {reason[:300]}); this worker stopped. Re-run every "
      "worker with the same command to resume from the chief's last checkpoint "
      f"({latest or 'none yet: from the start'}).")

"""What a run trains on: the line every run starts with, the same fields for its results, and one
warning when the machine has NVIDIA GPUs that TensorFlow cannot see (training would silently run on
the CPU)."""

import os
import re
import shutil
import subprocess
import sys

import tensorflow as tf

_warned = False  # the GPU warning is given once per process


def strategy_name(strategy):
  """The `training.strategy` value that makes `strategy` ('auto' resolved)."""
  for cls, name in ((tf.distribute.MultiWorkerMirroredStrategy, "multi_worker"),
                    (tf.distribute.MirroredStrategy, "mirrored"),
                    (tf.distribute.OneDeviceStrategy, "one_device")):
    if isinstance(strategy, cls):
      return name
  return "default"


def _gpu_names():
  """{index: name} of the GPUs TF sees, as TF reports them (e.g. 'NVIDIA A100-SXM4-40GB')."""
  names = {}
  for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
    names[i] = tf.config.experimental.get_device_details(gpu).get("device_name")
  return names


def _describe(device, gpu_names):
  spec = tf.DeviceSpec.from_string(device)
  short = f"{spec.device_type}:{spec.device_index or 0}"
  name = gpu_names.get(spec.device_index or 0) if spec.device_type == "GPU" else None
  return f"{short} ({name})" if name else short


def report(strategy, global_batch_size):
  """This process's share of the run, as fields of `train_results.json`."""
  replicas = strategy.num_replicas_in_sync
  if strategy_name(strategy) == "default":
    # TF's default placement: the first GPU if there is one, else the CPU.
    local = [d.name for d in tf.config.list_logical_devices("GPU")[:1]] or ["/device:CPU:0"]
  else:
    local = list(strategy.extended.worker_devices)
  gpu_names = _gpu_names() if len(tf.config.list_logical_devices("GPU")) == len(
      tf.config.list_physical_devices("GPU")) else {}  # logical splits of a GPU: no name
  return dict(strategy=strategy_name(strategy), num_replicas=replicas,
              num_workers=max(1, replicas // max(1, len(local))),
              devices=", ".join(_describe(d, gpu_names) for d in local),
              global_batch_size=global_batch_size,
              per_replica_batch_size=global_batch_size // replicas)


def summary_line(fields):
  """One line naming the strategy, the replicas, the devices and the global / per-replica batch."""
  where = fields["devices"]
  if fields["num_workers"] > 1:
    where = f"{fields['num_workers']} workers (this one: {where})"
  plural = "s" if fields["num_replicas"] > 1 else ""
  return (f"lievae_train: strategy {fields['strategy']}, {fields['num_replicas']} replica{plural} "
          f"on {where}; global batch {fields['global_batch_size']} = "
          f"{fields['per_replica_batch_size']} per replica")


def nvidia_smi_gpus():
  """The GPU names `nvidia-smi -L` lists; none without nvidia-smi or when it fails (no driver)."""
  executable = shutil.which("nvidia-smi")
  if not executable:
    return []
  try:
    listed = subprocess.run([executable, "-L"], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return []
  if listed.returncode:
    return []
  return re.findall(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?\s*$", listed.stdout, re.M)


def invisible_gpu_warning():
  """One line when nvidia-smi lists GPUs and TF sees none: the likely cause and the fix; else None."""
  listed = nvidia_smi_gpus()
  if not listed or tf.config.list_physical_devices("GPU"):
    return None
  models = ", ".join(sorted(set(listed)))
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if not tf.test.is_built_with_cuda():
    cause = ("this environment has TensorFlow's CPU build (tensorflow-cpu); rebuild it with "
             "`bash scripts/setup_env.sh`, which installs the GPU build when nvidia-smi lists a GPU "
             "(LIEVAE_TF_BUILD=gpu forces it)")
  elif visible is not None:
    cause = f"CUDA_VISIBLE_DEVICES={visible!r} hides them; unset it or name the GPUs to use"
  else:
    cause = ("TensorFlow's GPU build could not use them, most likely an NVIDIA driver too old for "
             "CUDA 12.2 (update it to 525.60.13 or newer) or a CUDA/cuDNN library it could not load "
             "(TF's log lines above say which); see docs/gpu.md")
  return (f"lievae_train: WARNING: nvidia-smi lists {len(listed)} GPU(s) ({models}) but TensorFlow "
          f"sees none, so this run trains on the CPU: {cause}.")


def announce(strategy, global_batch_size):
  """Prints the GPU warning (once per process) and the device line; returns the report fields."""
  global _warned
  warning = None if _warned else invisible_gpu_warning()
  if warning:
    print(warning, file=sys.stderr)
    _warned = True
  fields = report(strategy, global_batch_size)
  print(summary_line(fields), file=sys.stderr)
  return fields

"""What a run trains on: the line every run starts with, the same fields for its results, and one
warning when the machine has NVIDIA GPUs that TensorFlow cannot see (training would silently run on
the CPU), or when mixed bfloat16 would run on a CPU's slow fallback kernels."""

import os
import platform
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


def local_devices(strategy):
  """The devices this process trains on."""
  if strategy_name(strategy) == "default":
    # TF's default placement: the first GPU if there is one, else the CPU.
    return [d.name for d in tf.config.list_logical_devices("GPU")[:1]] or ["/device:CPU:0"]
  return list(strategy.extended.worker_devices)


def precision_problem(precision, strategy=None):
  """Why `precision` cannot train on this process's devices, or None if it can.

  TensorFlow gives bfloat16 ops to oneDNN on an AVX512F CPU; a oneDNN held below AVX-512 there
  (ONEDNN_MAX_CPU_ISA=AVX2) has no bfloat16 convolution, and the step would fail at its first batch
  with "could not create a primitive descriptor". So a tiny bfloat16 convolution, forward and
  backward as the networks run it, is tried on each device before anything is written.
  """
  if precision != "mixed_bfloat16":
    return None
  for device in local_devices(strategy or tf.distribute.get_strategy()):
    try:
      with tf.device(device):
        images = tf.ones([1, 8, 8, 2], tf.bfloat16)
        kernel = tf.ones([4, 4, 2, 2], tf.bfloat16)
        with tf.GradientTape() as tape:
          tape.watch([images, kernel])
          features = tf.nn.conv2d(images, kernel, 2, "SAME")
          features = tf.nn.conv2d_transpose(features, kernel, [1, 8, 8, 2], 2, "SAME")
        tape.gradient(features, [images, kernel])
    except tf.errors.OpError as error:
      # oneDNN's words ("could not create a primitive descriptor for ..."), not TF's wrapping.
      words = re.search(r"message: ([^.,]+)", error.message)
      detail = words.group(1) if words else error.message.strip().splitlines()[0][:200]
      isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
      limit = f" (ONEDNN_MAX_CPU_ISA={isa} is set)" if isa else ""
      why_cpu = ("On CPUs, TensorFlow's oneDNN kernels compute bfloat16 convolutions only with "
                 "AVX-512 (best with AVX512_BF16). " if "CPU" in device.upper() else "")
      return (f"training.precision = 'mixed_bfloat16' cannot run on {_describe(device, {})}"
              f"{limit}: a bfloat16 convolution failed there ({detail}). {why_cpu}Train with "
              "training.precision = 'float32' (the default) on this machine")
  return None


# What mixed bfloat16 costs on the fallback kernels (bench/train_throughput.py, docs/speed.md): on a
# 2-core AMD EPYC without AVX-512 its step ran at 0.13x (dSprites) and 0.14x (3DShapes) the float32
# step's images/s; with oneDNN off on an AVX-512 EPYC, at 0.025x (dSprites).
FALLBACK_COST = "7-40x slower than float32 as measured (docs/speed.md)"


def _cpu_features():
  """{feature: bool} as NumPy's run-time dispatch reads them from cpuid; {} if it cannot say."""
  try:
    from numpy._core._multiarray_umath import __cpu_features__  # pylint: disable=g-import-not-at-top
  except ImportError:
    try:  # NumPy 1
      from numpy.core._multiarray_umath import __cpu_features__  # pylint: disable=g-import-not-at-top
    except ImportError:
      return {}
  return dict(__cpu_features__)


def cpu_bfloat16_fallback():
  """Why this process's CPU bfloat16 ops run on TensorFlow's fallback kernels, or None where they
  run on oneDNN's (or where it cannot be told: not x86).

  TensorFlow's own rule (its oneDNN graph pass, IsBF16SupportedByOneDNNOnThisCPU): oneDNN's
  bfloat16 kernels only with oneDNN on (TF_ENABLE_ONEDNN_OPTS) and an AVX512F CPU; otherwise Eigen's
  generic kernels, which run but convert every element to float32 and back.
  """
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return None
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    onednn_on = _pywrap_util_port.IsMklEnabled()  # follows TF_ENABLE_ONEDNN_OPTS at run time
  except (ImportError, AttributeError):
    onednn_on = None
  if onednn_on is False:
    return f"oneDNN is off (TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')})"
  features = _cpu_features()
  if features and not features.get("AVX512F"):
    return "this CPU has no AVX-512"
  return None


def bfloat16_kernels(strategy=None):
  """'oneDNN', 'fallback' or 'GPU': what computes this process's bfloat16 convolutions."""
  local = local_devices(strategy or tf.distribute.get_strategy())
  if all("GPU" in d.upper() for d in local):
    return "GPU"
  return "fallback" if cpu_bfloat16_fallback() else "oneDNN"


def fallback_warning(precision, strategy=None):
  """One line when mixed bfloat16 would train on the CPU's fallback kernels; else None."""
  if precision != "mixed_bfloat16" or bfloat16_kernels(strategy) != "fallback":
    return None
  return (f"lievae_train: WARNING: training.precision = 'mixed_bfloat16' runs here on TensorFlow's "
          f"fallback bfloat16 kernels, not oneDNN's ({cpu_bfloat16_fallback()}): {FALLBACK_COST}. "
          "Train with training.precision = 'float32' (the default) on this machine; bfloat16 "
          "speeds training up on a CPU with AVX-512 (oneDNN on) or a GPU.")


def report(strategy, global_batch_size, precision="float32"):
  """This process's share of the run, as fields of `train_results.json`."""
  replicas = strategy.num_replicas_in_sync
  local = local_devices(strategy)
  gpu_names = _gpu_names() if len(tf.config.list_logical_devices("GPU")) == len(
      tf.config.list_physical_devices("GPU")) else {}  # logical splits of a GPU: no name
  return dict(strategy=strategy_name(strategy), num_replicas=replicas,
              num_workers=max(1, replicas // max(1, len(local))),
              devices=", ".join(_describe(d, gpu_names) for d in local),
              global_batch_size=global_batch_size,
              per_replica_batch_size=global_batch_size // replicas,
              **({"bfloat16_kernels": bfloat16_kernels(strategy)}
                 if precision == "mixed_bfloat16" else {}))


def summary_line(fields):
  """One line naming the strategy, the replicas, the devices and the global / per-replica batch."""
  where = fields["devices"]
  if fields["num_workers"] > 1:
    where = f"{fields['num_workers']} workers (this one: {where})"
  plural = "s" if fields["num_replicas"] > 1 else ""
  kernels = fields.get("bfloat16_kernels")
  how = f"; mixed_bfloat16 on {_KERNEL_WORDS[kernels]}" if kernels else ""
  return (f"lievae_train: strategy {fields['strategy']}, {fields['num_replicas']} replica{plural} "
          f"on {where}; global batch {fields['global_batch_size']} = "
          f"{fields['per_replica_batch_size']} per replica{how}")


_KERNEL_WORDS = {"oneDNN": "oneDNN's bfloat16 kernels", "GPU": "the GPU's bfloat16 kernels",
                 "fallback": "TensorFlow's fallback bfloat16 kernels (slow)"}


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


def announce(strategy, global_batch_size, precision="float32"):
  """Prints the GPU warning (once per process) and the device line; returns the report fields."""
  global _warned
  warning = None if _warned else invisible_gpu_warning()
  if warning:
    print(warning, file=sys.stderr)
    _warned = True
  fields = report(strategy, global_batch_size, precision)
  print(summary_line(fields), file=sys.stderr)
  return fields

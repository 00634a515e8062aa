"""What this machine's CPU does with bfloat16, found out apart from the product's own probe
(lievae_tf.training.devices reads cpuid through NumPy and asks TensorFlow whether oneDNN is on; this
reads the kernel's /proc/cpuinfo and the environment a command will run in).

TensorFlow hands bfloat16 ops to oneDNN only on an AVX512F CPU with oneDNN on; elsewhere it runs
Eigen's generic bfloat16 kernels, slowly. On an AVX512F CPU whose oneDNN is held below AVX-512 by
ONEDNN_MAX_CPU_ISA, oneDNN is still asked and has no bfloat16 convolution: the step would fail.
"""

import os
import platform

# oneDNN's ISA names below avx512_core, the lowest level with bfloat16 convolutions on AVX-512.
_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def cpu_flags():
  """The CPU flags /proc/cpuinfo lists, or None where it cannot be read."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return None


def expected_bfloat16(env):
  """'oneDNN', 'fallback' or 'refused': what mixed bfloat16 training on the CPU does in a process
  with environment `env`; None where this probe cannot tell (not x86 Linux)."""
  flags = cpu_flags()
  if flags is None or platform.machine().lower() not in ("x86_64", "amd64"):
    return None
  if env.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() in ("0", "false"):
    return "fallback"
  if "avx512f" not in flags:
    return "fallback"
  if env.get("ONEDNN_MAX_CPU_ISA", "").upper() in _BELOW_AVX512:
    return "refused"
  return "oneDNN"


def cpu_class():
  """A short name of this CPU's class, for messages."""
  flags = cpu_flags() or set()
  if "avx512_bf16" in flags:
    return "AVX-512 with AVX512_BF16"
  if "avx512f" in flags:
    return "AVX-512"
  return "AVX2" if "avx2" in flags else "below AVX2"


def describe(env):
  keys = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")
  set_here = ", ".join(f"{k}={env[k]}" for k in keys if k in env)
  return f"{cpu_class()} CPU{' under ' + set_here if set_here else ''}"

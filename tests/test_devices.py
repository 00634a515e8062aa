"""What a run says it trains on: the first line of every run, the same fields in
train_results.json, and the warning when `nvidia-smi` lists GPUs that TensorFlow cannot see (with a
stand-in `nvidia-smi` on PATH). The 2-replica and 2-worker cases are checked in
test_distributed.py, beside the runs that make them.

On a machine whose GPUs TensorFlow sees, the warning's run hides them (CUDA_VISIBLE_DEVICES=""),
as a user would, and names that as the cause; the in-process announcement expects no warning and
the first GPU, with the name TensorFlow gives it (`expected_default_devices`)."""

import json
import os
import stat

import tensorflow as tf

from conftest import command, train_args
from lievae_tf.training import devices

A100 = "NVIDIA A100-SXM4-40GB"


def stand_in_nvidia_smi(directory, body):
  """An `nvidia-smi` in `directory`; returns a PATH that finds it first."""
  path = directory / "nvidia-smi"
  path.write_text("#!/bin/sh\n" + body + "\n")
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return f"{directory}:{os.environ['PATH']}"


def lists_two_gpus(directory):
  return stand_in_nvidia_smi(directory, f"echo 'GPU 0: {A100} (UUID: GPU-0)'\n"
                                        f"echo 'GPU 1: {A100} (UUID: GPU-1)'")


def expected_cause(env):
  """The cause the warning must name for a run in `env` (in which TF sees no GPU)."""
  if not tf.test.is_built_with_cuda():
    return "TensorFlow's CPU build (tensorflow-cpu); rebuild it with `bash scripts/setup_env.sh`"
  if env.get("CUDA_VISIBLE_DEVICES") is not None:
    return "CUDA_VISIBLE_DEVICES="
  return "an NVIDIA driver too old for CUDA 12.2"


def test_a_cpu_run_says_what_trains_and_warns_once_about_invisible_gpus(tmp_path):
  model_dir = tmp_path / "m"
  env = dict(os.environ, PATH=lists_two_gpus(tmp_path))
  if tf.config.list_physical_devices("GPU"):
    env["CUDA_VISIBLE_DEVICES"] = ""  # GPUs TF would see: hidden, so that the run is a CPU run
  result = command("lievae_train", *train_args(str(model_dir)), env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert lines.count("lievae_train: strategy default, 1 replica on CPU:0; "
                     "global batch 8 = 8 per replica") == 1
  warnings = [l for l in lines if "lievae_train: WARNING:" in l]
  assert len(warnings) == 1, result.stderr[-3000:]
  assert f"nvidia-smi lists 2 GPU(s) ({A100}) but TensorFlow sees none" in warnings[0]
  assert "trains on the CPU" in warnings[0] and expected_cause(env) in warnings[0]
  # Said before training starts: the device line comes before the first progress report.
  assert result.stderr.index("strategy default") < result.stderr.index("/6 [")
  with open(model_dir / "results" / "json" / "train_results.json") as f:
    results = json.load(f)
  assert {k: results[k] for k in ("strategy", "num_replicas", "num_workers", "devices",
                                  "global_batch_size", "per_replica_batch_size")} == dict(
      strategy="default", num_replicas=1, num_workers=1, devices="CPU:0",
      global_batch_size=8, per_replica_batch_size=8)


def test_no_warning_without_listed_gpus(tmp_path, monkeypatch):
  # A driver that is not loaded: nvidia-smi fails, so there is no GPU to miss.
  monkeypatch.setenv("PATH", stand_in_nvidia_smi(
      tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the "
                "NVIDIA driver.'\nexit 9"))
  assert devices.nvidia_smi_gpus() == []
  assert devices.invisible_gpu_warning() is None


def expected_default_devices():
  """Where TF's default placement puts a run in this process: the first GPU it sees, with the
  name TF reports for it, else the CPU."""
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return "CPU:0"
  name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
  return f"GPU:0 ({name})" if name else "GPU:0"


def test_the_warning_is_given_once_per_process(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", lists_two_gpus(tmp_path))
  monkeypatch.setattr(devices, "_warned", False)
  assert devices.nvidia_smi_gpus() == [A100, A100]
  strategy = tf.distribute.get_strategy()
  first = devices.announce(strategy, 16)
  second = devices.announce(strategy, 16)
  where = expected_default_devices()
  assert first == second == dict(strategy="default", num_replicas=1, num_workers=1,
                                 devices=where, global_batch_size=16, per_replica_batch_size=16)
  err = capsys.readouterr().err.splitlines()
  # Once, and only where TF sees no GPU: GPUs it sees are not missed.
  assert sum("WARNING" in l for l in err) == (0 if tf.config.list_physical_devices("GPU") else 1)
  assert err.count(f"lievae_train: strategy default, 1 replica on {where}; "
                   "global batch 16 = 16 per replica") == 2


def test_the_line_of_a_worker_of_a_cluster():
  fields = dict(strategy="multi_worker", num_replicas=8, num_workers=2,
                devices=f"GPU:0 ({A100}), GPU:1 ({A100}), GPU:2 ({A100}), GPU:3 ({A100})",
                global_batch_size=256, per_replica_batch_size=32)
  assert devices.summary_line(fields) == (
      f"lievae_train: strategy multi_worker, 8 replicas on 2 workers (this one: GPU:0 ({A100}), "
      f"GPU:1 ({A100}), GPU:2 ({A100}), GPU:3 ({A100})); global batch 256 = 32 per replica")

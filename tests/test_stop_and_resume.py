"""A batch system's warning signal (SIGUSR1/SIGUSR2, sent before a time limit or a preemption)
stops `lievae_train` like SIGTERM, with the "stopped, resume me" exit status, and `lievae_sweep
--launcher=local` reports such a run as stopped, not failed, and resumes it on the next command."""

import glob
import json
import os
import signal
import subprocess

import pytest

import conftest
from conftest import command, train_args, wait_for_logged_step
from lievae_tf import errors


def _latest_step(model_dir):
  names = glob.glob(os.path.join(model_dir, "tf_checkpoint", "ckpt-*.index"))
  return max(int(os.path.basename(n)[len("ckpt-"):-len(".index")]) for n in names)


def test_warning_signals_save_the_step_and_exit_with_the_resume_status(tmp_path):
  bindings = ("model.training_steps = 40", "training.checkpoint_every = 1000",
              "training.log_every = 2")
  model_dir = str(tmp_path / "model")
  args = train_args(model_dir, *bindings)
  stopped_at = 0
  for warning in (signal.SIGUSR2, signal.SIGUSR1):
    earlier_events = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
    process = subprocess.Popen([os.path.join(conftest.BIN, "lievae_train"), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_logged_step(process, model_dir, earlier_events)
    process.send_signal(warning)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == errors.EXIT_STOPPED == 75, stderr[-3000:]
    message = stderr.rstrip().splitlines()[-1]
    assert message.startswith(f"lievae_train: error: stopped by {warning.name} at step"), message
    assert "Traceback" not in stderr
    step = int(message.split(" at step ")[1].split(",")[0])
    assert stopped_at < step < 40
    # The only checkpoints (checkpoint_every is beyond the end) are the ones the signals made.
    assert _latest_step(model_dir) == step and f"ckpt-{step}" in message
    stopped_at = step
  result = command("lievae_train", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resuming from step {stopped_at}" in result.stderr
  assert _latest_step(model_dir) == 40


def _children(pid):
  """The pids of the child processes of `pid` (of any of its threads)."""
  found = []
  for children in glob.glob(f"/proc/{pid}/task/*/children"):
    with open(children) as f:
      found += [int(c) for c in f.read().split()]
  return found


def _command_name(pid):
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return " ".join(os.path.basename(a.decode()) for a in f.read().split(b"\0")[:2])
  except FileNotFoundError:
    return ""


def test_local_sweep_reports_a_stopped_run_and_the_next_command_resumes_it(tmp_path):
  output_dir = str(tmp_path / "study")
  args = ["--study=comparison_synthetic", "--seeds=0", "--settings=clg_vae",
          f"--output_dir={output_dir}", "--gin_bindings=model.training_steps = 40",
          "--gin_bindings=model.batch_size = 8", "--gin_bindings=model.eval_steps = 2",
          "--gin_bindings=training.checkpoint_every = 1000",
          "--gin_bindings=training.log_every = 2", "--metrics=mig",
          "--metric_bindings=mig.num_train = 300"]
  sweep = subprocess.Popen([os.path.join(conftest.BIN, "lievae_sweep"), *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  model_dir = os.path.join(output_dir, "clg_vae", "seed0")
  wait_for_logged_step(sweep, model_dir)
  trainers = [p for p in _children(sweep.pid) if "lievae_train" in _command_name(p)]
  assert len(trainers) == 1, [_command_name(p) for p in _children(sweep.pid)]
  os.kill(trainers[0], signal.SIGUSR2)  # what a batch system sends its job's processes
  stdout, stderr = sweep.communicate(timeout=120)
  assert sweep.returncode == 75, stdout[-3000:] + stderr[-3000:]
  assert "clg_vae/seed0: train STOPPED" in stdout
  message = stderr.rstrip().splitlines()[-1]
  assert "1 of 1 runs were stopped" in message and "re-run the same command" in message
  assert "failed" not in stdout + stderr
  stopped_at = _latest_step(model_dir)
  assert not os.path.exists(os.path.join(output_dir, "results.json"))

  result = command("lievae_sweep", *args, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  with open(os.path.join(output_dir, "logs", "clg_vae", "seed0", "train.log")) as f:
    assert f"resuming from step {stopped_at}" in f.read()
  with open(os.path.join(output_dir, "results.json")) as f:
    assert len(json.load(f)["evaluation_results.discrete_mig"]) == 1

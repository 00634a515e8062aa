"""`lievae_sweep --launcher=slurm` against a real one-node SLURM (scripts/slurm_local.sh): the
study's results equal the local launcher's, training and scoring run as separate jobs (a failed
training cancels only its own scoring), the warning signal requeues a run that then ends bit for
bit where an uninterrupted run does, a repeat submits nothing already queued, --cancel, and one
model trained by two SLURM tasks (--tasks_per_node=2) as one device would.

Under CI=true a SLURM that cannot start fails these tests; elsewhere, where no SLURM answers, they
are skipped, saying how to start one (a test run outside CI installs and starts nothing itself).
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import conftest
from conftest import command

# One worker runs them all (pytest-xdist): the cluster is started at most once.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("test_slurm")]

SCRIPT = os.path.join(conftest.REPO, "scripts", "slurm_local.sh")
TINY = ["--gin_bindings=model.training_steps = 6", "--gin_bindings=model.batch_size = 8",
        "--gin_bindings=model.eval_steps = 2", "--gin_bindings=training.deterministic = True",
        "--metrics=mig", "--metric_bindings=mig.num_train = 300"]


def _cluster_answers():
  if not shutil.which("sinfo"):
    return False
  try:
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
  except subprocess.TimeoutExpired:
    return False


def _cannot_run(reason):
  if os.environ.get("CI", "").strip().lower() == "true":
    pytest.fail(f"SLURM is needed under CI=true: {reason}")
  pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
  """A SLURM that answers: the one running, else one started by scripts/slurm_local.sh (and
  stopped at the end)."""
  started = False
  if not _cluster_answers():
    if os.environ.get("CI", "").strip().lower() != "true":
      # Outside CI a test run installs no system packages and starts no daemons by itself.
      pytest.skip("no SLURM answers here: `bash scripts/slurm_local.sh start` (as root) runs a "
                  "one-node SLURM on this machine (it installs Debian's slurm and munge if "
                  "missing); `... stop` stops it")
    if os.geteuid() != 0:
      _cannot_run("no SLURM answers and starting one (scripts/slurm_local.sh) needs root")
    result = subprocess.run(["bash", SCRIPT, "start"], capture_output=True, text=True,
                            timeout=900)
    if result.returncode or not _cluster_answers():
      _cannot_run(f"scripts/slurm_local.sh start failed: {result.stderr[-2000:]}")
    started = True
  yield
  if started:
    subprocess.run(["bash", SCRIPT, "stop"], capture_output=True, text=True, timeout=300)


def _study_args(output_dir, *extra, seeds="0-1"):
  return ["--study=comparison_synthetic", f"--seeds={seeds}", "--settings=clg_vae",
          f"--output_dir={output_dir}", *TINY, *extra]


def _submissions(output_dir):
  with open(os.path.join(output_dir, "slurm", "submissions.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _queued(job_ids):
  listed = subprocess.run(["squeue", "-h", "--array", "-o", "%i"], capture_output=True,
                          text=True, check=True).stdout.split()
  return [j for j in listed if j.split("_")[0] in job_ids]


def _scores(results_json):
  """{(model, seed): discrete MIG} of an aggregated results.json."""
  with open(results_json) as f:
    aggregated = json.load(f)
  models, seeds = aggregated["train_config.model.model"], aggregated[
      "train_config.model.random_seed"]
  migs = aggregated["evaluation_results.discrete_mig"]
  return {(models[k], seeds[k]): migs[k] for k in migs}


def test_a_study_on_slurm_scores_as_the_local_launcher(slurm_cluster, tmp_path):
  started = time.time()
  local = command("lievae_sweep", *_study_args(tmp_path / "local"), "--jobs=2", timeout=900)
  local_seconds = time.time() - started
  assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
  started = time.time()
  on_slurm = command("lievae_sweep", *_study_args(tmp_path / "slurm"), "--launcher=slurm",
                     "--wait", timeout=900)
  slurm_seconds = time.time() - started
  assert on_slurm.returncode == 0, on_slurm.stdout[-3000:] + on_slurm.stderr[-3000:]
  print(f"submit -> results.json: local {local_seconds:.0f} s, slurm {slurm_seconds:.0f} s")
  assert "submitted training job" in on_slurm.stdout and "submitted scoring job" in on_slurm.stdout
  assert "all 2 runs finished" in on_slurm.stdout
  # The console stays clean: no submitit/sacct warnings.
  assert "sacct" not in on_slurm.stdout + on_slurm.stderr
  slurm_scores = _scores(tmp_path / "slurm" / "results.json")
  assert len(slurm_scores) == 2
  assert slurm_scores == _scores(tmp_path / "local" / "results.json")
  # The runs ran in SLURM's array tasks: a training array, and a scoring array whose task i
  # waits for training task i alone.
  training, scoring = _submissions(tmp_path / "slurm")
  assert (training["kind"], scoring["kind"]) == ("train", "score")
  for submission in (training, scoring):
    assert sorted(submission["tasks"].values()) == ["clg_vae/seed0", "clg_vae/seed1"]
    for job_id, name in submission["tasks"].items():
      with open(tmp_path / "slurm" / "logs" / name / f"slurm_{submission['kind']}.json") as f:
        record = json.load(f)
      assert record["job_id"] == job_id and record["outcome"] == "finished"
  with open(scoring["submission_file"]) as f:
    script = f.read()
  assert f"#SBATCH --dependency=aftercorr:{training['job_id']}\n" in script
  assert "#SBATCH --kill-on-invalid-dep=yes\n" in script
  status = command("lievae_sweep", f"--output_dir={tmp_path / 'slurm'}", "--status")
  assert status.returncode == 0 and "2 finished" in status.stdout, status.stdout + status.stderr


def test_a_repeat_while_queued_submits_nothing_and_cancel_empties_the_queue(slurm_cluster,
                                                                            tmp_path):
  output_dir = tmp_path / "held"
  # Jobs that may start only in an hour: they stay queued for this test.
  args = _study_args(output_dir, "--launcher=slurm", "--slurm_additional=begin=now+3600")
  first = command("lievae_sweep", *args)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  submissions = _submissions(output_dir)
  job_ids = {submission["job_id"] for submission in submissions}
  assert len(submissions) == 2 and len(_queued(job_ids)) == 4  # 2 training, 2 scoring tasks
  repeat = command("lievae_sweep", *args)
  assert repeat.returncode == 0, repeat.stdout[-3000:] + repeat.stderr[-3000:]
  assert "2 queued or running, 0 to submit" in repeat.stdout
  assert _submissions(output_dir) == submissions and len(_queued(job_ids)) == 4
  status = command("lievae_sweep", f"--output_dir={output_dir}", "--status")
  assert status.stdout.count(": queued (training job ") == 2, status.stdout + status.stderr

  cancel = command("lievae_sweep", f"--output_dir={output_dir}", "--cancel")
  assert cancel.returncode == 0, cancel.stdout[-3000:] + cancel.stderr[-3000:]
  assert _queued(job_ids) == []
  again = command("lievae_sweep", f"--output_dir={output_dir}", "--cancel")
  assert "nothing of this study is queued or running" in again.stdout


def test_a_failed_training_cancels_only_its_own_scoring(slurm_cluster, tmp_path):
  output_dir = tmp_path / "one_fails"
  # seed1's model_dir is a file: its lievae_train fails; seed0's run is fine.
  os.makedirs(output_dir / "clg_vae")
  (output_dir / "clg_vae" / "seed1").write_text("not a model_dir")
  result = command("lievae_sweep", *_study_args(output_dir), "--launcher=slurm", "--wait",
                   timeout=900)
  assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
  message = result.stderr.rstrip().splitlines()[-1]
  assert "1 runs failed" in message and "clg_vae/seed1: training job" in message, message
  assert str(output_dir / "logs" / "clg_vae" / "seed1" / "train.log") in message
  assert os.path.isfile(output_dir / "clg_vae" / "seed0" / "metrics" / "mean" / "mig" /
                        "results" / "aggregate" / "evaluation.json")
  # The failed run's scoring task was cancelled (its dependency can never be met), not left
  # pending, and never ran.
  assert not os.path.exists(output_dir / "logs" / "clg_vae" / "seed1" / "slurm_score.json")
  assert _queued({s["job_id"] for s in _submissions(output_dir)}) == []
  assert not os.path.exists(output_dir / "results.json")


def _wait_for_training(model_dir, timeout=300):
  deadline = time.time() + timeout
  while True:
    events = glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))
    if events and os.path.getsize(events[0]) > 200:  # past its first logged step
      return
    assert time.time() < deadline, "the job never trained"
    time.sleep(0.05)


def _checkpoint_values(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_the_warning_signal_requeues_a_run_that_ends_bit_equal(slurm_cluster, tmp_path):
  output_dir = tmp_path / "preempted"
  args = _study_args(output_dir, "--launcher=slurm", "--gin_bindings=model.training_steps = 40",
                     "--gin_bindings=training.checkpoint_every = 1000",
                     "--gin_bindings=training.log_every = 2", seeds="0")
  submitted = command("lievae_sweep", *args)
  assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
  training, _ = _submissions(output_dir)
  [job_id] = training["tasks"]
  model_dir = os.path.join(output_dir, "clg_vae", "seed0")
  _wait_for_training(model_dir)
  # What SLURM sends before a time limit or a preemption (sbatch --signal=USR2@90).
  subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
  waited = command("lievae_sweep", f"--output_dir={output_dir}", "--wait", timeout=900)
  assert waited.returncode == 0, waited.stdout[-3000:] + waited.stderr[-3000:]
  assert os.path.isfile(output_dir / "results.json")
  shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                         check=True).stdout
  restarts = int(re.search(r"Restarts=(\d+)", shown).group(1))
  assert restarts >= 1, shown
  log_dir = output_dir / "logs" / "clg_vae" / "seed0"
  train_log = (log_dir / "train.log").read_text()
  resumed_from = int(re.search(r"resuming from step (\d+)", train_log).group(1))
  assert 0 < resumed_from < 40
  assert json.loads((log_dir / "slurm_train.json").read_text())["restarts"] == restarts

  # The same lievae_train command, uninterrupted.
  train_command = shlex.split(train_log.splitlines()[0][len("$ "):])
  reference_dir = str(tmp_path / "uninterrupted")
  train_command = [f"--model_dir={reference_dir}" if a.startswith("--model_dir=") else a
                   for a in train_command]
  reference_run = subprocess.run(train_command, capture_output=True, text=True, timeout=600)
  assert reference_run.returncode == 0, reference_run.stderr[-3000:]
  resumed = _checkpoint_values(os.path.join(model_dir, "tf_checkpoint", "ckpt-40"))
  reference = _checkpoint_values(os.path.join(reference_dir, "tf_checkpoint", "ckpt-40"))
  assert set(resumed) == set(reference)
  different = [name for name in reference if not np.array_equal(resumed[name], reference[name])]
  print(f"requeue: Restarts={restarts}, resumed from step {resumed_from}; variables that "
        f"differ: {different}")
  assert different == ["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]


def test_one_model_over_two_slurm_tasks_trains_as_one_device(slurm_cluster, tmp_path):
  """--tasks_per_node=2: one run, two lievae_train workers (one per SLURM task, each the child of
  its task), their cluster from SLURM's environment; the model ends as a one-device run of the
  same global batch and steps does, within the multi-worker test's bound."""
  # The multi-worker test's set-up and bound.
  from test_distributed import (  # pylint: disable=g-import-not-at-top
      CPU_ONLY, INITIAL_WEIGHTS_SCRIPT, _model_weights, assert_same_training)
  output_dir = tmp_path / "two_workers"
  result = command("lievae_sweep", *_study_args(output_dir, seeds="0"), "--launcher=slurm",
                   "--tasks_per_node=2", "--wait", env=CPU_ONLY, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  training, scoring = _submissions(output_dir)
  with open(training["submission_file"]) as f:
    assert "#SBATCH --ntasks-per-node=2\n" in f.read()
  with open(scoring["submission_file"]) as f:
    assert "#SBATCH --ntasks-per-node=1\n" in f.read()
  model_dir = output_dir / "clg_vae" / "seed0"
  log_dir = output_dir / "logs" / "clg_vae" / "seed0"
  # Both workers, each in its own task, took part in one run of 2 replicas.
  expected = ("lievae_train: strategy multi_worker, 2 replicas on 2 workers (this one: CPU:0); "
              "global batch 8 = 4 per replica")
  for log in ("train.log", "train.worker1.log"):
    assert expected in (log_dir / log).read_text().splitlines(), (log_dir / log).read_text()
  with open(model_dir / "results" / "json" / "train_results.json") as f:
    results = json.load(f)
  assert [results[k] for k in ("strategy", "num_replicas", "num_workers")] == [
      "multi_worker", 2, 2]

  # The same lievae_train command on one device, and the weights it starts from.
  train_command = shlex.split((log_dir / "train.log").read_text().splitlines()[0][len("$ "):])
  one_device_dir, initial_dir = str(tmp_path / "one_device"), str(tmp_path / "initial")
  one_device = [a for a in train_command if not a.startswith("--model_dir=")] + [
      "--gin_bindings=training.strategy = 'default'"]
  single_run = subprocess.run([*one_device, f"--model_dir={one_device_dir}"], env=CPU_ONLY,
                              capture_output=True, text=True, timeout=600)
  assert single_run.returncode == 0, single_run.stderr[-3000:]
  initial = subprocess.run([sys.executable, "-c", INITIAL_WEIGHTS_SCRIPT, initial_dir,
                            *one_device[1:]], env=CPU_ONLY, capture_output=True, text=True,
                           timeout=600)
  assert initial.returncode == 0, initial.stderr[-3000:]
  workers = _model_weights(str(model_dir / "tf_checkpoint" / "ckpt-6"))
  single = _model_weights(os.path.join(one_device_dir, "tf_checkpoint", "ckpt-6"))
  start = _model_weights(os.path.join(initial_dir, "tf_checkpoint", "ckpt-0"))
  assert_same_training(workers, single, start, label="two SLURM tasks vs one device: ")

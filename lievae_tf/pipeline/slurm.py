"""`lievae_sweep --launcher=slurm`: a study's runs as SLURM job arrays, through submitit.

Each pending run is one task of a training array (its `lievae_train`, on the GPU partition) and one
task of a scoring array (`dlib_postprocess`, `lievae_evaluate`: CPU-bound, on the scoring
partition) that starts when that run's training task has finished (`--dependency=aftercorr:` the
training array, with `--kill-on-invalid-dep=yes`: a failed training cancels its own scoring only).
submitit's job process (on the node) runs the task's pending steps as child processes, so that
`lievae_train`'s signal handling and submitit's do not fight. On SLURM's warning signal (USR2,
`--signal=USR2@90`, before a time limit or a preemption) the step running saves its work and
exits (`errors.EXIT_STOPPED`); then submitit requeues the task (`scontrol requeue`) and the
requeued task resumes where the run stopped.

What was submitted is kept in OUTPUT_DIR/slurm/ (the output dir must be on a filesystem the nodes
share): `study.json` (every run of the study and the files that mark its steps finished),
`submissions.jsonl` (one line per array: its job id and which task is which run) and submitit's
logs in `logs/`. A run's state comes from those files and `squeue` (no accounting database
needed): finished (its last marker exists), queued/running (its task is in squeue), else failed or
stopped (what its tasks wrote in `logs/<run>/slurm_train.json` and `slurm_score.json`).
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from lievae_tf import errors
from lievae_tf.errors import UserError
from lievae_tf.pipeline import commands

try:
  from submitit.helpers import Checkpointable as _Checkpointable  # pylint: disable=g-import-not-at-top
except ImportError:  # in the requirements; only --launcher=slurm needs it
  _Checkpointable = object

# What a run's steps need from the submitting environment, carried by the job itself: clusters
# may export no environment to jobs (sbatch --export=NONE).
CARRIED_ENVIRONMENT = ("DISENTANGLEMENT_LIB_DATA", "TF_CPP_MIN_LOG_LEVEL", "TF_NUM_INTRAOP_THREADS",
                       "TF_NUM_INTEROP_THREADS")
# SLURM's default MaxArraySize (the largest array has MaxArraySize - 1 as its last index).
DEFAULT_MAX_ARRAY_SIZE = 1001
POLL_SECONDS = 2.0  # --wait: squeue is cheap; a constant interval keeps the wait close to the work
# How long the job process waits for its step to save and exit after the warning signal; SLURM
# kills the job `signal_delay_s` (90 s) after the signal, at the time limit.
STOP_GRACE_SECONDS = 75


def _slurm_dir(output_dir):
  return os.path.join(output_dir, "slurm")


def _write_atomically(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.tmp{os.getpid()}"
  with open(temporary, "w") as f:
    f.write(text)
  os.replace(temporary, path)


KINDS = ("train", "score")  # a run's training task, then its scoring task


def _task_record_path(log_dir, kind):
  return os.path.join(log_dir, f"slurm_{kind}.json")


def _steps_of(run, kind):
  """The run's pending steps that a task of `kind` runs, from the files as they are now (a
  requeued scoring task redoes only the unfinished metrics)."""
  return [s for s in run.pending() if (s.name == "train") == (kind == "train")]


# --- On the node ----------------------------------------------------------------------------------

_running = {}  # the step process of this job process, for the signal handler (not pickled)


def _run_step(command, env, log_path):
  """Runs one step as a child process, its output in `log_path`; returns its exit status. The main
  thread only sleeps meanwhile (a thread reaps the child), so submitit's signal handler runs at
  once and may wait for the child itself without taking any lock the main thread could hold."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log:
    log.write("$ " + shlex.join(command) + "\n")
    log.flush()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
  _running["process"] = process
  threading.Thread(target=process.wait, daemon=True).start()
  while process.returncode is None:
    time.sleep(0.2)
  _running.clear()
  return process.returncode


class CheckpointableRunTask(_Checkpointable):
  """One run's pending steps, in its job's task; submitit requeues a Checkpointable on its
  warning signal (after `checkpoint`)."""

  def __call__(self, task):
    run, kind = task["run"], task["kind"]
    # A run over several SLURM tasks (--nodes_per_run, --tasks_per_node): srun starts this in
    # every task, and each starts its own lievae_train worker as its child, which finds its
    # cluster in the job step's environment (training.strategy 'auto'). Task 0 is the chief: it
    # alone keeps the record and the step's log under the usual names.
    rank = int(os.environ.get("SLURM_PROCID", 0))
    if rank:
      return self._run_worker(run, kind, task["env"], rank)
    record = {"job_id": _job_id(), "restarts": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
              "host": os.uname().nodename, "started": time.time(), "outcome": "running"}
    record_path = _task_record_path(run.log_dir, kind)
    _write_atomically(record_path, json.dumps(record))
    env = dict(os.environ)
    env.update(task["env"])
    steps = _steps_of(run, kind)
    if kind == "score" and any(s.name == "train" for s in run.pending()):
      record.update(outcome="failed", step="score", log=_task_record_path(run.log_dir, "train"))
      _write_atomically(record_path, json.dumps(record))
      raise UserError(f"{run.name}: its training is not finished; scoring needs it.")
    for step in steps:
      log_path = os.path.join(run.log_dir, f"{step.name}.log")
      status = _run_step(step.command, env, log_path)
      if status:
        stopped = status == errors.EXIT_STOPPED
        record.update(outcome="stopped" if stopped else "failed", step=step.name,
                      exit_status=status, log=log_path)
        _write_atomically(record_path, json.dumps(record))
        error = errors.Stopped if stopped else UserError
        raise error(f"{run.name}: {step.name} {'stopped' if stopped else 'failed'} "
                    f"(exit {status}); its log is {log_path}")
    record["outcome"] = "finished"
    _write_atomically(record_path, json.dumps(record))
    return run.name

  def _run_worker(self, run, kind, env_update, rank):
    """Task `rank` (> 0) of a multi-task training: its lievae_train worker, its own log."""
    if kind != "train":
      raise UserError(f"{run.name}: a {kind} job runs in one task (SLURM_PROCID={rank}).")
    env = dict(os.environ)
    env.update(env_update)
    for step in _steps_of(run, kind):
      log_path = os.path.join(run.log_dir, f"{step.name}.worker{rank}.log")
      status = _run_step(step.command, env, log_path)
      if status:
        error = errors.Stopped if status == errors.EXIT_STOPPED else UserError
        raise error(f"{run.name}: {step.name} worker {rank} exited {status}; its log is "
                    f"{log_path}")
    return run.name

  def checkpoint(self, task):
    """submitit calls this on the warning signal, before it requeues the job: the running step
    gets the signal too (SLURM signals the step's processes; sent again, in case it was sent to
    this process alone), saves and exits; the requeued job then resumes the run."""
    process = _running.get("process")
    if process is not None and process.returncode is None:
      process.send_signal(signal.SIGUSR2)
      deadline = time.time() + STOP_GRACE_SECONDS
      while process.returncode is None and time.time() < deadline:
        time.sleep(0.2)
    return super().checkpoint(task)


def _job_id():
  array = os.environ.get("SLURM_ARRAY_JOB_ID")
  if array:
    return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
  return os.environ.get("SLURM_JOB_ID", "")


# --- On the submitting machine --------------------------------------------------------------------

class Study:
  """The SLURM side of a study in OUTPUT_DIR: what was submitted and each run's state."""

  def __init__(self, output_dir):
    self.output_dir = os.path.abspath(output_dir)
    self.dir = _slurm_dir(self.output_dir)
    self.study_path = os.path.join(self.dir, "study.json")
    self.submissions_path = os.path.join(self.dir, "submissions.jsonl")
    self.logs_dir = os.path.join(self.dir, "logs")

  # Records.
  def runs(self):
    """[{name, log_dir, markers}] of every run of the study, as the last submission saw them."""
    if not os.path.isfile(self.study_path):
      raise UserError(f"{self.output_dir} holds no SLURM study (no {self.study_path}): submit it "
                      "first with lievae_sweep --launcher=slurm --study=... "
                      f"--output_dir={self.output_dir}.")
    with open(self.study_path) as f:
      return json.load(f)["runs"]

  def save_runs(self, runs):
    # markers: the training's first, then the scoring's.
    _write_atomically(self.study_path, json.dumps({"runs": [
        {"name": r.name, "log_dir": os.path.abspath(r.log_dir),
         "markers": [os.path.abspath(s.marker) for s in r.steps()]} for r in runs]}, indent=1))

  def submissions(self):
    if not os.path.isfile(self.submissions_path):
      return []
    with open(self.submissions_path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def _record_submission(self, submission):
    os.makedirs(self.dir, exist_ok=True)
    with open(self.submissions_path, "a") as f:
      f.write(json.dumps(submission) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def last_tasks(self):
    """{run name: {kind: job id of its task}} of the latest submissions."""
    tasks = {}
    for submission in self.submissions():
      for job_id, name in submission["tasks"].items():
        tasks.setdefault(name, {})[submission.get("kind", "train")] = job_id
    return tasks

  # States.
  def states(self):
    """{run name: (state, detail)}: finished, queued, running, failed, stopped, not run (left the
    queue without running: cancelled), not submitted."""
    queue = squeue()
    last_tasks = self.last_tasks()
    states = {}
    for run in self.runs():
      name, tasks = run["name"], last_tasks.get(run["name"], {})
      records = {k: _read_json(_task_record_path(run["log_dir"], k)) or {} for k in KINDS}
      restarts = sum(r.get("restarts", 0) for r in records.values())
      requeued = f", requeued {restarts} times" if restarts else ""
      trained = os.path.isfile(run["markers"][0])
      queued = {k: tasks[k] for k in KINDS if tasks.get(k) in queue}
      if all(os.path.isfile(m) for m in run["markers"]):
        states[name] = ("finished", requeued.lstrip(", "))
      elif queued:
        # The task that runs next: the training while it is not finished, else the scoring.
        kind = "train" if not trained and "train" in queued else next(iter(queued))
        slurm_state = queue[queued[kind]]
        state = "running" if slurm_state in ("RUNNING", "CONFIGURING", "COMPLETING") else "queued"
        what = "training" if kind == "train" else "scoring"
        states[name] = (state, f"{what} job {queued[kind]}{requeued}")
      elif tasks:
        kind = "score" if trained else "train"
        record = records[kind]
        outcome = record.get("outcome")
        if outcome == "stopped":
          states[name] = ("stopped", f"job {record['job_id']}: {record['step']} stopped after "
                          "saving; the next lievae_sweep resumes it")
        elif outcome in ("failed", "running"):  # "running": killed without a word
          job_id = record.get("job_id") or tasks.get(kind)
          log = record.get("log") or (self.job_logs(job_id) if job_id else "")
          states[name] = ("failed", f"{'training' if kind == 'train' else 'scoring'} job "
                          f"{job_id}{requeued}: log {log}")
        else:
          states[name] = ("not run", f"job {tasks.get(kind, '?')} left the queue without running "
                          "(cancelled?)")
      else:
        states[name] = ("not submitted", "")
    return states

  def job_logs(self, job_id):
    return os.path.join(self.logs_dir, f"{job_id}_0_log.err")

  def print_status(self, file=None):
    states = self.states()
    for name, (state, detail) in states.items():
      print(f"{name}: {state}" + (f" ({detail})" if detail else ""), file=file)
    counts = {}
    for state, _ in states.values():
      counts[state] = counts.get(state, 0) + 1
    print("lievae_sweep: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=file,
          flush=True)
    return states

  # Actions.
  def submit(self, runs, parameters, scoring_parameters, env):
    """Submits the runs neither finished nor queued/running: a training array and a scoring
    array after it (task for task) for the runs still to train, a scoring array for those only to
    score; arrays of at most MaxArraySize tasks. Returns the job ids."""
    self.save_runs(runs)
    states = self.states()
    active = [r for r in runs if states[r.name][0] in ("queued", "running")]
    pending = [r for r in runs if r.pending() and r not in active]
    again = [f"{r.name} ({states[r.name][0]})" for r in pending
             if states[r.name][0] in ("failed", "stopped", "not run")]
    finished = sum(1 for r in runs if not r.pending())
    print(f"lievae_sweep: {len(runs)} runs: {finished} finished, {len(active)} queued or running, "
          f"{len(pending)} to submit", flush=True)
    if again:
      print(f"lievae_sweep: submitting again {len(again)} run(s): {', '.join(again)}",
            flush=True)
    if not pending:
      return []
    import submitit  # pylint: disable=g-import-not-at-top
    to_train = [r for r in pending if _steps_of(r, "train")]
    to_score = [r for r in pending if not _steps_of(r, "train")]
    size = max_array_size()
    job_ids = []
    for first in range(0, len(to_train), size):
      chunk = to_train[first:first + size]
      train_id = self._submit_array(submitit, chunk, "train", parameters, env)
      # One array task per run: aftercorr lets scoring task i start when training task i has
      # finished (a single run is a plain job, hence afterok); a failed training makes its
      # scoring's dependency impossible, and SLURM then cancels that one task.
      dependency = f"{'aftercorr' if len(chunk) > 1 else 'afterok'}:{train_id}"
      after = dict(scoring_parameters, dependency=dependency)
      after["additional_parameters"] = dict(after.get("additional_parameters", {}),
                                            **{"kill-on-invalid-dep": "yes"})
      score_id = self._submit_array(submitit, chunk, "score", after, env)
      job_ids += [train_id, score_id]
    for first in range(0, len(to_score), size):
      job_ids.append(self._submit_array(submitit, to_score[first:first + size], "score",
                                        scoring_parameters, env))
    return job_ids

  def _submit_array(self, submitit, runs, kind, parameters, env):
    executor = submitit.SlurmExecutor(folder=self.logs_dir, python=shlex.quote(sys.executable))
    executor.update_parameters(**parameters)
    try:
      jobs = executor.map_array(CheckpointableRunTask(),
                                [{"run": r, "kind": kind, "env": env} for r in runs])
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as e:
      raise UserError(f"sbatch refused the {kind} job array: {_one_line(e)} (check the "
                      "--slurm_*/--scoring_* flags against the cluster's partitions and "
                      "limits).") from None
    array_id = jobs[0].job_id.split("_")[0]
    self._record_submission({"job_id": array_id, "kind": kind, "submitted": time.time(),
                             "tasks": {job.job_id: run.name for job, run in zip(jobs, runs)},
                             "dependency": parameters.get("dependency"),
                             "submission_file": os.path.join(self.logs_dir,
                                                             f"{array_id}_submission.sh")})
    what = "training" if kind == "train" else "scoring"
    print(f"lievae_sweep: submitted {what} job {array_id} ({len(runs)} runs"
          f"{', after ' + parameters['dependency'] if parameters.get('dependency') else ''}); "
          f"logs in {self.logs_dir}", flush=True)
    return array_id

  def active_job_ids(self):
    queue = squeue()
    return sorted({job_id for tasks in self.last_tasks().values() for job_id in tasks.values()
                   if job_id in queue})

  def cancel(self):
    ids = sorted({job_id.split("_")[0] for job_id in self.active_job_ids()})
    if not ids:
      print("lievae_sweep: nothing of this study is queued or running", flush=True)
      return
    subprocess.run(["scancel", *ids], check=False, capture_output=True, text=True)
    deadline = time.time() + 120
    while self.active_job_ids() and time.time() < deadline:
      time.sleep(0.5)
    left = self.active_job_ids()
    if left:
      raise UserError(f"scancel {' '.join(ids)}: still in the queue after 120 s: {left}.")
    print(f"lievae_sweep: cancelled job(s) {', '.join(ids)}", flush=True)

  def wait(self):
    """Polls squeue and the runs' files until none of the study's runs is queued or running and
    none of its tasks is in the queue, printing each change of state; returns the final states."""
    last = {}
    while True:
      states = self.states()
      for name, state in states.items():
        if last.get(name) != state:
          print(f"{name}: {state[0]}" + (f" ({state[1]})" if state[1] else ""), flush=True)
      last = states
      # Settled, and none of the study's tasks still in the queue (a task whose run is finished
      # may still be completing; a scoring task whose training failed is being cancelled).
      if all(state in _SETTLED for state, _ in states.values()) and not self.active_job_ids():
        return states
      time.sleep(POLL_SECONDS)


_SETTLED = ("finished", "failed", "stopped", "not submitted")


def conclude(study, states, env):
  """After a wait or a repeat: results.json when every run is finished, else what is not."""
  failed = {n: d for n, (s, d) in states.items() if s == "failed"}
  stopped = {n: d for n, (s, d) in states.items() if s == "stopped"}
  busy = [n for n, (s, _) in states.items() if s not in _SETTLED]
  if busy:
    print(f"lievae_sweep: {len(busy)} runs queued or running; `lievae_sweep "
          f"--output_dir={study.output_dir} --status` shows them, --wait waits for them.",
          flush=True)
    return None
  if failed:
    raise UserError(f"{len(failed)} runs failed (repeat the same command to submit them "
                    "again): " + "; ".join(f"{n}: {d}" for n, d in failed.items()))
  if stopped:
    raise errors.Stopped(f"{len(stopped)} runs were stopped after saving their work (repeat "
                         "the same command to resume them): " + ", ".join(stopped))
  unfinished = [n for n, (s, _) in states.items() if s != "finished"]
  if unfinished:  # cancelled, or never submitted
    raise UserError(f"{len(unfinished)} runs are not finished and not queued (cancelled?): "
                    f"{', '.join(unfinished)}; repeat the same command to submit them.")
  from lievae_tf.pipeline import sweep  # pylint: disable=g-import-not-at-top
  results = os.path.join(study.output_dir, "results.json")
  commands.run_logged(sweep.aggregate_sweep_command(study.output_dir), env,
                      os.path.join(study.output_dir, "logs", "aggregate.log"))
  print(f"lievae_sweep: all {len(states)} runs finished; aggregated results in {results}",
        flush=True)
  return results


def squeue():
  """{job id: state} of every job and array task in the queue (array tasks as ID_TASK)."""
  try:
    listed = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T"],
                            capture_output=True, text=True, timeout=60)
  except FileNotFoundError:
    raise UserError("squeue not found: --launcher=slurm runs where SLURM's commands are (a "
                    "login node); scripts/slurm_local.sh starts a one-node SLURM here.") from None
  if listed.returncode:
    raise UserError(f"squeue failed: {_one_line(listed.stderr)} (is SLURM up? sinfo tells).")
  queue = {}
  for line in listed.stdout.splitlines():
    job_id, _, state = line.strip().partition("|")
    queue[job_id] = state
  return queue


def max_array_size():
  """The cluster's MaxArraySize (tasks per array), SLURM's default if it does not say."""
  try:
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                           timeout=60).stdout
  except (FileNotFoundError, subprocess.TimeoutExpired):
    return DEFAULT_MAX_ARRAY_SIZE
  for line in shown.splitlines():
    key, _, value = line.partition("=")
    if key.strip() == "MaxArraySize" and value.strip().isdigit():
      return max(1, int(value.strip()))
  return DEFAULT_MAX_ARRAY_SIZE


def scoring_parameters(training_parameters, partition=None, cpus=1, mem_gb=None):
  """The scoring jobs' parameters: the training jobs' without their GPUs, on the scoring
  partition, with their own CPUs and memory."""
  parameters = {k: v for k, v in training_parameters.items()
                if k not in ("partition", "gpus_per_node", "mem", "cpus_per_task", "nodes")}
  # One task on one node, whatever a training's --nodes_per_run and --tasks_per_node.
  parameters.update(job_name="lievae_score", cpus_per_task=cpus, ntasks_per_node=1)
  if partition:
    parameters["partition"] = partition
  if mem_gb:
    parameters["mem"] = f"{int(round(mem_gb * 1024))}M"
  additional = {k: v for k, v in parameters.get("additional_parameters", {}).items()
                if not k.startswith(("gres", "gpu"))}
  parameters.pop("additional_parameters", None)
  if additional:
    parameters["additional_parameters"] = additional
  return parameters


def executor_parameters(partition=None, gpus_per_run=0, cpus_per_run=1, mem_gb=None,
                        timeout_min=24 * 60, max_parallel=256, additional=(), setup=(),
                        job_name="lievae_train", nodes_per_run=1, tasks_per_node=1):
  """submitit SlurmExecutor parameters of the training jobs, from lievae_sweep's flags.

  nodes_per_run x tasks_per_node > 1: each run is one model trained by that many workers (one per
  SLURM task, --cpus_per_run CPUs each, --gpus_per_run GPUs per node split over its tasks)."""
  for flag, value in (("nodes_per_run", nodes_per_run), ("tasks_per_node", tasks_per_node)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f"--{flag}={value!r}: give a positive number (1: one worker).")
  if gpus_per_run and gpus_per_run % tasks_per_node:
    raise UserError(f"--gpus_per_run={gpus_per_run} (GPUs per node) does not split evenly over "
                    f"--tasks_per_node={tasks_per_node}: give a multiple of it.")
  parameters = {"job_name": job_name, "cpus_per_task": cpus_per_run, "time": timeout_min,
                "array_parallelism": max_parallel, "ntasks_per_node": tasks_per_node}
  if nodes_per_run > 1:
    parameters["nodes"] = nodes_per_run
  if partition:
    parameters["partition"] = partition
  if gpus_per_run:
    parameters["gpus_per_node"] = gpus_per_run
  if mem_gb:
    parameters["mem"] = f"{int(round(mem_gb * 1024))}M"
  extra = {}
  for item in additional:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise UserError(f"--slurm_additional={item!r}: give KEY=VALUE, e.g. "
                      "--slurm_additional=qos=preemptible.")
    extra[key.strip()] = value.strip()
  if extra:
    parameters["additional_parameters"] = extra
  if setup:
    parameters["setup"] = list(setup)
  return parameters


def carried_environment(environ=None):
  environ = os.environ if environ is None else environ
  return {k: environ[k] for k in CARRIED_ENVIRONMENT if k in environ}


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _one_line(error):
  return " ".join(str(error).split())[:500]

"""Running a study: gin files x bindings x seeds, each run train -> postprocess (mean) -> evaluate.

`lievae_sweep --study=NAME --seeds=0-9 --output_dir=DIR` expands a study (pipeline/studies.py)
into runs `DIR/<setting>/seed<k>` (each a `--model_dir`), and runs every step that is not
finished yet with the real commands, as subprocesses, `jobs` runs at a time: `lievae_train`, then
the steps that score one model (pipeline/scoring.py): the stock `dlib_postprocess`, then
`lievae_evaluate` of the run's pending metrics (or with `stock_dlib_evaluate` the stock
`dlib_evaluate` per metric); at the end `dlib_aggregate_results` writes `DIR/results.json`. A step
is finished when its `results/aggregate/<step>.json` exists (dlib writes it last), so an
interrupted sweep resumes where it stopped; `lievae_train` itself resumes an unfinished training
from its checkpoint. Finished steps are not re-checked against changed flags: to redo a run,
delete its directory.
"""

import concurrent.futures
import os
import shlex
import threading
import time

from lievae_tf import errors
from lievae_tf import gin_configs
from lievae_tf import model_dir as model_dir_lib
from lievae_tf.errors import UserError
from lievae_tf.pipeline import commands
from lievae_tf.pipeline import scoring
from lievae_tf.pipeline import studies


def parse_seeds(text):
  """'0-9' or '0,3,5' or '1-2,7' -> sorted list of ints."""
  seeds = set()
  try:
    for part in str(text).split(","):
      part = part.strip()
      if "-" in part:
        low, high = (int(v) for v in part.split("-", 1))
        if high < low:
          raise ValueError
        seeds.update(range(low, high + 1))
      elif part:
        seeds.add(int(part))
  except ValueError:
    raise UserError(f"--seeds={text!r}: give seeds as a range and/or list, e.g. 0-9 or "
                    "0,2,5-7.") from None
  if not seeds:
    raise UserError("--seeds is empty: give e.g. --seeds=0-9.")
  return sorted(seeds)


class SweepRun:
  """One (setting, seed) of a sweep: its model_dir and the commands of its steps; `metrics`:
  [registry.BoundMetric]."""

  def __init__(self, output_dir, setting, seed, metrics, extra_bindings=(),
               metric_bindings=(), study=None, metric_processes=None):
    self.setting, self.seed, self.metrics = setting, seed, metrics
    # study: its name, for `lievae_evaluate --study` (the study's metric sizes); metric_processes:
    # None scores with one stock dlib_evaluate per metric, N with one `lievae_evaluate` running
    # the run's pending metrics in N processes.
    self.study, self.metric_processes = study, metric_processes
    self.name = f"{setting.name}/seed{seed}"
    self.model_dir = os.path.join(output_dir, setting.name, f"seed{seed}")
    self.log_dir = os.path.join(output_dir, "logs", setting.name, f"seed{seed}")
    self.extra_bindings, self.metric_bindings = list(extra_bindings), list(metric_bindings)

  def train_step(self):
    train = commands.console_command("lievae_train") + [f"--model_dir={self.model_dir}"]
    for config in self.setting.gin_configs:
      path = config if os.path.isabs(config) else gin_configs.path(config)
      train.append(f"--gin_config={path}")
    train += [f"--gin_bindings={b}" for b in list(self.setting.bindings) + self.extra_bindings +
              [f"model.random_seed = {self.seed}"]]
    return scoring.Step("train", os.path.join(self.model_dir, model_dir_lib.FINISHED_MARKER),
                        train)

  def steps(self):
    """[scoring.Step] in order: training, postprocessing, one stock dlib_evaluate per metric."""
    return [self.train_step(), scoring.postprocess_step(self.model_dir)] + scoring.metric_steps(
        self.model_dir, self.metrics, self.metric_bindings)

  def pending(self):
    """The steps not finished yet; with `metric_processes`, the pending metrics as one step."""
    pending = [s for s in self.steps() if not os.path.isfile(s.marker)]
    evaluations = [s for s in pending if s.metric]
    if not self.metric_processes or not evaluations:
      return pending
    metrics = [s.metric for s in evaluations]
    command = scoring.lievae_evaluate_command(self.model_dir, self.study, metrics,
                                              self.metric_processes, self.metric_bindings)
    return [s for s in pending if s not in evaluations] + [
        scoring.Step("evaluate_" + "+".join(m.name for m in metrics), evaluations[-1].marker,
                     command)]


def expand(study, output_dir, seeds, settings=None, extra_bindings=(), metric_bindings=(),
           metrics=None, protocol="dlib", study_name=None, metric_processes=None):
  """The runs of a study; `metric_processes`: see `SweepRun` (without `study_name`, the metrics
  are scored at dlib's sizes, as a study file's are)."""
  chosen = list(study.settings)
  if settings:
    unknown = sorted(set(settings) - {s.name for s in chosen})
    if unknown:
      raise UserError(f"--settings: {unknown} not in this study; it has "
                      f"{[s.name for s in chosen]}.")
    chosen = [s for s in chosen if s.name in settings]
  chosen_metrics = studies.choose_metrics(study, metrics, protocol)
  return [SweepRun(output_dir, s, seed, chosen_metrics, extra_bindings, metric_bindings,
                   study_name, metric_processes)
          for s in chosen for seed in seeds]


def aggregate_sweep_command(output_dir):
  """The stock `dlib_aggregate_results` of every evaluation of a sweep's runs."""
  return scoring.aggregate_command(os.path.join(output_dir, "*", "seed*"),
                                   os.path.join(output_dir, "results.json"))


def print_commands(runs, output_dir, file=None):
  """One shell line per run (its pending steps joined by &&), then the aggregation."""
  for run in runs:
    pending = run.pending()
    if pending:
      print(" && ".join(shlex.join(step.command) for step in pending), file=file)
  print(shlex.join(aggregate_sweep_command(output_dir)), file=file)


def run_sweep(runs, output_dir, jobs=1, env=None):
  """Runs every pending step, `jobs` runs at a time; returns the aggregated JSON's path."""
  env = dict(env or os.environ)
  total = len(runs)
  done = [sum(1 for r in runs if not r.pending())]
  lock = threading.Lock()
  failures, stopped = [], []
  print(f"lievae_sweep: {total} runs, {done[0]} already finished", flush=True)

  def run_one(run):
    pending = run.pending()
    if not pending:
      return  # counted as finished above
    os.makedirs(run.log_dir, exist_ok=True)
    for step in pending:
      started = time.time()
      with lock:
        print(f"[{done[0]}/{total}] {run.name}: {step.name} ...", flush=True)
      try:
        commands.run_logged(step.command, env, os.path.join(run.log_dir, f"{step.name}.log"))
      except errors.Stopped:
        # A signal (e.g. to the whole process group: Ctrl-C, a batch system's warning) stopped
        # it after saving: not a failure, the next command resumes it.
        with lock:
          stopped.append(run.name)
          print(f"[{done[0]}/{total}] {run.name}: {step.name} STOPPED (saved; re-run the same "
                "command to resume it)", flush=True)
        return
      except UserError as e:
        with lock:
          failures.append(f"{run.name}: {e}")
          print(f"[{done[0]}/{total}] {run.name}: {step.name} FAILED", flush=True)
        return
      with lock:
        print(f"[{done[0]}/{total}] {run.name}: {step.name} done in "
              f"{time.time() - started:.0f} s", flush=True)
    with lock:
      done[0] += 1
      print(f"[{done[0]}/{total}] {run.name}: finished", flush=True)

  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
    list(pool.map(run_one, runs))
  if failures:
    also = f"; {len(stopped)} stopped" if stopped else ""
    raise UserError(f"{len(failures)} of {total} runs failed{also} (re-run the same command to "
                    "resume the others' work):\n" + "\n".join(failures))
  if stopped:
    raise errors.Stopped(f"{len(stopped)} of {total} runs were stopped by a signal after saving "
                         f"their work ({', '.join(stopped)}); re-run the same command to resume "
                         "them.")
  results = os.path.join(output_dir, "results.json")
  commands.run_logged(aggregate_sweep_command(output_dir), env,
                      os.path.join(output_dir, "logs", "aggregate.log"))
  print(f"lievae_sweep: all {total} runs finished; aggregated results in {results}", flush=True)
  return results

"""A model's metrics in one process: dlib's own `evaluate_with_gin` for each, in turn, with the
dataset and the representation module loaded once.

Each stock `dlib_evaluate` process spends ~17 s reloading the dataset (dSprites' 737,280-image
npz) and loads the TF-Hub module again; the metric suite pays that once per metric. Here every
metric still runs through dlib's unmodified `evaluate.evaluate_with_gin` (its gin parsing, its
metric function with `np.random.RandomState(evaluation.random_seed)`, its result directory with
the operative gin config), so its results are the stock command's; only two things it calls are
shared between the metrics of one call:
  - the dataset classes that `dataset.name` picks (`named_data`'s constructors) return the
    instance built for the first metric, for the same arguments. The gin-configured
    `get_named_ground_truth_data` itself still runs, so `dataset.name` stays in each metric's
    operative config. Ground-truth datasets are read-only after construction (sampling takes the
    caller's random state), so sharing one cannot change a result;
  - `hub.eval_function_for_module` of the representation's module yields the function of one
    open session (the module's graph and weights, read-only).
One difference, for reproducibility: the gradient boosting of DCI and of the boosted-trees
downstream task draws from NumPy's global random state, which dlib never seeds (sklearn breaks
ties between equally good splits with it), so the stock `dlib_evaluate` gives a different DCI on
every run (0.1441 and 0.1430 for one model, two runs). Here the global state is seeded with the
metric's `evaluation.random_seed` before each metric: the same scores every run and whatever
ran before, and those of a stock `dlib_evaluate` whose process seeded it alike (the test does).
Within a process metrics run one after the other: each sets the global gin configuration and that
global state. `processes > 1` runs them in that many worker processes side by side (each loads the
dataset and the module once, so memory grows with the count), the costliest first, each taken by
the next idle worker; every metric's result depends only on its own seeded random states, so it
is the same whichever worker runs it and whatever ran before in that worker.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import sys
import time

from lievae_tf import model_dir
from lievae_tf.dlib.shared_loads import shared_loads as _shared_loads
from lievae_tf.errors import UserError
from lievae_tf.evaluation import registry


@dataclasses.dataclass(frozen=True)
class MetricJob:
  """One metric's `dlib_evaluate --overwrite`: its gin config with `bindings`, into `output_dir`."""
  metric: registry.Metric
  output_dir: str
  bindings: tuple


def _evaluate_one(representation_dir, job, log):
  """dlib's `evaluate_with_gin` of one `MetricJob`, with NumPy's global random state seeded (see
  above); returns the seconds it took."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  name = job.metric.name
  started = time.time()
  log(f"evaluate_{name} ...")
  gin.clear_config()  # as a fresh dlib_evaluate process starts
  try:
    gin.parse_config_files_and_bindings([job.metric.gin_config], list(job.bindings))
    np.random.seed(gin.query_parameter("evaluation.random_seed"))
    evaluate.evaluate(representation_dir, job.output_dir, True)
  finally:
    gin.clear_config()
  seconds = time.time() - started
  log(f"evaluate_{name} done in {seconds:.0f} s")
  return seconds


# A worker process's shared loads, open until the process ends.
_WORKER_LOADS = contextlib.ExitStack()


def _start_worker():
  from lievae_tf.dlib import shims  # pylint: disable=g-import-not-at-top
  shims.apply()  # dlib's shims, also where no .pth hook applied them
  _WORKER_LOADS.enter_context(_shared_loads())


def _worker_evaluate(representation_dir, job):
  return _evaluate_one(representation_dir, job, log=lambda m: print(m, flush=True))


def evaluate_metrics(representation_dir, jobs, log=print, processes=1):
  """Runs dlib's `evaluate_with_gin(representation_dir, output_dir, overwrite=True, [config],
  bindings)` for each `MetricJob` of `jobs`, as `dlib_evaluate --overwrite` would; returns
  {metric name: seconds}.

  processes: worker processes running metrics side by side (1: all in this process, in order),
  the costliest (`Metric.cost`) started first.
  """
  if processes < 1:
    raise UserError(f"metric processes = {processes}: give 1 or more.")
  jobs = list(jobs)
  if processes == 1 or len(jobs) == 1:
    with _shared_loads():
      return {job.metric.name: _evaluate_one(representation_dir, job, log) for job in jobs}
  ordered = sorted(jobs, key=lambda job: -job.metric.cost)  # stable: ties keep their order
  # spawn, not fork: TensorFlow's thread pools do not survive a fork.
  context = multiprocessing.get_context("spawn")
  seconds = {}
  with concurrent.futures.ProcessPoolExecutor(min(processes, len(jobs)), mp_context=context,
                                              initializer=_start_worker) as pool:
    futures = {pool.submit(_worker_evaluate, representation_dir, job): job.metric.name
               for job in ordered}
    try:
      for future in concurrent.futures.as_completed(futures):
        seconds[futures[future]] = future.result()
    except concurrent.futures.process.BrokenProcessPool as e:
      raise UserError(f"a metric worker process died ({e}); if it ran out of memory, use fewer "
                      "metric processes (each holds the dataset).") from None
    except BaseException:
      for future in futures:
        future.cancel()
      raise
  return {job.metric.name: seconds[job.metric.name] for job in jobs}


# Written by dlib on every run: a random id and the wall time.
PER_RUN_KEYS = {"uuid", "elapsed_time"}


def comparable_results(metric_dir):
  """{'evaluation_results', 'evaluation_config'} of a metric's output directory, without the
  per-run keys: equal for two runs that computed the same thing."""
  found = {}
  for name in ("evaluation_results", "evaluation_config"):
    with open(os.path.join(metric_dir, model_dir.RESULTS_DIR, "json", f"{name}.json")) as f:
      found[name] = {k: v for k, v in json.load(f).items() if k not in PER_RUN_KEYS}
  return found


def seeded_stock_command(command, gin_config):
  """`command` (a stock `dlib_evaluate` command line) run by this Python after seeding NumPy's
  global random state with `gin_config`'s `evaluation.random_seed`, as this suite does (see
  above): what the suite's results are compared with."""
  with open(gin_config) as f:
    found = re.search(r"^evaluation\.random_seed\s*=\s*(\d+)", f.read(), re.M)
  seed = int(found.group(1)) if found else 0
  return [sys.executable, "-c",
          "import runpy, sys, numpy; numpy.random.seed(int(sys.argv[1])); "
          "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')",
          str(seed)] + list(command)

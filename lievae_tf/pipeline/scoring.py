"""Scoring one trained model: the stock `dlib_postprocess` (mean), dlib's evaluation of each metric,
then the stock `dlib_aggregate_results` over the model's evaluations.

`score_model` is `lievae_evaluate`; a sweep (pipeline/sweep.py) scores each of its runs with the
same steps: `postprocess_step`, then the run's pending metrics in one `lievae_evaluate_command`
(which runs `score_model`) or, with `stock_dlib_evaluate`, `metric_steps`. The metrics run either in
`metric_processes` processes of dlib's own evaluation, each loading the dataset and the module once
(`evaluation/suite.py`), or with one stock `dlib_evaluate` process each (`stock_dlib_evaluate`).
"""

import collections
import os
import time

from lievae_tf import model_dir as model_dir_lib
from lievae_tf.evaluation import registry
from lievae_tf.errors import UserError
from lievae_tf.pipeline import commands

# marker: the file whose existence says the step finished; command: its argv; metric: the
# registry.Metric an evaluation step scores.
Step = collections.namedtuple("Step", "name marker command metric", defaults=(None,))

REPRESENTATION = "mean"  # dlib's postprocess_configs/mean.gin
EVALUATE_LOGS = "evaluate_logs"


def representation_dir(model_dir):
  return os.path.join(model_dir, "postprocessed", REPRESENTATION)


def metric_dir(model_dir, metric):
  return os.path.join(model_dir, "metrics", REPRESENTATION, metric.name)


def postprocess_step(model_dir):
  """The stock `dlib_postprocess` of `model_dir` (--overwrite: an unfinished one may have left a
  partial directory behind)."""
  config = os.path.join(registry.dlib_config_dir(), "postprocess_configs", f"{REPRESENTATION}.gin")
  output_dir = representation_dir(model_dir)
  return Step("postprocess", model_dir_lib.finished_marker(output_dir, "postprocess"),
              commands.console_command("dlib_postprocess") + [
                  f"--model_dir={model_dir}", f"--output_dir={output_dir}",
                  f"--gin_config={config}", "--overwrite"])


def evaluate_bindings(metric, bindings):
  """The gin bindings of `metric`'s `dlib_evaluate` (with its gin config): its
  `evaluation.name`, then those of `bindings` that configure it (other metrics' are dropped)."""
  return [f"evaluation.name = '{metric.name}'"] + registry.bindings_for(metric, bindings)


def evaluate_command(representation, output_dir, metric, bindings):
  """The stock `dlib_evaluate` of one `registry.Metric`."""
  gin_bindings = evaluate_bindings(metric, bindings)
  return commands.console_command("dlib_evaluate") + [
      f"--input_dir={representation}", f"--output_dir={output_dir}",
      f"--gin_config={metric.gin_config}", f"--gin_bindings={gin_bindings[0]}", "--overwrite"
  ] + [f"--gin_bindings={b}" for b in gin_bindings[1:]]


def metric_steps(model_dir, metrics, metric_bindings=()):
  """One stock `dlib_evaluate` step per `registry.BoundMetric` of `metrics`."""
  return [Step(f"evaluate_{bound.metric.name}",
               model_dir_lib.finished_marker(metric_dir(model_dir, bound.metric), "evaluation"),
               evaluate_command(representation_dir(model_dir), metric_dir(model_dir, bound.metric),
                                bound.metric, list(bound.bindings) + list(metric_bindings)),
               bound.metric)
          for bound in metrics]


def lievae_evaluate_command(model_dir, study, metrics, metric_processes, metric_bindings=()):
  """`lievae_evaluate` of the `registry.Metric`s `metrics` (each by its name, under
  --protocol=dlib: a paper-protocol metric stays as it is) with `study`'s sizes, without its
  postprocessing and aggregation (a sweep runs them itself)."""
  # No study (a --study_file's): lievae_evaluate's default study, whose metrics have dlib's sizes.
  return commands.console_command("lievae_evaluate") + [
      f"--model_dir={model_dir}"] + ([f"--study={study}"] if study else []) + [
      f"--metrics={','.join(m.name for m in metrics)}",
      "--protocol=dlib", f"--metric_processes={metric_processes}", "--nopostprocess",
      "--noaggregate"] + [f"--metric_bindings={b}" for b in metric_bindings]


def aggregate_command(model_dirs, output_path):
  """The stock `dlib_aggregate_results` of every evaluation of the model_dirs that the pattern
  `model_dirs` matches."""
  evaluations = model_dir_lib.finished_marker(os.path.join(model_dirs, "metrics", "*", "*"),
                                              "evaluation")
  return commands.console_command("dlib_aggregate_results") + [
      f"--result_file_pattern={evaluations}", f"--output_path={output_path}"]


def score_model(model_dir, metrics, metric_bindings=(), env=None, stock_dlib_evaluate=False,
                metric_processes=1, postprocess=True, aggregate=True):
  """`lievae_evaluate`: postprocesses (mean) the trained `model_dir`, scores it with `metrics`
  ([registry.BoundMetric]), every step redone, then aggregates every evaluation of it (both
  protocols' alike) into model_dir/metrics/results.json; logs in model_dir/evaluate_logs.

  The metrics run in `metric_processes` processes of dlib's own evaluation (1: this one), or with
  `stock_dlib_evaluate` one stock `dlib_evaluate` each. `postprocess`/`aggregate`: false skips
  that step (a sweep runs them itself).
  """
  if not model_dir_lib.is_finished(model_dir):
    raise UserError(f"{model_dir} holds no finished model ({model_dir_lib.FINISHED_MARKER} is "
                    "missing): train it with lievae_train first.")
  model_dir = os.path.abspath(model_dir)
  log_dir = os.path.join(model_dir, EVALUATE_LOGS)
  env = dict(env or os.environ)
  steps = [postprocess_step(model_dir)]
  if not postprocess:
    if not os.path.isfile(steps[0].marker):
      raise UserError(f"{representation_dir(model_dir)} holds no finished postprocessing: run "
                      "lievae_evaluate without --nopostprocess.")
    steps = []
  if stock_dlib_evaluate:
    steps += metric_steps(model_dir, metrics, metric_bindings)
  for step in steps:
    started = time.time()
    print(f"{step.name} ...", flush=True)
    commands.run_logged(step.command, env, os.path.join(log_dir, f"{step.name}.log"))
    print(f"{step.name} done in {time.time() - started:.0f} s", flush=True)
  if not stock_dlib_evaluate:
    from lievae_tf.evaluation import suite  # pylint: disable=g-import-not-at-top
    jobs = [suite.MetricJob(bound.metric, metric_dir(model_dir, bound.metric),
                            tuple(evaluate_bindings(
                                bound.metric, list(bound.bindings) + list(metric_bindings))))
            for bound in metrics]
    suite.evaluate_metrics(representation_dir(model_dir), jobs,
                           log=lambda m: print(m, flush=True), processes=metric_processes)
  if aggregate:
    commands.run_logged(aggregate_command(model_dir,
                                          os.path.join(model_dir, "metrics", "results.json")),
                        env, os.path.join(log_dir, "aggregate.log"))


def define_flags(flags):
  """The scoring flags of `lievae_evaluate` and `lievae_sweep` (absl `flags`)."""
  flags.DEFINE_bool("stock_dlib_evaluate", False, "Score each metric with its own stock "
                    "dlib_evaluate process (instead of --metric_processes processes of dlib's own "
                    "evaluation, each loading the dataset and the module once).")
  flags.DEFINE_integer("metric_processes", 1, "Without --stock_dlib_evaluate: the metrics side by "
                       "side in this many processes (1: one after another in one), the costliest "
                       "first; each holds the dataset in memory.")
  flags.DEFINE_bool("one_process", None, "Deprecated, kept for old command lines: "
                    "--noone_process is --stock_dlib_evaluate; --one_process is its default "
                    "(its processes are --metric_processes).")


def stock_dlib_evaluate_flag(flag_values):
  """--stock_dlib_evaluate, or its old spelling --noone_process."""
  one_process, stock = flag_values.one_process, flag_values.stock_dlib_evaluate
  if one_process is not None and flag_values["stock_dlib_evaluate"].present and (
      stock == one_process):
    raise UserError("--one_process and --stock_dlib_evaluate disagree: give "
                    "--stock_dlib_evaluate alone (--noone_process is its old name).")
  return stock or one_process is False

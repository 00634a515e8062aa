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

# marker: the file whose existence says the step finished; command: its argv.
Step = collections.namedtuple("Step", "name marker command")

REPRESENTATION = "mean"  # dlib's postprocess_configs/mean.gin
EVALUATE_LOGS = "evaluate_logs"


def finished_marker(output_dir, step):
  """dlib writes `<output_dir>/results/aggregate/<step>.json` last: it marks the step finished."""
  return os.path.join(output_dir, model_dir_lib.RESULTS_DIR, "aggregate", f"{step}.json")


def representation_dir(model_dir):
  return os.path.join(model_dir, "postprocessed", REPRESENTATION)


def metric_dir(model_dir, metric):
  return os.path.join(model_dir, "metrics", REPRESENTATION, metric)


def postprocess_step(model_dir):
  """The stock `dlib_postprocess` of `model_dir` (--overwrite: an unfinished one may have left a
  partial directory behind)."""
  config = os.path.join(registry.dlib_config_dir(), "postprocess_configs", f"{REPRESENTATION}.gin")
  output_dir = representation_dir(model_dir)
  return Step("postprocess", finished_marker(output_dir, "postprocess"),
              commands.console_command("dlib_postprocess") + [
                  f"--model_dir={model_dir}", f"--output_dir={output_dir}",
                  f"--gin_config={config}", "--overwrite"])


def evaluate_gin(metric, bindings):
  """(gin config, gin bindings) of one metric's `dlib_evaluate`; bindings of other metrics are
  dropped."""
  entry = registry.get(metric)
  return entry.gin_config, [f"evaluation.name = '{metric}'"] + registry.bindings_for(entry,
                                                                                  bindings)


def evaluate_command(representation, output_dir, metric, bindings):
  """The stock `dlib_evaluate` of one metric."""
  gin_config, gin_bindings = evaluate_gin(metric, bindings)
  return commands.console_command("dlib_evaluate") + [
      f"--input_dir={representation}", f"--output_dir={output_dir}",
      f"--gin_config={gin_config}", f"--gin_bindings={gin_bindings[0]}", "--overwrite"
  ] + [f"--gin_bindings={b}" for b in gin_bindings[1:]]


def metric_steps(model_dir, metrics, metric_bindings=()):
  """One stock `dlib_evaluate` step per (metric, bindings) of `metrics`."""
  return [Step(f"evaluate_{metric}", finished_marker(metric_dir(model_dir, metric), "evaluation"),
               evaluate_command(representation_dir(model_dir), metric_dir(model_dir, metric),
                                metric, list(bindings) + list(metric_bindings)))
          for metric, bindings in metrics]


def lievae_evaluate_command(model_dir, study, metrics, metric_processes, metric_bindings=()):
  """`lievae_evaluate` of `metrics` (names, final: paper_<metric> stays as it is) with `study`'s
  sizes, without its postprocessing and aggregation (a sweep runs them itself)."""
  # No study (a --study_file's): lievae_evaluate's default study, whose metrics have dlib's sizes.
  return commands.console_command("lievae_evaluate") + [
      f"--model_dir={model_dir}"] + ([f"--study={study}"] if study else []) + [
      f"--metrics={','.join(metrics)}",
      "--protocol=dlib", f"--metric_processes={metric_processes}", "--nopostprocess",
      "--noaggregate"] + [f"--metric_bindings={b}" for b in metric_bindings]


def aggregate_command(pattern, output_path):
  """The stock `dlib_aggregate_results` of the evaluations `pattern` matches."""
  return commands.console_command("dlib_aggregate_results") + [
      f"--result_file_pattern={pattern}", f"--output_path={output_path}"]


def evaluations_pattern(model_dirs):
  """Every evaluation of the model_dirs the pattern `model_dirs` matches."""
  return finished_marker(os.path.join(model_dirs, "metrics", "*", "*"), "evaluation")


def score_model(model_dir, metrics, metric_bindings=(), env=None, stock_dlib_evaluate=False,
                metric_processes=1, postprocess=True, aggregate=True):
  """`lievae_evaluate`: postprocesses (mean) the trained `model_dir`, scores it with `metrics`
  ([(metric, bindings)]), every step redone, then aggregates every evaluation of it (both
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
    jobs = [(metric, metric_dir(model_dir, metric)) +
            evaluate_gin(metric, list(bindings) + list(metric_bindings))
            for metric, bindings in metrics]
    suite.evaluate_metrics(representation_dir(model_dir), jobs,
                           log=lambda m: print(m, flush=True), processes=metric_processes,
                           costs={m: registry.get(m).cost for m, _ in metrics})
  if aggregate:
    metrics_dir = os.path.join(model_dir, "metrics")
    commands.run_logged(aggregate_command(evaluations_pattern(model_dir),
                                          os.path.join(metrics_dir, "results.json")),
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

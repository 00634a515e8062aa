"""Studies: gin files x bindings x seeds, each run train -> postprocess (mean) -> evaluate.

A study is a set of settings (gin files + bindings, each named) and the metrics that score them.
`lievae_sweep --study=NAME --seeds=0-9 --output_dir=DIR` expands it into runs
`DIR/<setting>/seed<k>` (each a `--model_dir`), and runs every step that is not finished yet with
the real commands, as subprocesses: `lievae_train`, then the stock `dlib_postprocess`, then
`lievae_evaluate` (dlib's own evaluation of each metric, in one process per run; or with
`--noone_process` the stock `dlib_evaluate` per metric); at the end `dlib_aggregate_results` writes
`DIR/results.json`. A step is finished
when its `results/aggregate/<step>.json` exists (dlib writes it last), so an interrupted sweep
resumes where it stopped; `lievae_train` itself resumes an unfinished training from its checkpoint.
Finished steps are not re-checked against changed flags: to redo a run, delete its directory.
"""

import collections
import concurrent.futures
import os
import shlex
import threading
import time

from lievae_tf.pipeline import commands
from lievae_tf import model_dir as model_dir_lib
from lievae_tf.evaluation import registry
from lievae_tf.errors import UserError


Setting = collections.namedtuple("Setting", "name gin_configs bindings")
# small: the study scores with the registry's small sizes (also for the paper protocol's metrics).
Study = collections.namedtuple("Study", "description settings metrics small", defaults=(False,))
# Which metrics score a study: its own (dlib's configs), the paper code's protocol, or both.
PROTOCOLS = ("dlib", "paper", "both")

# The metrics of the paper's table, at dlib's sizes (registry: the paper protocol's own).
PAPER_TABLE_METRICS = ("factor_vae", "mig", "sap", "dci")


def study_metrics(names, small=False):
  """[(metric, bindings)] of a study; `small`: the registry's sizes for a 2-core CPU."""
  return tuple((name, registry.get(name).small_bindings if small else ()) for name in names)


def _models(dataset):
  return (Setting("clg_vae", (f"{dataset}.gin",), ()),
          Setting("no_exp", (f"no_exp_{dataset}.gin",), ()),
          Setting("beta_vae", (f"beta_vae_{dataset}.gin",), ()))


_SHORT = ("model.training_steps = 1000", "model.batch_size = 64", "model.eval_steps = 10",
          "training.checkpoint_every = 500")

_PAPER_TABLE = study_metrics(PAPER_TABLE_METRICS)

STUDIES = {
    "paper_dsprites": Study("The paper's dSprites runs (run with --seeds=0-9).",
                            (Setting("clg_vae", ("dsprites.gin",), ()),), _PAPER_TABLE),
    "paper_shapes3d": Study("The paper's 3DShapes runs (run with --seeds=0-9).",
                            (Setting("clg_vae", ("shapes3d.gin",), ()),), _PAPER_TABLE),
    "baselines_dsprites": Study("CLG-VAE, its no_exp ablation and dlib's β-VAE on dSprites, at "
                                "the paper's steps and batch.", _models("dsprites"), _PAPER_TABLE),
    "baselines_shapes3d": Study("The same on 3DShapes.", _models("shapes3d"), _PAPER_TABLE),
    "comparison_synthetic": Study(
        "CLG-VAE vs no_exp vs β-VAE, 1,000 steps at batch 64, small metric sizes: for the "
        "SYNTHETIC dSprites-format data of `lievae_make_data` (docs/comparison_synthetic.md).",
        tuple(Setting(s.name, s.gin_configs, _SHORT) for s in _models("dsprites")),
        study_metrics(PAPER_TABLE_METRICS, small=True), small=True),
}


def get_study(name):
  if name not in STUDIES:
    raise UserError(f"--study={name!r} is not a study; choose one of {', '.join(STUDIES)}.")
  return STUDIES[name]


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


class Run:
  """One (setting, seed): its model_dir and the commands of its steps."""

  def __init__(self, output_dir, setting, seed, metrics, extra_bindings=(),
               metric_bindings=(), study=None, metric_processes=None):
    self.setting, self.seed, self.metrics = setting, seed, metrics
    # study: its name, for `lievae_evaluate --study` (the study's metric sizes); metric_processes:
    # None scores with one stock dlib_evaluate per metric, N with one `lievae_evaluate` running
    # the run's pending metrics in N processes (evaluation/suite.py).
    self.study, self.metric_processes = study, metric_processes
    self.name = f"{setting.name}/seed{seed}"
    self.model_dir = os.path.join(output_dir, setting.name, f"seed{seed}")
    self.log_dir = os.path.join(output_dir, "logs", setting.name, f"seed{seed}")
    self.extra_bindings, self.metric_bindings = list(extra_bindings), list(metric_bindings)

  @property
  def representation_dir(self):
    return os.path.join(self.model_dir, "postprocessed", "mean")

  def metric_dir(self, metric):
    return os.path.join(self.model_dir, "metrics", "mean", metric)

  def steps(self):
    """[(step name, finished marker, command)] in order."""
    config_dir = registry.dlib_config_dir()
    train = commands.console_command("lievae_train") + [f"--model_dir={self.model_dir}"]
    for config in self.setting.gin_configs:
      path = config if os.path.isabs(config) else os.path.join(commands.REPO_GIN_CONFIGS, config)
      train.append(f"--gin_config={path}")
    train += [f"--gin_bindings={b}" for b in list(self.setting.bindings) + self.extra_bindings +
              [f"model.random_seed = {self.seed}"]]
    steps = [("train", os.path.join(self.model_dir, model_dir_lib.FINISHED_MARKER), train)]
    # --overwrite: a step that is not finished may have left a partial directory behind.
    steps.append(("postprocess", os.path.join(self.representation_dir, "results", "aggregate",
                                              "postprocess.json"),
                  commands.console_command("dlib_postprocess") + [
                      f"--model_dir={self.model_dir}", f"--output_dir={self.representation_dir}",
                      f"--gin_config={os.path.join(config_dir, 'postprocess_configs', 'mean.gin')}",
                      "--overwrite"]))
    for metric, bindings in self.metrics:
      steps.append((f"evaluate_{metric}", os.path.join(self.metric_dir(metric), "results",
                                                       "aggregate", "evaluation.json"),
                    evaluate_command(self.representation_dir, self.metric_dir(metric), metric,
                                     list(bindings) + self.metric_bindings)))
    return steps

  def pending(self):
    """The steps not finished yet; with `metric_processes`, the pending metrics as one step."""
    pending = [s for s in self.steps() if not os.path.isfile(s[1])]
    metrics = [step[len("evaluate_"):] for step, _, _ in pending if step.startswith("evaluate_")]
    if not self.metric_processes or not metrics:
      return pending
    command = commands.console_command("lievae_evaluate") + [
        f"--model_dir={self.model_dir}", f"--study={self.study}", f"--metrics={','.join(metrics)}",
        "--protocol=dlib",  # the names are final: paper_<metric> stays as it is
        f"--metric_processes={self.metric_processes}", "--nopostprocess", "--noaggregate"]
    command += [f"--metric_bindings={b}" for b in self.metric_bindings]
    markers = [marker for step, marker, _ in pending if step.startswith("evaluate_")]
    return [s for s in pending if not s[0].startswith("evaluate_")] + [
        ("evaluate_" + "+".join(metrics), markers[-1], command)]


def evaluate_gin(metric, bindings):
  """(gin config, gin bindings) of one metric's `dlib_evaluate`; bindings of other metrics are
  dropped."""
  entry = registry.get(metric)
  return entry.gin_config, [f"evaluation.name = '{metric}'"] + registry.bindings_for(entry,
                                                                                  bindings)


def evaluate_command(representation_dir, output_dir, metric, bindings):
  """The stock `dlib_evaluate` of one metric."""
  gin_config, gin_bindings = evaluate_gin(metric, bindings)
  return commands.console_command("dlib_evaluate") + [
      f"--input_dir={representation_dir}", f"--output_dir={output_dir}",
      f"--gin_config={gin_config}", f"--gin_bindings={gin_bindings[0]}", "--overwrite"
  ] + [f"--gin_bindings={b}" for b in gin_bindings[1:]]


ALL_METRICS = "all"  # --metrics=all: every metric of the registry's dlib protocol


def _in_protocol(name, protocol):
  """A metric named without `paper_` in the protocol: `mig` is `paper_mig` under 'paper' and both
  under 'both' (those registered); a `paper_` name stays as it is."""
  if name.startswith("paper_") or protocol == "dlib":
    return [name]
  paper = "paper_" + name
  if protocol == "paper":
    return [paper]
  return [m for m in (name, paper) if m in registry.names()] or [name]


def choose_metrics(study, metrics=None, protocol="dlib"):
  """[(metric, bindings)]: the study's own metrics (protocol 'dlib'), every metric of the paper
  code's protocol ('paper'), or both; or `metrics` in the protocol instead (see `_in_protocol`),
  with the study's bindings of each (small sizes for a small study's paper metrics)."""
  if protocol not in PROTOCOLS:
    raise UserError(f"--protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}.")
  if metrics:
    if list(metrics) == [ALL_METRICS]:
      metrics = registry.names(protocol="dlib")
    names = [m for name in metrics for m in _in_protocol(name, protocol)]
    registry.check_names(names)
    known = dict(study.metrics + study_metrics(registry.names("paper"), small=study.small))
    return [(m, known.get(m, ())) for m in names]
  chosen = list(study.metrics) if protocol in ("dlib", "both") else []
  if protocol in ("paper", "both"):
    chosen += study_metrics(registry.names("paper"), small=study.small)
  return chosen


def expand(study, output_dir, seeds, settings=None, extra_bindings=(), metric_bindings=(),
           metrics=None, protocol="dlib", study_name=None, metric_processes=None):
  """The runs of a study; `metric_processes` (needs `study_name`): see `Run`."""
  if metric_processes and not study_name:
    raise ValueError("metric_processes needs the study's name")
  chosen = list(study.settings)
  if settings:
    unknown = sorted(set(settings) - {s.name for s in chosen})
    if unknown:
      raise UserError(f"--settings: {unknown} not in this study; it has "
                      f"{[s.name for s in chosen]}.")
    chosen = [s for s in chosen if s.name in settings]
  chosen_metrics = choose_metrics(study, metrics, protocol)
  return [Run(output_dir, s, seed, chosen_metrics, extra_bindings, metric_bindings, study_name,
              metric_processes)
          for s in chosen for seed in seeds]


def aggregate_command(output_dir, pattern=None, output_path=None):
  """The stock `dlib_aggregate_results`: by default every evaluation of a sweep's runs."""
  pattern = pattern or os.path.join(output_dir, "*", "seed*", "metrics", "*", "*", "results",
                                    "aggregate", "evaluation.json")
  output_path = output_path or os.path.join(output_dir, "results.json")
  return commands.console_command("dlib_aggregate_results") + [
      f"--result_file_pattern={pattern}", f"--output_path={output_path}"]


def print_commands(runs, output_dir, file=None):
  """One shell line per run (its pending steps joined by &&), then the aggregation."""
  for run in runs:
    pending = run.pending()
    if pending:
      print(" && ".join(shlex.join(command) for _, _, command in pending), file=file)
  print(shlex.join(aggregate_command(output_dir)), file=file)


def run_sweep(runs, output_dir, jobs=1, env=None):
  """Runs every pending step, `jobs` runs at a time; returns the aggregated JSON's path."""
  env = dict(env or os.environ)
  total = len(runs)
  done = [sum(1 for r in runs if not r.pending())]
  lock = threading.Lock()
  failures = []
  print(f"lievae_sweep: {total} runs, {done[0]} already finished", flush=True)

  def run_one(run):
    pending = run.pending()
    if not pending:
      return  # counted as finished above
    os.makedirs(run.log_dir, exist_ok=True)
    for step, _, command in pending:
      started = time.time()
      with lock:
        print(f"[{done[0]}/{total}] {run.name}: {step} ...", flush=True)
      try:
        commands.run_logged(command, env, os.path.join(run.log_dir, f"{step}.log"))
      except UserError as e:
        with lock:
          failures.append(f"{run.name}: {e}")
          print(f"[{done[0]}/{total}] {run.name}: {step} FAILED", flush=True)
        return
      with lock:
        print(f"[{done[0]}/{total}] {run.name}: {step} done in {time.time() - started:.0f} s",
              flush=True)
    with lock:
      done[0] += 1
      print(f"[{done[0]}/{total}] {run.name}: finished", flush=True)

  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
    list(pool.map(run_one, runs))
  if failures:
    raise UserError(f"{len(failures)} of {total} runs failed (re-run the same command to resume "
                    "the others' work):\n" + "\n".join(failures))
  results = os.path.join(output_dir, "results.json")
  commands.run_logged(aggregate_command(output_dir), env,
                        os.path.join(output_dir, "logs", "aggregate.log"))
  print(f"lievae_sweep: all {total} runs finished; aggregated results in {results}", flush=True)
  return results


def evaluate_model(model_dir, metrics, metric_bindings=(), env=None, one_process=False,
                   metric_processes=1, postprocess=True, aggregate=True):
  """`lievae_evaluate`: postprocess (mean) and the given metrics on a trained model_dir, then
  every evaluation of it (both protocols' alike) aggregated into model_dir/metrics/results.json.

  `one_process`: the metrics run in `metric_processes` processes (`evaluation.suite`: dlib's own
  evaluation of each, with the dataset and the module loaded once per process) instead of one
  `dlib_evaluate` each. `postprocess`/`aggregate`: false skips that step (a sweep runs them
  itself).
  """
  if not model_dir_lib.is_finished(model_dir):
    raise UserError(f"{model_dir} holds no finished model (results/aggregate/train.json is "
                    "missing): train it with lievae_train first.")
  setting = Setting(os.path.basename(os.path.normpath(model_dir)), (), ())
  run = Run(os.path.dirname(os.path.abspath(model_dir)), setting, 0, list(metrics),
            metric_bindings=metric_bindings)
  run.model_dir = os.path.abspath(model_dir)
  run.log_dir = os.path.join(run.model_dir, "evaluate_logs")
  env = dict(env or os.environ)
  steps = run.steps()[1:]  # everything after training, always redone
  if not postprocess:
    if not os.path.isfile(steps[0][1]):
      raise UserError(f"{run.representation_dir} holds no finished postprocessing: run "
                      "lievae_evaluate without --nopostprocess.")
    steps = steps[1:]
  if one_process:
    steps = steps[:1] if postprocess else []  # the metrics follow below
  for step, _, command in steps:
    started = time.time()
    print(f"{step} ...", flush=True)
    commands.run_logged(command, env, os.path.join(run.log_dir, f"{step}.log"))
    print(f"{step} done in {time.time() - started:.0f} s", flush=True)
  if one_process:
    from lievae_tf.evaluation import suite  # pylint: disable=g-import-not-at-top
    jobs = [(metric, run.metric_dir(metric)) + evaluate_gin(metric, list(bindings) +
                                                            run.metric_bindings)
            for metric, bindings in run.metrics]
    suite.evaluate_metrics(run.representation_dir, jobs, log=lambda m: print(m, flush=True),
                           processes=metric_processes,
                           costs={m: registry.get(m).cost for m, _ in run.metrics})
  if not aggregate:
    return run
  metrics_dir = os.path.join(run.model_dir, "metrics")
  commands.run_logged(
      aggregate_command(metrics_dir, os.path.join(metrics_dir, "*", "*", "results", "aggregate",
                                                  "evaluation.json"),
                        os.path.join(metrics_dir, "results.json")),
      env, os.path.join(run.log_dir, "aggregate.log"))
  return run

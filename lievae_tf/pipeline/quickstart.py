"""The main job on the embedded default: the whole pipeline a researcher runs, on synthetic data.

SYNTHETIC dSprites-format data -> `lievae_train` -> the stock `dlib_postprocess` (mean) ->
`dlib_evaluate` (MIG, FactorVAE, DCI with sizes bound down for a CPU) -> `dlib_aggregate_results`
-> a table of the scores. Every step is the real command, run as a subprocess.
"""

import os
import shutil
import time

from lievae_tf import gin_configs as shipped_gin_configs
from lievae_tf import model_dir as model_dir_lib
from lievae_tf.data import synthetic
from lievae_tf.errors import UserError
from lievae_tf.evaluation import registry
from lievae_tf.pipeline import commands
from lievae_tf.pipeline import scoring

QUICKSTART_GRID = (1, 3, 6, 10, 8, 8)  # 11,520 images: shape x scale x orientation x posX x posY

# Scored with the registry's sizes for a 2-core CPU.
METRICS = ("mig", "factor_vae", "dci")


def _run(args, env, log_path, show=None):
  """`run_logged`, with the command and its time on the console."""
  started = time.time()
  print(f"$ {' '.join(args)}", flush=True)
  commands.run_logged(args, env, log_path, show)
  print(f"  done in {time.time() - started:.0f} s", flush=True)


def run(work_dir, gin_configs=None, gin_bindings=(), metrics=METRICS, overwrite=False,
        factor_sizes=QUICKSTART_GRID):
  """Runs the pipeline in `work_dir`, scoring with the metrics named `metrics`; returns
  {metric name: score}."""
  gin_configs = gin_configs or [shipped_gin_configs.path("quickstart.gin")]
  metrics = registry.lookup(metrics)
  if os.path.exists(work_dir):
    if not overwrite:
      raise UserError(f"{work_dir} already exists; pass --overwrite to replace it, or choose "
                      "another --work_dir.")
    shutil.rmtree(work_dir)
  data_dir = os.path.join(work_dir, "data")
  model_dir = os.path.join(work_dir, "model")
  logs = os.path.join(work_dir, "logs")
  os.makedirs(logs)
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=data_dir)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

  path = synthetic.write_synthetic_dsprites(data_dir, factor_sizes)
  print(f"wrote SYNTHETIC dSprites-format data (grid {list(factor_sizes)}) to {path}")

  train = commands.console_command("lievae_train") + [f"--model_dir={model_dir}"]
  train += [f"--gin_config={c}" for c in gin_configs]
  train += [f"--gin_bindings={b}" for b in gin_bindings]
  # Its device line, any warning and its progress (a line every few seconds: quickstart.gin).
  _run(train, env, os.path.join(logs, "train.log"), show=r"lievae_train: ")

  postprocess = scoring.postprocess_step(model_dir)
  _run(postprocess.command, env, os.path.join(logs, f"{postprocess.name}.log"))
  for step in scoring.metric_steps(model_dir, [registry.BoundMetric(m, m.small_bindings)
                                               for m in metrics]):
    _run(step.command, env, os.path.join(logs, f"{step.name}.log"))

  aggregated = os.path.join(work_dir, "results.json")
  _run(scoring.aggregate_command(model_dir, aggregated), env,
       os.path.join(logs, "aggregate.log"))
  return read_scores(aggregated, metrics)


def read_scores(aggregated_json, metrics):
  """{metric name: score} of the `registry.Metric`s `metrics` from the JSON that
  `dlib_aggregate_results` wrote."""
  from disentanglement_lib.utils import aggregate_results  # pylint: disable=g-import-not-at-top
  frame = aggregate_results.load_aggregated_json_results(aggregated_json)
  by_name = {m.name: m for m in metrics}
  scores = {}
  for _, row in frame.iterrows():
    metric = by_name[row["evaluation_config.evaluation.name"].strip("'\"")]
    scores[metric.name] = float(row[f"evaluation_results.{metric.score_key}"])
  return scores


def print_report(work_dir, scores):
  model_dir = os.path.join(work_dir, "model")
  print("\nScores computed by disentanglement_lib from the exported module "
        "(SYNTHETIC data, a short run: a pipeline check, not a result):")
  names = {"mig": "MIG", "factor_vae": "FactorVAE metric", "dci": "DCI disentanglement"}
  for metric, score in scores.items():
    print(f"  {names.get(metric, metric):<22} {score:.3f}")
  print(f"\n  TF-Hub module      {os.path.join(model_dir, model_dir_lib.TFHUB_DIR)}")
  print(f"  training results   {os.path.join(model_dir, model_dir_lib.RESULTS_DIR)}")
  print(f"  metrics            {os.path.join(model_dir, 'metrics', scoring.REPRESENTATION)}")
  print(f"  aggregated         {os.path.join(work_dir, 'results.json')}")
  print(f"  TensorBoard        tensorboard --logdir {os.path.join(model_dir, 'logs')}")
  print(f"  logs of each step  {os.path.join(work_dir, 'logs')}")

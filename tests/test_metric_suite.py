"""`lievae_evaluate` scores every metric of both protocols (`--metrics=all`: dlib's; the paper
code's `paper_*`) in worker processes (dlib's own evaluation, the dataset and module loaded once
per process) with the results of the stock `dlib_evaluate` commands, bit for bit (small sizes, the
same model and seeds)."""

import os
import shutil

import pytest

import conftest
from lievae_tf.evaluation import registry
from lievae_tf.evaluation import suite
from lievae_tf.pipeline import scoring

# Smaller still than the registry's small sizes for the two metrics that encode the most.
_TINY = ("factor_vae_score.num_variance_estimate = 1000", "factor_vae_score.num_train = 100",
         "factor_vae_score.num_eval = 50", "beta_vae_sklearn.num_train = 100",
         "beta_vae_sklearn.num_eval = 50")


@pytest.mark.parametrize("protocol", ["dlib", "paper"])
def test_all_metrics_in_one_process_equal_the_stock_commands(protocol, trained_model_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(trained_model_dir, model_dir)
  metrics = registry.metrics(protocol=protocol)
  assert len(metrics) >= 8, metrics
  by_parameter = {b.split("=")[0].strip(): b for m in metrics
                  for b in m.small_bindings + _TINY}
  small = sorted(by_parameter.values())
  # Two worker processes, each running several metrics in turn: a metric's results must not
  # depend on which process runs it or on what ran before it there.
  chosen = "all" if protocol == "dlib" else ",".join(m.name for m in metrics)  # stay as they are
  result = conftest.command("lievae_evaluate", f"--model_dir={model_dir}", f"--metrics={chosen}",
                            "--metric_processes=2", *[f"--metric_bindings={b}" for b in small])
  assert result.returncode == 0, result.stderr[-3000:]
  for metric in metrics:
    assert f"evaluate_{metric.name} done" in result.stdout, result.stdout
  # No stock dlib_evaluate ran: only the postprocessing has a log.
  assert not [log for log in os.listdir(os.path.join(model_dir, "evaluate_logs"))
              if log.startswith("evaluate_")]

  representation_dir = os.path.join(model_dir, "postprocessed", "mean")
  for metric in metrics:
    stock_dir = str(tmp_path / "stock" / metric.name)
    # Seeded as the suite seeds NumPy's global state (DCI's and the downstream task's gradient
    # boosting draw from it; dlib never seeds it).
    stock = conftest.command(*suite.seeded_stock_command(scoring.evaluate_command(
        representation_dir, stock_dir, metric, small), metric.gin_config))
    assert stock.returncode == 0, stock.stderr[-3000:]
    in_suite = suite.comparable_results(scoring.metric_dir(model_dir, metric))
    assert in_suite == suite.comparable_results(stock_dir), metric.name
    assert metric.score_key in in_suite["evaluation_results"] or (
        metric.name.startswith("downstream"))  # scored at 10 and 100 training points here

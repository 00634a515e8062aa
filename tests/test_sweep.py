"""`lievae_sweep` and `lievae_collect` end to end: 2 settings x 2 seeds on SYNTHETIC data with the
real commands (lievae_train, dlib_postprocess, lievae_evaluate, dlib_aggregate_results), tiny sizes."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import BIN, command

TINY = ["--gin_bindings=model.training_steps = 6", "--gin_bindings=model.batch_size = 8",
        "--gin_bindings=model.eval_steps = 2", "--metrics=mig",
        "--metric_bindings=mig.num_train = 300"]


def _sweep_args(output_dir):
  return ["--study=comparison_synthetic", "--seeds=0-1", "--settings=clg_vae,beta_vae",
          f"--output_dir={output_dir}"] + TINY


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("sweep") / "study")
  result = command("lievae_sweep", *_sweep_args(output_dir), "--jobs=2", timeout=1200)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return output_dir, result.stdout


def test_every_run_is_trained_postprocessed_evaluated_and_aggregated(sweep):
  output_dir, stdout = sweep
  for setting in ("clg_vae", "beta_vae"):
    for seed in (0, 1):
      model_dir = os.path.join(output_dir, setting, f"seed{seed}")
      assert os.path.isfile(os.path.join(model_dir, "metrics", "mean", "mig", "results",
                                         "aggregate", "evaluation.json"))
      with open(os.path.join(model_dir, "results", "gin", "train.gin")) as f:
        assert f"model.random_seed = {seed}" in f.read()
  with open(os.path.join(output_dir, "results.json")) as f:
    aggregated = json.load(f)
  assert len(aggregated["evaluation_results.discrete_mig"]) == 4
  models = sorted(aggregated["train_config.model.model"].values())
  assert models == ["@BetaVAE", "@BetaVAE", "@LieGroupVAE", "@LieGroupVAE"]
  assert "[4/4]" in stdout and "all 4 runs finished" in stdout


def test_a_finished_sweep_is_skipped_and_a_deleted_run_redone(sweep):
  output_dir, _ = sweep
  # Drop one run's evaluation: only that step runs again.
  marker = os.path.join(output_dir, "beta_vae", "seed1", "metrics", "mean", "mig", "results",
                        "aggregate", "evaluation.json")
  os.remove(marker)
  result = command("lievae_sweep", *_sweep_args(output_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "3 already finished" in result.stdout
  assert "evaluate_mig done" in result.stdout
  assert "train ..." not in result.stdout and "postprocess ..." not in result.stdout
  assert os.path.isfile(marker)


def test_print_commands_lists_only_pending_steps(sweep, tmp_path):
  output_dir, _ = sweep
  finished = command("lievae_sweep", *_sweep_args(output_dir), "--print_commands")
  assert finished.returncode == 0
  assert finished.stdout.strip().splitlines()[0].split()[0].endswith("dlib_aggregate_results")
  fresh = command("lievae_sweep", *_sweep_args(str(tmp_path / "new")), "--print_commands")
  lines = fresh.stdout.strip().splitlines()
  assert len(lines) == 5  # one per run, then the aggregation
  assert "lievae_train" in lines[0] and "dlib_postprocess" in lines[0]
  assert "--gin_bindings=model.random_seed = 0" in lines[0]
  # Each run's metrics in one lievae_evaluate (dlib's own evaluation), or one stock command each.
  assert "lievae_evaluate" in lines[0] and "--metrics=mig" in lines[0]
  assert "--metric_bindings=mig.num_train = 300" in lines[0] and "dlib_evaluate" not in lines[0]
  stock = command("lievae_sweep", *_sweep_args(str(tmp_path / "new")), "--print_commands",
                  "--stock_dlib_evaluate").stdout.strip().splitlines()
  assert "dlib_evaluate" in stock[0] and "lievae_evaluate" not in stock[0]
  assert "--gin_bindings=mig.num_train = 300" in stock[0]
  assert not os.path.exists(tmp_path / "new")


def test_collect_summarises_the_aggregated_json(sweep, tmp_path):
  output_dir, _ = sweep
  summary_dir = tmp_path / "summary"
  result = command("lievae_collect", f"--aggregated_json={output_dir}/results.json",
                   "--config_variables=model.model", f"--output_dir={summary_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = pd.read_csv(summary_dir / "summary.csv")
  assert list(summary.columns) == ["model.model", "mig.discrete_mig.mean",
                                   "mig.discrete_mig.std", "n"]
  assert sorted(summary["model.model"]) == ["@BetaVAE", "@LieGroupVAE"]
  assert list(summary["n"]) == [2, 2]
  with open(os.path.join(output_dir, "results.json")) as f:
    aggregated = json.load(f)
  models, migs = aggregated["train_config.model.model"], aggregated[
      "evaluation_results.discrete_mig"]
  lie = pd.Series([migs[k] for k in migs if models[k] == "@LieGroupVAE"])
  row = summary[summary["model.model"] == "@LieGroupVAE"].iloc[0]
  assert row["mig.discrete_mig.mean"] == pytest.approx(lie.mean())
  assert row["mig.discrete_mig.std"] == pytest.approx(lie.std())  # sample std over seeds
  assert "| @LieGroupVAE |" in (summary_dir / "summary.md").read_text()
  png = (summary_dir / "mig.discrete_mig.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_collect_lists_only_configurations_that_ran(sweep, tmp_path):
  output_dir, _ = sweep
  result = command("lievae_collect", f"--aggregated_json={output_dir}/results.json",
                   "--config_variables=model.model,LieGroupVAE.no_exp", f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
  assert sorted(zip(summary["model.model"], summary["LieGroupVAE.no_exp"].astype(str))) == [
      ("@BetaVAE", "-"), ("@LieGroupVAE", "False")]
  assert list(summary["n"]) == [2, 2]


def test_collect_names_an_unknown_config_variable(sweep, tmp_path):
  output_dir, _ = sweep
  result = command("lievae_collect", f"--aggregated_json={output_dir}/results.json",
                   "--config_variables=LieGroupVAE.hy_hess", f"--output_dir={tmp_path}")
  assert result.returncode == 1 and "LieGroupVAE.hy_hess" in result.stderr
  assert "LieGroupVAE.hy_hes" in result.stderr and "Traceback" not in result.stderr


def test_stock_dlib_evaluate_is_the_old_noone_process(tmp_path):
  args = _sweep_args(str(tmp_path / "new")) + ["--print_commands"]
  stock = command("lievae_sweep", *args, "--stock_dlib_evaluate")
  assert stock.returncode == 0, stock.stderr[-3000:]
  assert "dlib_evaluate" in stock.stdout and "lievae_evaluate" not in stock.stdout
  assert command("lievae_sweep", *args, "--noone_process").stdout == stock.stdout
  both = command("lievae_sweep", *args, "--one_process", "--stock_dlib_evaluate")
  assert both.returncode == 1 and "--stock_dlib_evaluate alone" in both.stderr


def test_list_shows_each_studys_settings_and_metrics():
  result = command("lievae_sweep", "--list")
  assert result.returncode == 0, result.stderr[-3000:]
  assert ("paper_dsprites: The paper's dSprites runs (run with --seeds=0-9).\n"
          "  settings: clg_vae; metrics: factor_vae, mig, sap, dci\n") in result.stdout


def test_a_metric_travels_as_an_object_from_the_study_to_its_commands(tmp_path):
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import studies  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  # Not registered: a lookup by name anywhere on its way would refuse it.
  toy = registry.Metric("unregistered_toy", "score", ("toy",), own_config="toy.gin")
  study = studies.Study("toy", (studies.Setting("clg_vae", ("dsprites.gin",), ()),),
                        (registry.BoundMetric(toy, ("toy.n = 1", "mig.num_train = 9")),))
  stock_run, = sweep_lib.expand(study, str(tmp_path), [0])
  evaluate = stock_run.pending()[-1]
  assert evaluate.metric is toy and evaluate.name == "evaluate_unregistered_toy"
  assert f"--gin_config={toy.gin_config}" in evaluate.command
  assert "--gin_bindings=evaluation.name = 'unregistered_toy'" in evaluate.command
  assert "--gin_bindings=toy.n = 1" in evaluate.command
  assert "--gin_bindings=mig.num_train = 9" not in evaluate.command  # another metric's
  suite_run, = sweep_lib.expand(study, str(tmp_path), [0], metric_processes=2)
  assert "--metrics=unregistered_toy" in suite_run.pending()[-1].command


def test_lievae_evaluate_does_not_import_the_sweep(tmp_path):
  # It scores one model (pipeline/scoring.py) with a study's metrics (pipeline/studies.py).
  check = ("import atexit, runpy, sys; atexit.register(lambda: print("
           "'imported sweep:', 'lievae_tf.pipeline.sweep' in sys.modules)); "
           f"sys.argv = ['lievae_evaluate', '--model_dir={tmp_path}']; "
           f"runpy.run_path({os.path.join(BIN, 'lievae_evaluate')!r}, run_name='__main__')")
  result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
  assert "holds no finished model" in result.stderr, result.stderr[-3000:]
  assert "imported sweep: False" in result.stdout

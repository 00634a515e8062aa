"""The whole pipeline with the real commands: `lievae_quickstart` generates SYNTHETIC data, runs
`lievae_train`, then the stock `dlib_postprocess`, `dlib_evaluate` (MIG, FactorVAE, DCI) and
`dlib_aggregate_results` as subprocesses."""

import glob
import json
import os
import re

import pytest

from conftest import command


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
  work_dir = str(tmp_path_factory.mktemp("quickstart") / "run")
  result = command("lievae_quickstart", f"--work_dir={work_dir}",
                   "--gin_bindings=model.training_steps = 20",
                   "--gin_bindings=model.batch_size = 16",
                   "--gin_bindings=model.eval_steps = 2")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return work_dir, result.stdout


def test_aggregated_json_holds_each_metric_in_range(quickstart):
  work_dir, _ = quickstart
  with open(os.path.join(work_dir, "results.json")) as f:
    aggregated = json.load(f)  # pandas' orient="columns": {column: {row: value}}
  names = aggregated["evaluation_config.evaluation.name"]
  by_metric = {names[row].strip("'"): row for row in names}
  assert set(by_metric) == {"mig", "factor_vae", "dci"}
  mig = aggregated["evaluation_results.discrete_mig"][by_metric["mig"]]
  assert 0.0 <= mig <= 1.0
  assert 0.0 <= aggregated["evaluation_results.eval_accuracy"][by_metric["factor_vae"]] <= 1.0
  assert 0.0 <= aggregated["evaluation_results.disentanglement"][by_metric["dci"]] <= 1.0
  # The scores trace back to our model: dlib carried its training config along.
  assert aggregated["train_config.dataset.name"][by_metric["mig"]] == "'dsprites_full'"
  assert aggregated["train_config.LieGroupVAE.hy_hes"][by_metric["mig"]] == "40.0"
  assert aggregated["postprocess_config.postprocess.postprocess_fn"][by_metric["mig"]] == (
      "@mean_representation")


def test_the_report_prints_the_scores_dlib_computed(quickstart):
  work_dir, stdout = quickstart
  with open(os.path.join(work_dir, "results.json")) as f:
    aggregated = json.load(f)
  mig = list(aggregated["evaluation_results.discrete_mig"].values())
  mig = next(v for v in mig if v is not None)
  assert f"MIG                    {mig:.3f}" in stdout
  assert "SYNTHETIC" in stdout
  assert os.path.join(work_dir, "model", "tfhub") in stdout


def test_the_console_shows_trainings_device_line_and_progress(quickstart):
  work_dir, stdout = quickstart
  shown = [l.strip() for l in stdout.splitlines() if l.strip().startswith("lievae_train: ")]
  assert any(l.startswith("lievae_train: strategy ") for l in shown), stdout[-3000:]
  progress = [l for l in shown if re.match(r"lievae_train: +\d+%\|", l)]
  assert len(progress) >= 2 and "100%|" in progress[-1] and "20/20" in progress[-1], shown
  with open(os.path.join(work_dir, "logs", "train.log")) as f:
    log = f.read()
  assert all(line in log for line in shown)  # the log keeps everything the console showed


def test_quickstart_refuses_an_existing_work_dir(quickstart):
  work_dir, _ = quickstart
  result = command("lievae_quickstart", f"--work_dir={work_dir}")
  assert result.returncode == 1
  assert "--overwrite" in result.stderr and "Traceback" not in result.stderr


def test_a_successful_run_logs_no_error_line_and_no_tf_dump(quickstart):
  """A user reads an `E...` line or TF's "Type inference failed" dump as a failure: every step's
  log (train, postprocess, evaluate, aggregate) of a successful run holds neither."""
  work_dir, _ = quickstart
  logs = glob.glob(os.path.join(work_dir, "logs", "*.log"))
  assert len(logs) >= 5
  for path in logs:
    with open(path) as f:
      text = f.read()
    assert not re.search(r"^E\d{4} ", text, re.M), path
    assert "Type inference failed" not in text and "Traceback" not in text, path

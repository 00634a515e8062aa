"""The benchmarks run their real sides end to end (their figures are not asserted: CI is noisy)."""

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

import conftest
import machine


def _bench_module(name):
  """bench/<name>.py, imported as a bench imports its core (bench/ first on sys.path)."""
  sys.path.insert(0, os.path.join(conftest.REPO, "bench"))
  try:
    return importlib.import_module(name)
  finally:
    sys.path.pop(0)


def test_the_bench_core_builds_what_lievae_train_builds(tmp_path):
  """Every bench times the model of `core.build`: it is the one lievae_train's set-up builds from
  the same gin configuration (the same settings, initial weights, optimizer, XLA setting)."""
  from lievae_tf import models, training  # pylint: disable=import-outside-toplevel
  from lievae_tf.training import run  # pylint: disable=import-outside-toplevel
  core = _bench_module("core")
  configs = [os.path.join(conftest.GIN_CONFIGS, "dsprites.gin")]
  # The opt-in XLA step: a model built by hand, not by lievae_train's way, would miss it.
  bindings = ["LieGroupVAE.expm = 'fixed'", "training.jit_compile = True"]
  bench = core.build(configs, bindings)
  training.parse_gin(configs, bindings)
  try:
    trained = run.set_up(str(tmp_path / "model"), False, models.LieGroupVAE, 0, 8).vae
  finally:
    gin.clear_config()
  assert bench.image_shape == [64, 64, 1] and bench.options["jit_compile"]
  vae = bench.vae
  assert vae.get_config() == trained.get_config()
  assert vae.xla_compiled_step and trained.xla_compiled_step
  assert type(vae.optimizer) is type(trained.optimizer)
  assert vae.optimizer.get_config() == trained.optimizer.get_config()
  assert [w.name for w in vae.weights] == [w.name for w in trained.weights]
  for ours, theirs in zip(vae.weights, trained.weights):
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.name)


def test_train_throughput_json_has_every_setting_and_a_failed_lever_is_reported():
  script = os.path.join(conftest.REPO, "bench", "train_throughput.py")
  # Batch 8, 3 steps a round: the figures are not asserted, only that every side runs and reports.
  small = ["--batch_sizes", "8", "--rounds", "1", "--images_per_round", "24",
           "--warmup_steps", "1"]
  result = subprocess.run([sys.executable, script, "--only", "lievae", "--json"] + small,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(figures) == {"dsprites", "shapes3d"}
  assert all(figures[s]["images_per_s"] > 0 for s in figures)

  # Several sides with --only: keyed by side, then setting (bfloat16 beside float32).
  result = subprocess.run([sys.executable, script, "--only", "lievae,lievae_bf16", "--json",
                           "--settings", "dsprites"] + small,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(figures) == {"lievae", "lievae_bf16"}
  assert figures["lievae"]["dsprites"]["images_per_s"] > 0
  # As lievae_train: refused where oneDNN is held below AVX-512, else measured and the kernels
  # named (this machine's CPU found out by the tests' own probe, not the product's).
  expected = machine.expected_bfloat16(os.environ)
  bf16 = figures["lievae_bf16"]["dsprites"]
  if expected == "refused":
    assert "cannot run on CPU:0" in bf16["failed"], figures
  else:
    assert bf16["images_per_s"] > 0, figures
    if expected and not tf.config.list_physical_devices("GPU"):
      assert bf16["bfloat16_kernels"] == expected, (machine.describe(os.environ), figures)

  # XLA cannot compile tf.linalg.expm's gradient: jit_compile with it is refused, the bench says
  # so and still reports the rest; with LieGroupVAE.expm = 'fixed' it compiles.
  result = subprocess.run([sys.executable, script, "--settings", "dsprites", "--sides",
                           "lievae,lievae_xla,lievae_xla_tf_expm", "--no_flops"] + small,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r"lievae_xla_tf_expm +FAILED: .*set LieGroupVAE.expm = 'fixed'",
                   result.stdout), result.stdout
  assert re.search(r"^  lievae +\d+", result.stdout, re.M), result.stdout
  assert re.search(r"^  lievae_xla +\d+", result.stdout, re.M), result.stdout


def test_end_to_end_json_has_both_settings_and_the_runs_own_rates(tmp_path):
  """The real lievae_train runs (tiny sizes) and its logged images/s are set against the step."""
  script = os.path.join(conftest.REPO, "bench", "end_to_end.py")
  # 5 steps logged every 2 (the first window, the warm-up, is left out): the figures are not
  # asserted, only that both settings and a run with a callback left out (the runner) report.
  result = subprocess.run(
      [sys.executable, script, "--json", "--batch", "8", "--steps", "5", "--slice_seconds", "5",
       "--warmup_steps", "1", "--rounds", "1", "--without", "progress_bar",
       "--log_every", "2", "--data_dir", str(tmp_path)],
      capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(figures) == {"dsprites", "shapes3d"}
  for setting in figures.values():
    assert setting["end_to_end_vs_step"] > 0
    assert setting["end_to_end_images_per_s"] > 0 and setting["step_images_per_s"] > 0
    assert set(setting["without"]) == {"progress_bar"}
    assert all(run["vs_step"] > 0 for run in setting["without"].values())


def test_end_to_end_takes_its_pauses_out_of_each_logged_window():
  """A pause across a window boundary counts against both windows, each by its own part."""
  end_to_end = _bench_module("end_to_end")
  # Batch 10, steps 1 -> 11 -> 21: 100 images a window. Logged over 1.5 s (ending at wall time
  # 101) and 3 s (ending at 104); the bench paused the run from 100.5 to 101.5.
  windows = [(11, 100 / 1.5, 101.0), (21, 100 / 3.0, 104.0)]
  rates = end_to_end.active_rates(windows, 1, 10, [(100.5, 101.5)])
  assert [step for step, _ in rates] == [11, 21]
  assert [rate for _, rate in rates] == pytest.approx([100 / 1.0, 100 / 2.5], rel=1e-12)
  # Bare slices outside the timed span are not counted.
  slices = [(90.0, 91.0, 5, 0.5), (101.6, 102.0, 5, 0.25), (102.1, 102.5, 5, 0.25)]
  assert end_to_end.bare_rate_between(slices, 101.0, 104.0, 10) == pytest.approx(100 / 0.5)


def test_representation_throughput_json_line_has_the_frozen_and_stock_hub_ratios(
    trained_model_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(trained_model_dir, model_dir)  # the bench postprocesses it (stock command)
  script = os.path.join(conftest.REPO, "bench", "representation_throughput.py")
  # One round of one batch per size: the figures are not asserted, only that every path runs
  # (hub_frozen through dlib's own evaluate.hub) and the line is reported. torch is the pinned
  # stack's (docs/environment.md): without it the hub paths run alone, with no ratio line.
  with_torch = importlib.util.find_spec("torch") is not None
  paths = "hub,hub_frozen,torch" if with_torch else "hub,hub_frozen"
  result = subprocess.run([sys.executable, script, f"--model_dir={model_dir}", "--rounds=1",
                           "--warmup_rounds=0", "--images_per_round=64", f"--paths={paths}"]
                          + (["--json_line"] if with_torch else []),
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r"^ +16  hub_frozen +\d+", result.stdout, re.M), result.stdout
  assert re.search(r"^ +64  hub +\d+", result.stdout, re.M), result.stdout
  if with_torch:
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == {"batch_16", "batch_64"}
    for by_key in figures.values():
      assert set(by_key) == {"vs_torch", "stock_hub_vs_torch"}
      assert all(ratio > 0 for ratio in by_key.values())

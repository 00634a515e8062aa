"""What makes lievae_tf work outside its checkout, checked in the project's environment.

The whole of it (the wheel built, installed by docs/install.md's recipe into a fresh venv, the
pipeline run from another directory) is scripts/check_wheel.sh, which CI runs; these are the
quick parts of it that every test run can afford.
"""

import os

import pytest

import lievae_tf
from lievae_tf.dlib import shims
from lievae_tf import gin_configs
from lievae_tf.evaluation import registry
from lievae_tf.errors import UserError

from conftest import GIN_CONFIGS, REPO, command

PACKAGE = os.path.dirname(lievae_tf.__file__)


def test_every_directory_of_modules_is_a_package():
  # setuptools' package discovery skips a directory without __init__.py: a wheel would lack it.
  missing = [os.path.relpath(d, REPO) for d, _, files in os.walk(PACKAGE)
             if any(f.endswith(".py") for f in files) and "__init__.py" not in files]
  assert not missing


def test_shipped_gin_configs_are_the_checkouts():
  # setup.py maps gin_configs/ to lievae_tf.gin_configs: one set of files, found by the package.
  assert gin_configs.names() == sorted(f for f in os.listdir(GIN_CONFIGS) if f.endswith(".gin"))
  assert os.path.samefile(gin_configs.path("dsprites.gin"),
                          os.path.join(GIN_CONFIGS, "dsprites.gin"))


def test_bare_name_resolves_to_the_shipped_config_unless_a_file_has_it(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert gin_configs.resolve("dsprites.gin") == gin_configs.path("dsprites.gin")
  (tmp_path / "dsprites.gin").write_text("model.batch_size = 2\n")
  assert gin_configs.resolve("dsprites.gin") == "dsprites.gin"  # the user's own file wins
  # A path is taken as given (its absence is the caller's error), as is an unknown name.
  assert gin_configs.resolve("other/dsprites.gin") == "other/dsprites.gin"
  assert gin_configs.resolve("mine.gin") == "mine.gin"
  with pytest.raises(UserError, match="no shipped gin config.*dsprites.gin"):
    gin_configs.path("mine.gin")


def test_parse_gin_reads_a_shipped_config_by_name(tmp_path, monkeypatch):
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf import training  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)  # no gin_configs/ here
  try:
    training.parse_gin(["quickstart.gin"])
    # Its own setting, and the paper's from dsprites.gin, which it includes from beside itself.
    assert gin.query_parameter("model.training_steps") == 1500
    assert gin.query_parameter("LieGroupVAE.hy_hes") == 40.0
  finally:
    gin.clear_config()


def test_own_gin_file_includes_a_shipped_config_by_name(tmp_path, monkeypatch):
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf import training  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "my_run.gin").write_text("include 'dsprites.gin'\nmodel.batch_size = 4\n")
  try:
    training.parse_gin(["mine/my_run.gin"])
    assert gin.query_parameter("model.batch_size") == 4
    assert gin.query_parameter("model.training_steps") == 201600  # dsprites.gin's
  finally:
    gin.clear_config()


def test_metric_configs_are_package_data():
  # Read by dlib_evaluate from the installed package, not from a checkout.
  assert os.path.samefile(os.path.dirname(registry.get("paper_mig").gin_config),
                          os.path.join(PACKAGE, "evaluation", "metric_configs"))
  assert os.path.isfile(registry.get("paper_mig").gin_config)


def test_site_hook_written_is_the_one_the_wheel_ships(tmp_path):
  path = shims.install_site_hook(str(tmp_path))
  with open(path) as written, open(os.path.join(PACKAGE, shims.PTH_NAME)) as shipped:
    assert written.read() == shipped.read() == "import lievae_tf.dlib.shims as _c; _c.apply()\n"


@pytest.mark.commands
def test_lievae_train_names_the_shipped_configs_for_a_missing_one(tmp_path):
  result = command("lievae_train", f"--model_dir={tmp_path / 'm'}", "--gin_config=nowhere.gin")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert "gin config file nowhere.gin does not exist" in result.stderr
  assert "quickstart.gin" in result.stderr and "shapes3d.gin" in result.stderr
  assert not (tmp_path / "m").exists()

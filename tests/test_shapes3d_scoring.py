"""dlib's Shapes3D as `lievae_tf.dlib.lean_shapes3d` replaces it: uint8 in memory, observations bit-identical to dlib's
own code path, the same random draws, from the public h5 alone or from dlib's npz. SYNTHETIC data."""

import json
import os

import gin
import numpy as np
import pytest

from conftest import SHAPES3D_GRID, command
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.data import shapes3d
from lievae_tf.errors import UserError

GRID = SHAPES3D_GRID  # 288 images: small enough for dlib's float32 copy
ALL_FACTORS = np.indices(GRID).reshape(6, -1).T


@pytest.fixture(scope="module")
def roots(shapes3d_h5, tmp_path_factory):
  """Data roots holding only the h5, only dlib's npz (written from it), and both."""
  base = tmp_path_factory.mktemp("shapes3d_roots")
  npz_root, both_root = base / "npz", base / "both"
  npz = shapes3d.write_dlib_npz(shapes3d_h5, root=str(npz_root))
  (both_root / "3dshapes").mkdir(parents=True)
  os.symlink(shapes3d_h5, both_root / "3dshapes" / "3dshapes.h5")
  os.symlink(npz, both_root / "3dshapes" / shapes3d.DLIB_NPZ_FILENAME)
  return {"h5": os.path.dirname(os.path.dirname(shapes3d_h5)), "npz": str(npz_root),
          "both": str(both_root)}


@pytest.fixture
def dlib_module():
  from disentanglement_lib.data.ground_truth import shapes3d as module  # pylint: disable=g-import-not-at-top
  return module


def _point_dlib_at(monkeypatch, dlib_module, root):
  # dlib fixes SHAPES3D_PATH from DISENTANGLEMENT_LIB_DATA when its module is imported.
  monkeypatch.setattr(dlib_module, "SHAPES3D_PATH", shapes3d.dlib_npz_path(root))


def _dlib_on_the_reduced_grid(dlib_module):
  """dlib's own Shapes3D (np.load, the float32 copy divided by 255, its sampling and index
  arithmetic), with only its hard-coded full grid replaced by the test grid."""
  from disentanglement_lib.data.ground_truth import util  # pylint: disable=g-import-not-at-top

  class DlibOnReducedGrid(dlib_module.Shapes3D.dlib_class):

    def __init__(self):
      super().__init__()
      self.factor_sizes = list(GRID)
      self.state_space = util.SplitDiscreteStateSpace(self.factor_sizes,
                                                      self.latent_factor_indices)
      self.factor_bases = np.prod(self.factor_sizes) / np.cumprod(self.factor_sizes)

  return DlibOnReducedGrid()


def _assert_bit_identical(a, b):
  assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
  np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_the_site_hook_replaces_dlibs_class_without_importing_tensorflow(dlib_module):
  assert dlib_module.Shapes3D.dlib_class.__module__ == dlib_module.__name__
  assert issubclass(dlib_module.Shapes3D, dlib_module.Shapes3D.dlib_class)  # isinstance checks hold
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top
  assert named_data.shapes3d.Shapes3D is dlib_module.Shapes3D
  # The .pth hook runs in every process of the environment; it must stay cheap.
  result = command("python", "-c", "import sys; print(sorted(m for m in sys.modules if m in "
                   "('tensorflow', 'lievae_tf.data.shapes3d', 'lievae_tf.dlib.shims')))")
  assert result.stdout.strip() == "['lievae_tf.dlib.shims']", result.stderr[-2000:]


@pytest.mark.parametrize("source", ["h5", "npz"])
def test_observations_are_dlibs_bit_for_bit_with_its_random_draws(
    source, roots, dlib_module, monkeypatch):
  _point_dlib_at(monkeypatch, dlib_module, roots["npz"])
  reference = _dlib_on_the_reduced_grid(dlib_module)
  assert reference.images.dtype == np.float32
  _point_dlib_at(monkeypatch, dlib_module, roots[source])
  lean = dlib_module.Shapes3D()
  assert lean.images.dtype == np.uint8 and lean.factors_num_values == list(GRID)
  assert lean.data_file.endswith("3dshapes.h5" if source == "h5" else ".npz")
  assert lean.num_factors == 6 and lean.observation_shape == [64, 64, 3]

  # Every image of the grid.
  _assert_bit_identical(
      lean.sample_observations_from_factors(ALL_FACTORS, np.random.RandomState(0)),
      reference.sample_observations_from_factors(ALL_FACTORS, np.random.RandomState(0)))
  # The sampling API, interleaved as dlib's metrics call it: same factors, same images, and the
  # random states end equal (the same draws, in the same order).
  lean_state, reference_state = np.random.RandomState(7), np.random.RandomState(7)
  for num in (1, 5, 64):
    factors = lean.sample_factors(num, lean_state)
    np.testing.assert_array_equal(factors, reference.sample_factors(num, reference_state))
    _assert_bit_identical(lean.sample_observations_from_factors(factors, lean_state),
                          reference.sample_observations_from_factors(factors, reference_state))
    lean_factors, lean_observations = lean.sample(num, lean_state)
    reference_factors, reference_observations = reference.sample(num, reference_state)
    np.testing.assert_array_equal(lean_factors, reference_factors)
    _assert_bit_identical(lean_observations, reference_observations)
    _assert_bit_identical(lean.sample_observations(num, lean_state),
                          reference.sample_observations(num, reference_state))
  for lean_part, reference_part in zip(lean_state.get_state(), reference_state.get_state()):
    np.testing.assert_array_equal(lean_part, reference_part)


def test_the_h5_is_preferred_and_both_files_hold_the_same_grid(roots, dlib_module, monkeypatch):
  _point_dlib_at(monkeypatch, dlib_module, roots["both"])
  from_both = dlib_module.Shapes3D()
  assert from_both.data_file.endswith("3dshapes.h5")
  np.testing.assert_array_equal(from_both.images,
                                shapes3d.load_dlib_npz_grid(shapes3d.dlib_npz_path(roots["npz"]))[0])


def test_missing_files_name_both_paths_and_both_ways(tmp_path, dlib_module, monkeypatch):
  _point_dlib_at(monkeypatch, dlib_module, str(tmp_path))
  with pytest.raises(UserError) as error:
    dlib_module.Shapes3D()
  message = str(error.value)
  assert str(tmp_path / "3dshapes" / "3dshapes.h5") in message
  assert shapes3d.dlib_npz_path(str(tmp_path)) in message
  assert "lievae_prepare_data" in message and "deepmind/3d-shapes" in message


def test_a_malformed_npz_is_named(tmp_path, dlib_module, monkeypatch):
  path = shapes3d.dlib_npz_path(str(tmp_path))
  os.makedirs(os.path.dirname(path))
  np.savez(path, images=np.zeros((2, 64, 64, 3), np.float32))
  _point_dlib_at(monkeypatch, dlib_module, str(tmp_path))
  with pytest.raises(UserError, match="uint8 \\(\\*factor_sizes, 64, 64, 3\\)"):
    dlib_module.Shapes3D()


def test_training_from_dlibs_npz_divides_each_uint8_batch_as_dlib(roots, dlib_module, monkeypatch):
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import (registers `dataset`, whatever ran before)
  _point_dlib_at(monkeypatch, dlib_module, roots["npz"])
  gin.clear_config()
  gin.parse_config(["dataset.name = 'shapes3d'"])
  try:
    data = data_lib.load_ground_truth_data()  # no h5 where lievae_train looks: dlib's loader
  finally:
    gin.clear_config()
  assert isinstance(data, dlib_module.Shapes3D) and data.images.dtype == np.uint8
  batch = next(iter(data_lib.make_input_fn(data, 16, seed=0)())).numpy()
  grid = (data.images.astype(np.float32) / 255.).reshape(len(data.images), -1).view(np.uint32)
  for image in batch.reshape(16, -1).view(np.uint32):
    assert (grid == image).all(axis=1).any()  # bit for bit an image of dlib's float32 grid


def _dlib_config(*parts):
  import disentanglement_lib  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(disentanglement_lib.__file__), "config",
                      "unsupervised_study_v1", *parts)


def _env(root):
  return dict(os.environ, DISENTANGLEMENT_LIB_DATA=root)


def test_stock_commands_score_from_the_h5_alone_as_from_dlibs_npz(roots, shapes3d_model_dir,
                                                                 tmp_path):
  representation = str(tmp_path / "postprocessed" / "mean")
  postprocessed = command(  # the h5 alone: no npz where dlib looks
      "dlib_postprocess", f"--model_dir={shapes3d_model_dir}", f"--output_dir={representation}",
      f"--gin_config={_dlib_config('postprocess_configs', 'mean.gin')}", env=_env(roots["h5"]))
  assert postprocessed.returncode == 0, postprocessed.stderr[-3000:]
  scores = {}
  for source in ("h5", "npz"):
    output_dir = str(tmp_path / "metrics" / source)
    evaluated = command(
        "dlib_evaluate", f"--input_dir={representation}", f"--output_dir={output_dir}",
        f"--gin_config={_dlib_config('metric_configs', 'mig.gin')}",
        "--gin_bindings=evaluation.name = 'mig'", "--gin_bindings=mig.num_train = 500",
        env=_env(roots[source]))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(os.path.join(output_dir, "results", "json", "evaluation_results.json")) as f:
      results = json.load(f)
    scores[source] = {k: v for k, v in results.items() if k not in ("elapsed_time", "uuid")}
  assert np.isfinite(scores["h5"]["discrete_mig"])
  assert scores["h5"] == scores["npz"]

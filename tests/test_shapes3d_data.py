"""3DShapes as users have it: the SYNTHETIC generator writes the public h5 format, training reads
the h5 (uint8, scaled per batch) and `lievae_prepare_data` streams it into dlib's npz."""

import os

import gin
import h5py
import numpy as np
import pytest

from conftest import SHAPES3D_GRID, command
from lievae_tf.data import ground_truth as data_lib
from lievae_tf.data import shapes3d
from lievae_tf.data import synthetic

GRID = SHAPES3D_GRID  # 288 images


@pytest.fixture(scope="module")
def h5_path(shapes3d_h5):
  return shapes3d_h5


def test_synthetic_h5_has_the_public_format_and_a_c_order_grid(h5_path):
  with h5py.File(h5_path, "r") as f:
    images, labels = f["images"][()], f["labels"][()]
    assert "SYNTHETIC" in f.attrs["description"]
  assert images.shape == (288, 64, 64, 3) and images.dtype == np.uint8
  assert labels.shape == (288, 6)
  values = synthetic.shapes3d_factor_values(GRID)
  expected = np.stack([values[i][c] for i, c in enumerate(np.indices(GRID).reshape(6, -1))], 1)
  np.testing.assert_allclose(labels, expected)  # orientation varies fastest, as in the real file
  assert shapes3d.factor_sizes_of(labels) == GRID
  assert len(np.unique(images.reshape(288, -1), axis=0)) == 288  # every factor changes the image


def test_prepare_data_streams_the_h5_into_dlibs_npz(h5_path, tmp_path):
  result = command("lievae_prepare_data", "shapes3d", f"--h5={h5_path}",
                   f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  npz_path = tmp_path / "3dshapes" / shapes3d.DLIB_NPZ_FILENAME
  with h5py.File(h5_path, "r") as f, np.load(npz_path, encoding="latin1") as data:
    # dlib's Shapes3D reshapes images[0:6] to (N, 64, 64, 3) and labels to (N, 6).
    assert data["images"].shape == GRID + (64, 64, 3) and data["images"].dtype == np.uint8
    np.testing.assert_array_equal(data["images"].reshape(-1, 64, 64, 3), f["images"][()])
    np.testing.assert_array_equal(data["labels"].reshape(-1, 6), f["labels"][()])
  assert [p for p in os.listdir(tmp_path / "3dshapes")] == [shapes3d.DLIB_NPZ_FILENAME]
  again = command("lievae_prepare_data", "shapes3d", f"--h5={h5_path}",
                  f"--output_dir={tmp_path}")
  assert again.returncode == 1 and "--overwrite" in again.stderr
  assert "Traceback" not in again.stderr


def test_prepare_data_refuses_a_file_that_is_not_3dshapes(tmp_path):
  bad = tmp_path / "bad.h5"
  with h5py.File(bad, "w") as f:
    f["images"] = np.zeros((2, 32, 32, 3), np.float32)
  result = command("lievae_prepare_data", "shapes3d", f"--h5={bad}", f"--output_dir={tmp_path}")
  assert result.returncode == 1 and "not in the 3dshapes.h5 format" in result.stderr


def test_pipeline_holds_uint8_and_scales_each_batch(h5_path):
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=unused-import
  gin.clear_config()
  gin.parse_config([f"lievae_data.shapes3d_h5 = '{h5_path}'", "dataset.name = 'shapes3d'"])
  try:
    data = data_lib.load_ground_truth_data()
  finally:
    gin.clear_config()
  assert data.images.dtype == np.uint8 and data.factors_num_values == list(GRID)
  batch = next(iter(data_lib.make_input_fn(data, 16, seed=0)())).numpy()
  assert batch.dtype == np.float32 and batch.max() <= 1.0 and batch.max() > 0.5
  # Every image of the batch is an image of the file, divided by 255.
  grid = data.images.reshape(len(data.images), -1).astype(np.float32) / 255.0
  for image in batch.reshape(16, -1):
    assert np.min(np.abs(grid - image).max(axis=1)) < 1e-6
  observations = data.sample_observations(4, np.random.RandomState(0))
  assert observations.dtype == np.float32 and observations.max() <= 1.0


def test_lievae_train_trains_from_the_h5(shapes3d_h5, shapes3d_model_dir):
  with open(os.path.join(shapes3d_model_dir, "results", "gin", "train.gin")) as f:
    operative = f.read()
  assert "dataset.name = 'shapes3d'" in operative and shapes3d_h5 in operative
  assert os.path.isfile(os.path.join(shapes3d_model_dir, "tfhub", "saved_model.pb"))


def test_an_h5_where_dlib_looks_is_used_without_a_binding(h5_path, tmp_path, monkeypatch):
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=unused-import
  (tmp_path / "3dshapes").mkdir()
  os.symlink(h5_path, tmp_path / "3dshapes" / "3dshapes.h5")
  monkeypatch.setenv("DISENTANGLEMENT_LIB_DATA", str(tmp_path))
  gin.clear_config()
  gin.parse_config(["dataset.name = 'shapes3d'"])
  try:
    data = data_lib.load_ground_truth_data()
    assert "dataset.name = 'shapes3d'" in gin.operative_config_str()  # dlib's later steps need it
  finally:
    gin.clear_config()
  assert shapes3d.is_h5_ground_truth_data(data) and data.images.dtype == np.uint8

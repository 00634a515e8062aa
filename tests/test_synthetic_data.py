"""Tests of the synthetic dSprites generator and of bin/lievae_make_data."""

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lievae_tf.data import synthetic as sd

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bin" / "lievae_make_data"
TINY = (1, 3, 2, 3, 4, 5)  # 360 images; every factor size distinct from its neighbours


def _bases(sizes):
  # The image index dlib computes: dot(classes, N / cumprod(sizes)).
  return (np.prod(sizes) // np.cumprod(sizes)).astype(np.int64)


def _index(sizes, classes):
  return int(np.dot(classes, _bases(sizes)))


def _centre_of_mass(imgs):
  """(rows, cols) centre of mass of each image in a (..., 64, 64) array."""
  mass = imgs.sum(axis=(-2, -1)).astype(np.float64)
  grid = np.arange(64, dtype=np.float64)
  rows = (imgs.sum(axis=-1) * grid).sum(axis=-1) / mass
  cols = (imgs.sum(axis=-2) * grid).sum(axis=-1) / mass
  return rows, cols


@pytest.fixture(scope="module")
def tiny():
  return sd.render_dsprites(TINY)


def test_shapes_dtypes_and_values(tiny):
  imgs, classes, values = tiny
  n = int(np.prod(TINY))
  assert imgs.shape == (n, 64, 64) and imgs.dtype == np.uint8
  assert set(np.unique(imgs)) == {0, 1}
  assert classes.shape == (n, 6) and classes.dtype == np.int64
  assert values.shape == (n, 6) and values.dtype == np.float64
  # Every image shows a sprite, and none touches the frame (so none is clipped).
  assert imgs.sum(axis=(1, 2)).min() > 0
  border = imgs[:, [0, -1], :].sum() + imgs[:, :, [0, -1]].sum()
  assert border == 0
  # The value conventions of the real file.
  np.testing.assert_array_equal(np.unique(values[:, 0]), [1.0])
  np.testing.assert_array_equal(np.unique(values[:, 1]), [1.0, 2.0, 3.0])
  np.testing.assert_allclose(np.unique(values[:, 2]), np.linspace(0.5, 1, TINY[2]))
  np.testing.assert_allclose(np.unique(values[:, 3]), np.linspace(0, 2 * np.pi, TINY[3]))
  np.testing.assert_allclose(np.unique(values[:, 4]), np.linspace(0, 1, TINY[4]))
  np.testing.assert_allclose(np.unique(values[:, 5]), np.linspace(0, 1, TINY[5]))


def test_c_order_factor_indexing(tiny):
  imgs, classes, values = tiny
  # Rows are the grid in C order (posY fastest), so index = dot(classes, bases).
  np.testing.assert_array_equal(classes, np.array(list(np.ndindex(*TINY))))
  np.testing.assert_array_equal(classes @ _bases(TINY), np.arange(len(imgs)))
  assert list(classes[1]) == [0, 0, 0, 0, 0, 1]
  # Values follow the classes column by column.
  possible = sd._possible_values(TINY)
  for i, name in enumerate(sd.DSPRITES_FACTOR_NAMES):
    np.testing.assert_allclose(values[:, i], possible[name][classes[:, i]])


def test_image_depends_only_on_factor_values():
  # Grids (1,3,3,5,5,5) and (1,3,2,3,3,3) share scale, orientation and position
  # values at even classes of the larger grid: the same values must give the same
  # image at the C-order index of each grid.
  big, small = (1, 3, 3, 5, 5, 5), (1, 3, 2, 3, 3, 3)
  big_imgs = sd.render_dsprites(big)[0]
  small_imgs = sd.render_dsprites(small)[0]
  for c in np.ndindex(*small):
    c_big = (c[0], c[1], 2 * c[2], 2 * c[3], 2 * c[4], 2 * c[5])
    np.testing.assert_array_equal(big_imgs[_index(big, c_big)], small_imgs[_index(small, c)],
                                  err_msg=f"classes {c}")
  # A one-image grid is the first image of any grid.
  one = sd.render_dsprites((1, 1, 1, 1, 1, 1))[0]
  assert one.shape == (1, 64, 64)
  np.testing.assert_array_equal(one[0], small_imgs[0])


def test_distinct_shapes_differ(tiny):
  imgs = tiny[0].reshape(TINY[1], -1, 64 * 64)  # shape, other factors, pixels
  for a, b in [(0, 1), (0, 2), (1, 2)]:
    same = np.all(imgs[a] == imgs[b], axis=-1)
    assert not same.any(), f"shapes {a} and {b} coincide at {np.flatnonzero(same)}"


def test_positions_move_centre_of_mass(tiny):
  imgs = tiny[0].reshape(TINY + (64, 64))
  rows, cols = _centre_of_mass(imgs)  # (..., posX, posY)
  # posX moves the sprite right, leaving its height alone; posY moves it down.
  assert np.all(np.diff(cols, axis=4) > 0.9)
  np.testing.assert_allclose(np.diff(rows, axis=4), 0.0, atol=1e-9)
  assert np.all(np.diff(rows, axis=5) > 0.9)
  np.testing.assert_allclose(np.diff(cols, axis=5), 0.0, atol=1e-9)
  # The sprite shape itself does not change with position.
  areas = imgs.sum(axis=(-2, -1))
  assert np.all(areas == areas[..., :1, :1])


def test_scale_grows_area():
  sizes = (1, 3, 6, 8, 1, 1)
  imgs = sd.render_dsprites(sizes)[0].reshape(sizes + (64, 64))
  areas = imgs.sum(axis=(-2, -1)).astype(np.int64)  # (..., scale, orientation, 1, 1)
  assert np.all(np.diff(areas, axis=2) > 0), areas[0, :, :, :, 0, 0]


def test_orientation_turns_the_heart():
  n = 8
  imgs = sd.render_dsprites((1, 3, 1, n, 1, 1))[0].reshape(3, n, 64 * 64)
  heart = imgs[2]
  # Like the real file, orientation runs over [0, 2*pi] inclusive: the ends coincide...
  np.testing.assert_array_equal(heart[0], heart[-1])
  # ...and the heart, which has no rotational symmetry, differs at every angle between.
  distinct = {h.tobytes() for h in heart[:-1]}
  assert len(distinct) == n - 1


@pytest.mark.parametrize("sizes, pattern", [
    ((1, 3, 6, 40, 32), "6 entries.*got 5"),
    ((2, 3, 6, 40, 32, 32), "color.*got 2"),
    ((1, 0, 6, 40, 32, 32), "shape.*got 0"),
    ((1, 4, 6, 40, 32, 32), "shape.*got 4"),
    ((1, 3, 0, 40, 32, 32), "scale.*got 0"),
    ((1, 3, 6, -1, 32, 32), "orientation.*got -1"),
    ((1, 3, 6, 40, 2.5, 32), "posX.*got 2.5"),
    ((1, 3, 6, 40, 32, 100), "posY.*at most.*got 100"),
    ((1, 3, 6, 40, True, 32), "posX.*got True"),
])
def test_bad_factor_sizes_raise(sizes, pattern, tmp_path):
  with pytest.raises(ValueError, match=pattern):
    sd.render_dsprites(sizes)
  with pytest.raises(ValueError, match=pattern):
    sd.write_synthetic_dsprites(tmp_path, sizes)
  assert not (tmp_path / "dsprites").exists()


def test_written_file_has_the_real_layout(tmp_path):
  path = sd.write_synthetic_dsprites(tmp_path, TINY)
  assert path == str(tmp_path / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")
  # Nothing but the file and its README: no temporary file left behind.
  assert sorted(os.listdir(tmp_path / "dsprites")) == sorted(
      [os.path.basename(path), "SYNTHETIC_README.txt"])
  assert "SYNTHETIC" in (tmp_path / "dsprites" / "SYNTHETIC_README.txt").read_text()

  imgs, classes, values = sd.render_dsprites(TINY)
  with open(path, "rb") as f:  # as disentanglement_lib opens it
    data = np.load(f, encoding="latin1", allow_pickle=True)
    assert sorted(data.files) == ["imgs", "latents_classes", "latents_values", "metadata"]
    np.testing.assert_array_equal(data["imgs"], imgs)
    np.testing.assert_array_equal(data["latents_classes"], classes)
    np.testing.assert_array_equal(data["latents_values"], values)
    meta = data["metadata"][()]
  np.testing.assert_array_equal(meta["latents_sizes"], TINY)
  assert meta["latents_names"] == sd.DSPRITES_FACTOR_NAMES
  assert set(meta["latents_possible_values"]) == set(sd.DSPRITES_FACTOR_NAMES)
  np.testing.assert_allclose(meta["latents_possible_values"]["scale"], [0.5, 1.0])
  assert "SYNTHETIC" in meta["description"] and "NOT DeepMind" in meta["description"]
  for key in ("title", "author", "date", "version"):
    assert key in meta
  # The generator it names is a module that exists (it once named one that had moved).
  assert meta["author"].split()[0] == "lievae_tf.data.synthetic"
  importlib.import_module(meta["author"].split()[0])


def test_refuses_to_overwrite_unless_asked(tmp_path):
  path = sd.write_synthetic_dsprites(tmp_path, TINY)
  before = Path(path).read_bytes()
  with pytest.raises(FileExistsError) as info:
    sd.write_synthetic_dsprites(tmp_path, (1, 1, 1, 1, 2, 2))
  assert path in str(info.value) and "overwrite" in str(info.value)
  assert Path(path).read_bytes() == before

  sd.write_synthetic_dsprites(tmp_path, (1, 1, 1, 1, 2, 2), overwrite=True)
  with open(path, "rb") as f:
    data = np.load(f, encoding="latin1", allow_pickle=True)
    assert data["imgs"].shape == (4, 64, 64)


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
  def fail_halfway(f, **arrays):
    f.write(b"PK\x03\x04 half a zip")
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "savez_compressed", fail_halfway)
  with pytest.raises(KeyboardInterrupt):
    sd.write_synthetic_dsprites(tmp_path, TINY)
  assert os.listdir(tmp_path / "dsprites") == []


def test_loads_through_disentanglement_lib(tmp_path):
  sizes = TINY
  sd.write_synthetic_dsprites(tmp_path, sizes)
  factors = np.array([[0, 0, 0, 0, 0], [2, 1, 2, 3, 4], [1, 0, 1, 2, 0]])
  np.save(tmp_path / "factors.npy", factors)
  # dlib reads DISENTANGLEMENT_LIB_DATA when its data modules are imported: a
  # fresh interpreter is the only reliable way to point it at tmp_path.
  code = textwrap.dedent("""
      import sys
      import numpy as np
      from disentanglement_lib.data.ground_truth import dsprites
      out = sys.argv[1]
      data = dsprites.DSprites([1, 2, 3, 4, 5])  # what dataset.name = 'dsprites_full' builds
      rs = np.random.RandomState(0)
      np.savez(out + "/dlib.npz",
               images_shape=data.images.shape,
               factor_sizes=data.factor_sizes,
               sampled=data.sample_observations(16, rs),
               chosen=data.sample_observations_from_factors(np.load(out + "/factors.npy"), rs))
      """)
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = np.load(tmp_path / "dlib.npz")
  assert tuple(out["images_shape"]) == (int(np.prod(sizes)), 64, 64)
  np.testing.assert_array_equal(out["factor_sizes"], sizes)
  sampled = out["sampled"]
  assert sampled.shape == (16, 64, 64, 1) and sampled.dtype == np.float32
  assert set(np.unique(sampled)) <= {0.0, 1.0} and sampled.sum() > 0
  # dlib finds, for given factors, the very image we rendered for them.
  imgs = sd.render_dsprites(sizes)[0]
  for f, image in zip(factors, out["chosen"]):
    np.testing.assert_array_equal(image[..., 0], imgs[_index(sizes, [0, *f])])


def _run_script(*args, env=None):
  return subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                        capture_output=True, text=True, timeout=120)


def test_script_writes_and_then_refuses(tmp_path):
  result = _run_script(f"--output_dir={tmp_path}", "--factor_sizes=1,2,1,2,2,3")
  assert result.returncode == 0, result.stderr
  path = sd.dsprites_path(tmp_path)
  assert path in result.stdout and "24" in result.stdout
  assert f"export DISENTANGLEMENT_LIB_DATA={tmp_path}" in result.stdout
  assert "dsprites_full" in result.stdout
  with open(path, "rb") as f:
    data = np.load(f, encoding="latin1", allow_pickle=True)
    assert data["imgs"].shape == (24, 64, 64)
    np.testing.assert_array_equal(data["metadata"][()]["latents_sizes"], [1, 2, 1, 2, 2, 3])
  before = Path(path).read_bytes()

  again = _run_script(f"--output_dir={tmp_path}", "--factor_sizes=1,2,1,2,2,3")
  assert again.returncode == 1
  assert "Traceback" not in again.stderr
  lines = again.stderr.strip().splitlines()
  assert len(lines) == 1, again.stderr
  assert lines[0].startswith("lievae_make_data: error:") and "--overwrite" in lines[0]
  assert Path(path).read_bytes() == before


def test_script_reports_bad_sizes_and_missing_output_dir(tmp_path):
  bad = _run_script(f"--output_dir={tmp_path}", "--factor_sizes=1,4,1,1,1,1")
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert bad.stderr.strip() == (
      "lievae_make_data: error: factor size of shape must be between 1 and 3 "
      "('square', 'ellipse', 'heart'), got 4")

  env = {k: v for k, v in os.environ.items() if k != "DISENTANGLEMENT_LIB_DATA"}
  missing = _run_script("--factor_sizes=1,1,1,1,1,1", env=env)
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert "DISENTANGLEMENT_LIB_DATA" in missing.stderr

  # Without --output_dir the script writes where DISENTANGLEMENT_LIB_DATA points.
  env["DISENTANGLEMENT_LIB_DATA"] = str(tmp_path / "from_env")
  from_env = _run_script("--factor_sizes=1,1,1,1,1,1", env=env)
  assert from_env.returncode == 0, from_env.stderr
  assert os.path.exists(sd.dsprites_path(tmp_path / "from_env"))

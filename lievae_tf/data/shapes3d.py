"""3DShapes as users have it: DeepMind's public `3dshapes.h5`, for training and for dlib.

- Training: `Shapes3DH5` holds the h5's `images` as uint8 (5.9 GB for the real file; dlib's own
  `Shapes3D` holds a float32 copy, ~24 GB). The input pipeline gathers a batch of uint8 and scales
  it by `pixel_scale` (1/255) to float32 per batch.
- Which file: `lievae_data.shapes3d_h5 = 'PATH'` in gin, or, when unset, with
  `dataset.name = 'shapes3d'`, `$DISENTANGLEMENT_LIB_DATA/3dshapes/3dshapes.h5` whenever it exists
  (preferred to dlib's npz beside it). `dataset.name` stays 'shapes3d', so dlib's later steps
  (postprocess, evaluate) resolve the dataset as usual.
- dlib's steps: `load_shapes3d_grid` reads the uint8 grid (from the h5 when it is there, else
  from dlib's npz) for `lievae_tf.dlib.lean_shapes3d`: dlib's `Shapes3D` holding uint8 and
  dividing each sampled batch by 255 as dlib divides its whole array, so observations are
  bit-identical. `lievae_tf.dlib.speedups` puts that class in place of dlib's when dlib's module
  is imported (`lievae_train` applies it itself), so the stock `dlib_postprocess`/`dlib_evaluate`
  need 5.9 GB, not ~30.
- `write_dlib_npz` streams: it reads the h5 in chunks and writes them into the npz's zip entries
  behind a `.npy` header, so memory stays at one chunk; the file appears atomically. Nothing here
  needs it any more; it is for other tools that read dlib's npz.
"""

import os
import zipfile

import gin
import numpy as np

from lievae_tf import data
from lievae_tf import model_dir
from lievae_tf.errors import UserError

DLIB_NPZ_FILENAME = ("look-at-object-room_floor-hueXwall-hueXobj-hueXobj-sizeXobj-shapeXview-azi"
                     ".npz")
_CHUNK_IMAGES = 4800  # 59 MB of uint8 images per read/write


def dlib_npz_path(root=None):
  """Where dlib's `Shapes3D` looks for its npz under `root` ($DISENTANGLEMENT_LIB_DATA)."""
  return os.path.join(root or data.data_root(), "3dshapes", DLIB_NPZ_FILENAME)


def default_h5_path(root=None):
  return os.path.join(root or data.data_root(), "3dshapes", data.SHAPES3D_H5_FILENAME)


@gin.configurable("lievae_data")
def data_options(shapes3d_h5=None):
  """Data choices of lievae_tf that dlib's `dataset` does not have.

  Args:
    shapes3d_h5: path of the public `3dshapes.h5` to train on when `dataset.name = 'shapes3d'`.
      None: use `$DISENTANGLEMENT_LIB_DATA/3dshapes/3dshapes.h5` if it exists.
  """
  return dict(shapes3d_h5=shapes3d_h5)


def training_h5(dataset_name):
  """The h5 file to train `dataset_name` from, or None to use dlib's own loader."""
  if dataset_name != "shapes3d":
    if data_options()["shapes3d_h5"]:
      raise UserError(f"lievae_data.shapes3d_h5 is set but dataset.name = {dataset_name!r}; "
                      "set dataset.name = 'shapes3d' or remove the binding.")
    return None
  path = data_options()["shapes3d_h5"]
  if path:
    if not os.path.isfile(path):
      raise UserError(f"lievae_data.shapes3d_h5 = {path!r}: no such file. Point it at the "
                      "public 3dshapes.h5 (https://github.com/deepmind/3d-shapes).")
    return path
  if os.path.isfile(default_h5_path()):
    return default_h5_path()
  return None


def _open_h5(path):
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise UserError(f"{path} is not a readable HDF5 file ({e}). Replace it with the public "
                    "3dshapes.h5.") from None
  images, labels = f.get("images"), f.get("labels")
  if (images is None or labels is None or images.ndim != 4 or tuple(images.shape[1:]) !=
      (64, 64, 3) or images.dtype != np.uint8 or tuple(labels.shape) != (len(images), 6)):
    f.close()
    raise UserError(f"{path} is not in the 3dshapes.h5 format (datasets `images` uint8 "
                    "(N, 64, 64, 3) and `labels` (N, 6)). Replace it with the public file.")
  return f


def factor_sizes_of(labels):
  """The grid's factor sizes: the number of distinct values of each label column."""
  return tuple(len(np.unique(labels[:, i])) for i in range(labels.shape[1]))


def _load_from_h5(path):
  """(uint8 images (N, 64, 64, 3), float labels (N, 6)), read in chunks (no float copy)."""
  with _open_h5(path) as f:
    images = np.empty(f["images"].shape, np.uint8)
    for start in range(0, len(images), _CHUNK_IMAGES):
      f["images"].read_direct(images, np.s_[start:start + _CHUNK_IMAGES],
                              np.s_[start:start + _CHUNK_IMAGES])
    labels = np.asarray(f["labels"][()])
  return images, labels


def load_h5_grid(path):
  """(uint8 images (N, 64, 64, 3), factor sizes) of an h5 whose labels form a full C-order grid."""
  images, labels = _load_from_h5(path)
  sizes = factor_sizes_of(labels)
  if int(np.prod(sizes)) != len(images):
    raise UserError(f"{path}: its labels do not form a full factor grid ({sizes}, "
                    f"{len(images)} images). Use the public 3dshapes.h5 unchanged.")
  return images, sizes


def load_dlib_npz_grid(path):
  """(uint8 images (N, 64, 64, 3), factor sizes) of dlib's npz, `images` (*sizes, 64, 64, 3).

  np.load reads a zip member into one preallocated array in small chunks, so this holds the
  uint8 images once; dlib's `.astype(np.float32)` copy is what is avoided.
  """
  try:
    with np.load(path, encoding="latin1") as archive:
      images = archive["images"]
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    raise UserError(f"{path} is not a readable 3DShapes npz ({type(e).__name__}: {e}). Replace "
                    f"it, or remove it and put the public {data.SHAPES3D_H5_FILENAME} beside "
                    "it.") from None
  if images.dtype != np.uint8 or images.ndim != 9 or images.shape[6:] != (64, 64, 3):
    raise UserError(f"{path}: `images` is {images.dtype} {images.shape}; dlib's 3DShapes npz "
                    "holds uint8 (*factor_sizes, 64, 64, 3). Replace it, or remove it and put "
                    f"the public {data.SHAPES3D_H5_FILENAME} beside it.")
  sizes = tuple(int(s) for s in images.shape[:6])
  return images.reshape((-1, 64, 64, 3)), sizes


def _missing_files_error(h5_path, npz_path):
  return UserError(
      f"3DShapes: found neither {h5_path} nor {npz_path} ({data.DATA_ENV}="
      f"{os.environ.get(data.DATA_ENV, '<unset>')!r}). Put DeepMind's public "
      f"{data.SHAPES3D_H5_FILENAME} (https://github.com/deepmind/3d-shapes) at the first path "
      "(enough for training and for dlib's steps), or dlib's npz at the second "
      f"(`lievae_prepare_data shapes3d --h5=PATH` writes it from the h5); or set {data.DATA_ENV} "
      "to the directory that holds 3dshapes/. A SYNTHETIC stand-in: "
      "`lievae_make_data --dataset=shapes3d`.")


def load_shapes3d_grid(npz_path):
  """The uint8 grid for dlib's `Shapes3D`, whose npz is at `npz_path`: from the public h5 in
  the same directory when it is there (no second copy needed), else from the npz.
  Returns (images (N, 64, 64, 3) uint8, factor sizes, the path read)."""
  h5_path = os.path.join(os.path.dirname(npz_path), data.SHAPES3D_H5_FILENAME)
  if os.path.isfile(h5_path):
    return load_h5_grid(h5_path) + (h5_path,)
  if os.path.isfile(npz_path):
    return load_dlib_npz_grid(npz_path) + (npz_path,)
  raise _missing_files_error(h5_path, npz_path)


def _ground_truth_base():
  from disentanglement_lib.data.ground_truth import ground_truth_data  # pylint: disable=g-import-not-at-top
  return ground_truth_data.GroundTruthData


def load_h5_ground_truth_data(path):
  """A dlib `GroundTruthData` over the h5's images, held as uint8."""
  from disentanglement_lib.data.ground_truth import named_data, util  # pylint: disable=g-import-not-at-top,unused-import
  data.record_dataset_name("shapes3d")
  images, sizes = load_h5_grid(path)

  class Shapes3DH5(_ground_truth_base()):
    """3DShapes from the h5 in C order over the factors, as the public file is."""
    pixel_scale = 1.0 / 255.0  # the input pipeline scales each uint8 batch by this

    def __init__(self):
      self.images, self.factor_sizes = images, list(sizes)
      self.state_space = util.SplitDiscreteStateSpace(self.factor_sizes, list(range(6)))
      self.factor_bases = np.prod(self.factor_sizes) // np.cumprod(self.factor_sizes)

    @property
    def num_factors(self):
      return self.state_space.num_latent_factors

    @property
    def factors_num_values(self):
      return self.factor_sizes

    @property
    def observation_shape(self):
      return [64, 64, 3]

    def sample_factors(self, num, random_state):
      return self.state_space.sample_latent_factors(num, random_state)

    def sample_observations_from_factors(self, factors, random_state):
      all_factors = self.state_space.sample_all_factors(factors, random_state)
      indices = np.array(np.dot(all_factors, self.factor_bases), dtype=np.int64)
      return self.images[indices].astype(np.float32) * self.pixel_scale

  return Shapes3DH5()


def is_h5_ground_truth_data(data):
  return type(data).__name__ == "Shapes3DH5" and hasattr(data, "pixel_scale")


def _write_npy_entry(archive, name, shape, dtype, chunks):
  """Writes one `.npy` member of an npz: the header, then the array's bytes chunk by chunk."""
  with archive.open(name + ".npy", "w", force_zip64=True) as member:
    np.lib.format.write_array_header_2_0(
        member, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(shape)})
    for chunk in chunks:
      member.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())


def write_dlib_npz(h5_path, root=None, overwrite=False):
  """Writes dlib's 3DShapes npz (`images` uint8 (*factor_sizes, 64, 64, 3), `labels`
  (*factor_sizes, 6)) from the public h5, streaming, atomically. Returns its path."""
  path = dlib_npz_path(root)
  if os.path.exists(path) and not overwrite:
    raise UserError(f"{path} already exists; pass --overwrite to replace it.")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with _open_h5(h5_path) as f:
    images, labels = f["images"], f["labels"]
    label_values = np.asarray(labels[()])
    sizes = factor_sizes_of(label_values)
    if int(np.prod(sizes)) != len(images):
      raise UserError(f"{h5_path}: its labels do not form a full factor grid ({sizes}, "
                      f"{len(images)} images).")
    if sizes != data.SHAPES3D_FULL_FACTOR_SIZES:
      print(f"warning: {h5_path} has factor sizes {sizes}; dlib's own Shapes3D assumes "
            f"{data.SHAPES3D_FULL_FACTOR_SIZES} (the lean one installed here reads the file's "
            "grid).")
    with model_dir.atomic_file(path) as tmp:
      # Stored, not deflated: the images barely compress and deflate would cost minutes.
      with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        chunks = (images[s:s + _CHUNK_IMAGES] for s in range(0, len(images), _CHUNK_IMAGES))
        _write_npy_entry(archive, "images", tuple(sizes) + (64, 64, 3), np.uint8, chunks)
        _write_npy_entry(archive, "labels", tuple(sizes) + (6,), label_values.dtype,
                         [label_values])
  return path

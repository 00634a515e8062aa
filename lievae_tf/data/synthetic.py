"""Small SYNTHETIC datasets in exactly the file format disentanglement_lib reads.

The real dSprites file (DeepMind's `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`)
cannot be downloaded on every machine. This module draws look-alike sprites
procedurally and writes them in the same `.npz` layout, under the same file name,
so that disentanglement_lib's unmodified `DSprites` class (`dataset.name =
'dsprites_full'`) loads them and the whole pipeline can be exercised end to end.

The images are NOT DeepMind's dSprites: the shapes, sizes and positions only
resemble them, and scores obtained on this data are not comparable to published
dSprites results. The file's metadata and a `SYNTHETIC_README.txt` beside it say so.

Factor grid, as in the real file (C order: the last factor, posY, varies fastest,
so that image index = dot(latents_classes, N / cumprod(sizes))):
  color        1 value   (1.0)
  shape        1..3      square, ellipse, heart (values 1., 2., 3.)
  scale        n values  linspace(0.5, 1, n)
  orientation  n values  linspace(0, 2*pi, n); like the real file both ends are
                          included, so the first and last orientations coincide
  posX, posY   n values  linspace(0, 1, n); posX moves the sprite right (columns),
                          posY moves it down (rows)

Caveat: disentanglement_lib's `DSprites.factors_num_values` is hard-coded to the
full sizes [3, 6, 40, 32, 32]; with a smaller grid the sampling (which uses the
file's `latents_sizes`) is right but that property is not.
"""

import datetime
import os

import numpy as np

from lievae_tf import data
from lievae_tf import model_dir

DSPRITES_FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
DSPRITES_FULL_FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
DSPRITES_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SHAPE_NAMES = ("square", "ellipse", "heart")
README_FILENAME = "SYNTHETIC_README.txt"
# The module the files name as their generator: this one's own name, so that it cannot go stale
# when the module moves. Nothing reads it back (files naming an older module read the same).
GENERATOR = __name__

_IMAGE_SIZE = 64
# A sprite at scale 1 fits, at every orientation, in a disc of this radius (px).
# Large enough that each of the 6 scale steps (0.1) grows the square's half side
# by more than a pixel (0.1 * 15 / sqrt(2) = 1.06), so no two scales coincide.
_SPRITE_RADIUS = 15.0
# Templates are drawn on a square grid with the sprite centre at its middle (a
# pixel corner), one pixel of blank border around the disc.
_TEMPLATE_SIZE = 2 * int(np.ceil(_SPRITE_RADIUS)) + 2
# Sprite centres (pixel-corner coordinates) run over this range, which keeps the
# whole template, hence the sprite, inside the 64x64 frame.
_MIN_CENTRE = _TEMPLATE_SIZE // 2
_MAX_CENTRE = _IMAGE_SIZE - _TEMPLATE_SIZE // 2
# Positions are whole-pixel shifts: more values than this would repeat images.
MAX_POSITION_VALUES = _MAX_CENTRE - _MIN_CENTRE + 1


def _square(u, v):
  # Half side 1/sqrt(2): the corners touch the unit disc when rotated.
  return np.maximum(np.abs(u), np.abs(v)) <= np.sqrt(0.5)


def _ellipse(u, v):
  # Elongated 2:1 so that orientation visibly changes it.
  return u**2 + (v / 0.5)**2 <= 1.0


def _heart(u, v):
  # The classic implicit heart (x^2 + y^2 - 1)^3 <= x^2 y^3 has its smallest
  # enclosing disc at (0, 0.25) with radius 1.25: map the unit disc onto it.
  x = 1.25 * u
  y = 1.25 * v + 0.25
  return (x**2 + y**2 - 1.0)**3 - x**2 * y**3 <= 0.0


_SHAPE_FUNCTIONS = (_square, _ellipse, _heart)


def _validate_factor_sizes(factor_sizes):
  """Returns factor_sizes as a tuple of ints, or raises a ValueError naming the bad value."""
  try:
    sizes = tuple(factor_sizes)
  except TypeError:
    raise ValueError(
        f"factor_sizes must be a sequence of {len(DSPRITES_FACTOR_NAMES)} integers "
        f"{DSPRITES_FACTOR_NAMES}, got {factor_sizes!r}") from None
  if len(sizes) != len(DSPRITES_FACTOR_NAMES):
    raise ValueError(
        f"factor_sizes must have {len(DSPRITES_FACTOR_NAMES)} entries "
        f"{DSPRITES_FACTOR_NAMES}, got {len(sizes)}: {factor_sizes!r}")
  checked = []
  for name, size in zip(DSPRITES_FACTOR_NAMES, sizes):
    # bool is an int subclass but True/False as a size is surely a mistake.
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
      raise ValueError(f"factor size of {name} must be an integer, got {size!r}")
    checked.append(int(size))
  color, shape, *others = checked
  if color != 1:
    raise ValueError(f"factor size of color must be 1 (dSprites is monochrome), got {color}")
  if not 1 <= shape <= len(SHAPE_NAMES):
    raise ValueError(
        f"factor size of shape must be between 1 and {len(SHAPE_NAMES)} "
        f"{SHAPE_NAMES}, got {shape}")
  for name, size in zip(DSPRITES_FACTOR_NAMES[2:], others):
    if size < 1:
      raise ValueError(f"factor size of {name} must be at least 1, got {size}")
  for name, size in zip(DSPRITES_FACTOR_NAMES[4:], checked[4:]):
    if size > MAX_POSITION_VALUES:
      raise ValueError(
          f"factor size of {name} must be at most {MAX_POSITION_VALUES} (the number "
          f"of distinct whole-pixel positions in a 64x64 image), got {size}")
  return tuple(checked)


def _possible_values(sizes):
  """The per-factor value arrays of the real file, for the given grid sizes."""
  _, n_shape, n_scale, n_orient, n_x, n_y = sizes
  return {
      "color": np.ones(1),
      "shape": np.arange(1, n_shape + 1, dtype=np.float64),
      "scale": np.linspace(0.5, 1.0, n_scale),
      "orientation": np.linspace(0.0, 2 * np.pi, n_orient),
      "posX": np.linspace(0.0, 1.0, n_x),
      "posY": np.linspace(0.0, 1.0, n_y),
  }


def _render_templates(n_shape, scales, orientations):
  """Binary sprites centred on a small grid: uint8 (n_shape, n_scale, n_orient, T, T)."""
  # Pixel-centre offsets from the sprite centre, in pixels, with y pointing up.
  offsets = np.arange(_TEMPLATE_SIZE) + 0.5 - _TEMPLATE_SIZE / 2
  x = offsets[None, :]
  y = -offsets[:, None]
  radius = (scales * _SPRITE_RADIUS)[:, None, None, None]
  # Exact angles: 2*pi draws exactly as 0 (as in the real file, the two ends of
  # the orientation range coincide) and quarter turns map the pixel grid onto
  # itself instead of flipping pixels whose centres lie on an edge.
  angles = np.mod(orientations, 2 * np.pi)
  cos = np.round(np.cos(angles), 12)[None, :, None, None]
  sin = np.round(np.sin(angles), 12)[None, :, None, None]
  # Sampling the shape at the grid rotated by -theta turns the sprite by +theta
  # (counter-clockwise on screen).
  u = (cos * x + sin * y) / radius
  v = (-sin * x + cos * y) / radius
  return np.stack([fn(u, v) for fn in _SHAPE_FUNCTIONS[:n_shape]]).astype(np.uint8)


def _window_starts(n):
  """Row/column starts of the sliding window that puts the sprite centre at position i."""
  centres = np.rint(_MIN_CENTRE + np.linspace(0.0, 1.0, n) * (_MAX_CENTRE - _MIN_CENTRE))
  top_left = centres.astype(np.int64) - _TEMPLATE_SIZE // 2
  # The template sits at (64 - T, 64 - T) of the canvas (see render_dsprites), so
  # a 64x64 window starting at 64 - T - top_left shows it at top_left.
  return (_IMAGE_SIZE - _TEMPLATE_SIZE) - top_left


def render_dsprites(factor_sizes=DSPRITES_FULL_FACTOR_SIZES):
  """Renders a synthetic dSprites-like grid of images.

  Args:
    factor_sizes: six ints, the number of values of (color, shape, scale,
      orientation, posX, posY); color must be 1, shape 1..3, positions at most
      MAX_POSITION_VALUES.

  Returns:
    imgs: uint8 (N, 64, 64) with values in {0, 1}, N = prod(factor_sizes), in C
      order over the factor grid (posY fastest), as in the real file.
    latents_classes: int64 (N, 6), the factor indices of each image.
    latents_values: float64 (N, 6), the factor values of each image.

  Raises:
    ValueError: if factor_sizes is not a valid grid; the message names the value.
  """
  sizes = _validate_factor_sizes(factor_sizes)
  _, n_shape, n_scale, n_orient, n_x, n_y = sizes
  values = _possible_values(sizes)
  num_images = int(np.prod(sizes))

  templates = _render_templates(n_shape, values["scale"], values["orientation"])
  templates = templates.reshape(-1, _TEMPLATE_SIZE, _TEMPLATE_SIZE)

  # Each template becomes an (n_x, n_y) block of consecutive images. Instead of a
  # loop over positions, put the template in a blank canvas and gather all its
  # translations at once from a (strided, copy-free) view of every 64x64 window.
  canvas_size = 2 * _IMAGE_SIZE - _TEMPLATE_SIZE
  canvas = np.zeros((canvas_size, canvas_size), np.uint8)
  windows = np.lib.stride_tricks.sliding_window_view(canvas, (_IMAGE_SIZE, _IMAGE_SIZE))
  rows = _window_starts(n_y)[None, :]  # posY moves the sprite down the rows
  cols = _window_starts(n_x)[:, None]  # posX moves it right along the columns
  corner = _IMAGE_SIZE - _TEMPLATE_SIZE

  # np.empty: every pixel is written below, so no need to touch 3 GB twice.
  imgs = np.empty((num_images, _IMAGE_SIZE, _IMAGE_SIZE), np.uint8)
  blocks = imgs.reshape(len(templates), n_x, n_y, _IMAGE_SIZE, _IMAGE_SIZE)
  for block, template in zip(blocks, templates):
    canvas[corner:_IMAGE_SIZE, corner:_IMAGE_SIZE] = template  # the rest stays blank
    block[...] = windows[rows, cols]

  latents_classes = np.ascontiguousarray(np.indices(sizes, dtype=np.int64).reshape(6, -1).T)
  latents_values = np.stack(
      [values[name][latents_classes[:, i]] for i, name in enumerate(DSPRITES_FACTOR_NAMES)],
      axis=1)
  return imgs, latents_classes, latents_values


def _metadata(sizes):
  """The metadata dict of the real file, marked as synthetic."""
  return {
      "latents_sizes": np.array(sizes, dtype=np.int64),
      "latents_names": DSPRITES_FACTOR_NAMES,
      "latents_possible_values": _possible_values(sizes),
      "description": (
          f"SYNTHETIC data generated by {GENERATOR}, NOT DeepMind's "
          "dSprites dataset. Procedurally drawn sprites (square, ellipse, heart) "
          "in the dSprites file format, for testing pipelines where the real file "
          "is unavailable. Scores on it are not comparable to dSprites results. "
          f"Factor sizes {tuple(sizes)} for {DSPRITES_FACTOR_NAMES}."),
      "title": "SYNTHETIC dSprites-format dataset (lievae_tf)",
      "author": f"{GENERATOR} (generated, not DeepMind)",
      "date": datetime.date.today().isoformat(),
      "version": 1,
      "synthetic": True,
  }


def _readme_text(path, sizes, num_images):
  return (
      "SYNTHETIC DATA - NOT DeepMind's dSprites\n"
      "=========================================\n\n"
      f"{os.path.basename(path)} in this directory was generated by\n"
      f"{GENERATOR} (bin/lievae_make_data). It has the file name and\n"
      "format of the real dSprites file so that disentanglement_lib loads it\n"
      "unchanged, but its images are procedurally drawn look-alikes:\n\n"
      f"  factors  {', '.join(DSPRITES_FACTOR_NAMES)}\n"
      f"  sizes    {', '.join(str(s) for s in sizes)}\n"
      f"  images   {num_images}\n\n"
      "Use it only to test pipelines; results on it are not comparable to\n"
      "published dSprites results. Replace it with the real file from\n"
      "https://github.com/deepmind/dsprites-dataset for real experiments.\n"
      "Note: disentanglement_lib's DSprites.factors_num_values always reports the\n"
      "full sizes [3, 6, 40, 32, 32], whatever the grid in this file.\n")


def _atomic_write(path, write_fn):
  """Calls write_fn(binary file) on a temporary file, then renames it to path."""
  with model_dir.atomic_file(path) as tmp_path:
    with open(tmp_path, "wb") as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())


def dsprites_path(data_root):
  """Where disentanglement_lib looks for dSprites under data_root."""
  return os.path.join(os.fspath(data_root), "dsprites", DSPRITES_FILENAME)


def write_synthetic_dsprites(data_root, factor_sizes=DSPRITES_FULL_FACTOR_SIZES,
                             overwrite=False):
  """Writes a synthetic dSprites file where disentanglement_lib looks for the real one.

  Writes `data_root/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`
  (keys imgs, latents_classes, latents_values, metadata, as the real file) and a
  SYNTHETIC_README.txt beside it. The file is compressed with
  np.savez_compressed, like the real file: the sparse binary images shrink about
  a hundredfold (the full grid is tens of MB instead of 3 GB).

  Args:
    data_root: the directory DISENTANGLEMENT_LIB_DATA will point to.
    factor_sizes: six ints, see render_dsprites.
    overwrite: replace an existing file at that path.

  Returns:
    The path of the written .npz file.

  Raises:
    ValueError: for an invalid data_root or factor_sizes.
    FileExistsError: if the file exists and overwrite is False.
  """
  if data_root is None or not os.fspath(data_root):
    raise ValueError(f"data_root must be a directory path, got {data_root!r}")
  sizes = _validate_factor_sizes(factor_sizes)
  path = dsprites_path(data_root)
  # Checked before the (possibly long) rendering so that a refusal is immediate.
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(
        f"{path} already exists; pass overwrite=True (--overwrite) to replace it")

  imgs, latents_classes, latents_values = render_dsprites(sizes)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # A 0-d object array, as in the real file: dlib reads data["metadata"][()].
  metadata = np.array(_metadata(sizes), dtype=object)
  _atomic_write(path, lambda f: np.savez_compressed(
      f, imgs=imgs, latents_classes=latents_classes, latents_values=latents_values,
      metadata=metadata))
  readme = _readme_text(path, sizes, len(imgs))
  _atomic_write(os.path.join(os.path.dirname(path), README_FILENAME),
                lambda f: f.write(readme.encode("utf-8")))
  return path


# SYNTHETIC 3DShapes-format data: DeepMind's `3dshapes.h5` layout, procedurally drawn.
#
# A flat "room": the wall above a horizon, the floor below it, an object standing on the floor.
# Factors (C order, orientation fastest, as the real file): floor hue, wall hue, object hue
# (hues k/n), scale (linspace(0.75, 1.25, n)), shape (0 cube, 1 cylinder, 2 sphere, 3 capsule,
# drawn as square, tall rectangle, disc, pill), orientation (linspace(-30, 30, n) degrees: the
# horizon tilts and the object slides sideways, as a camera turning round the room would show).

SHAPES3D_FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
SHAPES3D_SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")


def _validate_shapes3d_sizes(factor_sizes):
  sizes = tuple(factor_sizes)
  if len(sizes) != 6 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
    raise ValueError(f"factor_sizes must be six positive integers {SHAPES3D_FACTOR_NAMES}, got "
                     f"{factor_sizes!r}")
  if sizes[4] > len(SHAPES3D_SHAPE_NAMES):
    raise ValueError(f"factor size of shape must be at most {len(SHAPES3D_SHAPE_NAMES)} "
                     f"{SHAPES3D_SHAPE_NAMES}, got {sizes[4]}")
  return tuple(int(s) for s in sizes)


def shapes3d_factor_values(factor_sizes):
  """The label value of each factor index, per factor (the real file's values on its grid)."""
  n_floor, n_wall, n_object, n_scale, n_shape, n_orient = factor_sizes
  return [np.arange(n_floor) / n_floor, np.arange(n_wall) / n_wall,
          np.arange(n_object) / n_object, np.linspace(0.75, 1.25, n_scale),
          np.arange(n_shape, dtype=np.float64), np.linspace(-30.0, 30.0, n_orient)]


def _hue_colours(hues, saturation, value):
  import colorsys  # pylint: disable=g-import-not-at-top
  return np.array([colorsys.hsv_to_rgb(h, saturation, value) for h in hues]) * 255.0


# Floor, wall and object differ in shade as lit surfaces do, so that equal hues stay apart.
_SHADES = ((0.75, 0.55), (0.6, 0.85), (0.9, 1.0))


def _shapes3d_masks(scales, n_shape, orientations):
  """(floor masks (n_orient, 64, 64), object masks (n_scale, n_shape, n_orient, 64, 64))."""
  y, x = np.mgrid[0:_IMAGE_SIZE, 0:_IMAGE_SIZE] + 0.5
  slope = np.tan(np.radians(orientations))[:, None, None] * 0.5
  floor = y[None] > 34.0 + slope * (x[None] - 32.0)
  # The object's centre moves sideways with the view; its base stays on the floor.
  centre_x = (32.0 - orientations / 30.0 * 12.0)[None, :, None, None]
  half = (scales * 9.0)[:, None, None, None]
  base = 50.0
  dx, dy = x[None, None] - centre_x, y[None, None] - (base - half)
  masks = [
      (np.abs(dx) <= half) & (np.abs(dy) <= half),                        # cube: square
      (np.abs(dx) <= 0.6 * half) & (np.abs(dy) <= half),                  # cylinder: tall box
      dx**2 + dy**2 <= half**2,                                           # sphere: disc
      (np.abs(dx) <= 0.5 * half) & (np.abs(dy) <= 0.5 * half) |            # capsule: pill
      (dx**2 + (np.abs(dy) - 0.5 * half).clip(0)**2 <= (0.5 * half)**2)
      & (np.abs(dy) <= half),
  ][:n_shape]
  return floor, np.stack(masks, axis=1)


def render_shapes3d_chunks(factor_sizes=data.SHAPES3D_FULL_FACTOR_SIZES):
  """Yields (images uint8 (k, 64, 64, 3), labels float64 (k, 6)) in C order over the grid, one
  (floor hue, wall hue) block at a time, so that the full grid never needs to be in memory."""
  sizes = _validate_shapes3d_sizes(factor_sizes)
  values = shapes3d_factor_values(sizes)
  floor_masks, object_masks = _shapes3d_masks(values[3], sizes[4], values[5])
  colours = [_hue_colours(values[i], *_SHADES[i]) for i in range(3)]
  inner = sizes[2:]  # object hue, scale, shape, orientation
  classes = np.indices(inner).reshape(4, -1).T
  for i_floor in range(sizes[0]):
    for i_wall in range(sizes[1]):
      background = np.where(floor_masks[..., None], colours[0][i_floor], colours[1][i_wall])
      images = np.where(object_masks[None, ..., None],
                        colours[2][:, None, None, None, None, None, :],
                        background[None, None, None])
      labels = np.column_stack([np.full(len(classes), values[0][i_floor]),
                                np.full(len(classes), values[1][i_wall])] +
                               [values[2 + j][classes[:, j]] for j in range(4)])
      yield np.rint(images).astype(np.uint8).reshape(-1, _IMAGE_SIZE, _IMAGE_SIZE, 3), labels


def write_synthetic_shapes3d_h5(path, factor_sizes=data.SHAPES3D_FULL_FACTOR_SIZES,
                                overwrite=False):
  """Writes a SYNTHETIC 3DShapes-format h5 (`images` uint8 (N, 64, 64, 3), `labels` (N, 6)) at
  `path`, atomically, block by block. Returns the path."""
  import h5py  # pylint: disable=g-import-not-at-top
  sizes = _validate_shapes3d_sizes(factor_sizes)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  num_images = int(np.prod(sizes))

  # h5py needs a file it can also read back: write to a temporary path, then rename.
  with model_dir.atomic_file(path) as tmp_path:
    with h5py.File(tmp_path, "w") as h5:
      images = h5.create_dataset("images", (num_images, 64, 64, 3), np.uint8,
                                 chunks=(min(num_images, 64), 64, 64, 3))
      labels = h5.create_dataset("labels", (num_images, 6), np.float64)
      start = 0
      for block_images, block_labels in render_shapes3d_chunks(sizes):
        images[start:start + len(block_images)] = block_images
        labels[start:start + len(block_images)] = block_labels
        start += len(block_images)
      h5.attrs["description"] = (
          f"SYNTHETIC data generated by {GENERATOR}, NOT DeepMind's 3dshapes. "
          f"Factor sizes {sizes} for {SHAPES3D_FACTOR_NAMES}.")
  return path

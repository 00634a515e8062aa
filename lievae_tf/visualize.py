"""Pictures of a model while it trains: reconstructions beside their inputs, and latent traversals.

A traversal is the reference code's "LatentWalkLie": one base code (the mean `mu` of a fixed
image), and for each latent a row in which that latent alone is swept over [-limit, limit] while
the others keep the base values; every code is decoded through the group map (the exponential
map), i.e. `sigmoid(decode(expmap(z)))`.

All of it runs eagerly in a Keras callback (`training.callbacks.ImageLogger`) every
`training.image_every` steps, outside the compiled training step, so that the step itself is not
slowed down.
"""

import io

import gin
import numpy as np
import tensorflow as tf

from lievae_tf import random_streams
from lievae_tf.data import ground_truth as data_lib

TRAVERSALS_PNG = "latent_traversals.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"


@gin.configurable("visualize")
def visualize_options(num_reconstructions=8, traversal_limit=4.0, traversal_steps=8):
  """What the pictures show.

  Args:
    num_reconstructions: fixed images shown with their reconstructions (the first is also the
      base of the traversals).
    traversal_limit: each latent is swept over [-traversal_limit, traversal_limit].
    traversal_steps: images per latent in a traversal.
  """
  return dict(num_reconstructions=num_reconstructions, traversal_limit=float(traversal_limit),
              traversal_steps=traversal_steps)


def sample_images(ground_truth_data, seed):
  """A fixed batch of the dataset's images (a random stream of its own), as numpy."""
  count = visualize_options()["num_reconstructions"]
  input_fn = data_lib.make_input_fn(
      ground_truth_data, count, random_streams.batch_seed(seed, random_streams.SAMPLE_IMAGES))
  return next(iter(input_fn())).numpy()


def grid(images, columns, pad=1):
  """(N, H, W, C) in [0, 1] -> one (rows*(H+pad)-pad, columns*(W+pad)-pad, C) image, white gaps."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  out = np.ones([rows * (h + pad) - pad, columns * (w + pad) - pad, c], np.float32)
  for k, image in enumerate(images):
    r, col = divmod(k, columns)
    out[r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = image
  return out


def traversal_codes(base, limit, steps):
  """(D*steps, D) codes: row block i is `base` with latent i set to linspace(-limit, limit)."""
  base = np.asarray(base, np.float32)
  dims = base.shape[-1]
  codes = np.tile(base.reshape(1, dims), [dims * steps, 1])
  sweep = np.linspace(-limit, limit, steps, dtype=np.float32)
  for i in range(dims):
    codes[i * steps:(i + 1) * steps, i] = sweep
  return codes


def traversals(vae, base_image):
  """The traversal grid (one row per latent) around the mean code of `base_image`."""
  options = visualize_options()
  mu, _ = vae.gaussian_encoder(tf.constant(base_image[None], tf.float32))
  codes = traversal_codes(mu.numpy()[0], options["traversal_limit"], options["traversal_steps"])
  decoded = tf.sigmoid(vae.decode_latents(tf.constant(codes))).numpy()
  return grid(decoded, options["traversal_steps"])


def reconstructions(vae, images):
  """Inputs in the top row, their reconstructions (from z = mu) below."""
  recons = tf.sigmoid(vae(tf.constant(images, tf.float32))).numpy()
  return grid(np.concatenate([images, recons]), len(images))


def png(image):
  """A (H, W, C) float image in [0, 1] as PNG bytes (grey for one channel)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
  pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def result_images(vae, ground_truth_data, seed):
  """{file name: PNG bytes} for MODEL_DIR/results: traversals and reconstructions."""
  images = sample_images(ground_truth_data, seed)
  return {TRAVERSALS_PNG: png(traversals(vae, images[0])),
          RECONSTRUCTIONS_PNG: png(reconstructions(vae, images))}

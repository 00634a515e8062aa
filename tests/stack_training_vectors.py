"""Cross-stack training vectors (tests/data/stack_training.npz): N real training steps from fixed
weights and fixed batches, made on the PINNED stack, reproduced by tests/test_stack_training.py.

Made on the pinned stack (Python 3.11, TF 2.15.1) with
    .venv-pinned/bin/python tests/stack_training_vectors.py --out=tests/data/stack_training.npz
(a few seconds). The model is built by the training code (`training.run.build_model` under the
paper's dSprites gin file, made small by `BINDINGS`), with the shipped optimiser (PyTorchAdam,
gin_configs/dsprites.gin) and `LieGroupVAE.expm = 'tf'` (the default), and stepped by Keras' `fit`,
i.e. the model's own `train_step`, one batch a step.

The model has ~760 K weights: a copy after each step would be MBs. So the file holds
  images           the N batches (SYNTHETIC, the suite's tiny dSprites grid), as packed bits;
  init_limits      per variable, the bound of its U(-limit, limit) initial weights, drawn with
                   NumPy's PCG64 from `INIT_SEED` (`initial_weights`): the same numbers on any stack;
  init_check       the sum of |initial weights| per variable, to tell a changed NumPy stream apart;
  index/<k>        the weights of the k-th trainable variable kept: every one for the small ones (biases, heads, the
                   Lie algebra basis), `SAMPLES` fixed ones (uniformly drawn) for the big kernels;
  weights/<k>      (N + 1, kept) those weights before the first step and after each step;
  draws_noise, draws_use_eg_path  each step's reparameterisation noise and path choice.
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

STEPS = 8
BATCH_SIZE = 8
SEED = 0  # model.random_seed: the per-step draws
INIT_SEED = 2026
BATCH_SEED = 7
# The paper's dSprites setting, small; forward_eg_prob 0.5 so that the steps take both paths.
BINDINGS = [
    "LieGroupVAE.subgroup_sizes = [16]", "LieGroupVAE.subspace_sizes = [4]",
    "LieGroupVAE.lie_alg_init_scale = 0.1", "LieGroupVAE.forward_eg_prob = 0.5",
    "LieGroupVAE.expm = 'tf'", f"model.random_seed = {SEED}",
]
KEEP_ALL_UP_TO = 1100  # variables at most this big are kept whole
SAMPLES = 256  # weights kept of each bigger variable
IMAGE_SHAPE = (64, 64, 1)


def build_model():
  """The model and its optimiser as `lievae_train` builds them, under this file's bindings."""
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf import models  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import run  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(SEED)  # as lievae_train seeds it: the same init_limits each time
  gin.clear_config()
  run.parse_gin([os.path.join(REPO, "gin_configs", "dsprites.gin")], BINDINGS)
  try:
    vae = run.build_model(models.LieGroupVAE, list(IMAGE_SHAPE), SEED)
    vae.optimizer.build(vae.trainable_variables)
  finally:
    gin.clear_config()
  return vae


def initial_weights(shapes, limits):
  """U(-limit, limit) weights per variable, from NumPy's PCG64: the same on every stack."""
  rng = np.random.default_rng(INIT_SEED)
  return [(rng.uniform(-1.0, 1.0, size=shape) * limit).astype(np.float32)
          for shape, limit in zip(shapes, limits)]


def batches(steps=STEPS, batch_size=BATCH_SIZE):
  """`steps` batches of the suite's tiny SYNTHETIC dSprites grid (conftest.TINY_GRID)."""
  sys.path.insert(0, HERE)
  import conftest  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  images = synthetic.render_dsprites(conftest.TINY_GRID)[0]
  rows = np.random.default_rng(BATCH_SEED).integers(len(images), size=(steps, batch_size))
  return images[rows][..., None].astype(np.float32)


def train_steps(vae, images, on_step):
  """Keras `fit` over `images` (steps, batch, ...), one batch a step; `on_step(step)` after each
  step (1-based)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top

  class AfterEachStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      on_step(batch + 1)

  dataset = tf.data.Dataset.from_tensor_slices(images)
  vae.fit(dataset, epochs=1, steps_per_epoch=len(images), verbose=0, callbacks=[AfterEachStep()])


def step_draws(vae, steps):
  """Each step's reparameterisation noise and path choice, as the train step draws them."""
  from lievae_tf import random_streams  # pylint: disable=g-import-not-at-top
  from lievae_tf.models import base  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  noise, path = [], []
  for step in range(steps):
    key = random_streams.step_key(vae.seed, step)
    noise.append(base.replica_noise(tf.zeros([BATCH_SIZE] + list(IMAGE_SHAPE)),
                                    vae.num_latents, key)[0].numpy())
    path.append(bool(vae.training_draws(key)["use_eg_path"].numpy()))
  return np.stack(noise), np.array(path)


def kept_indices(sizes):
  rng = np.random.default_rng(INIT_SEED + 1)
  return [np.arange(n) if n <= KEEP_ALL_UP_TO else np.sort(rng.choice(n, SAMPLES, replace=False))
          for n in sizes]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vae = build_model()
  variables = vae.trainable_variables
  # The bound of each initial U(-limit, limit): that of the Keras initialiser's (Glorot's limit,
  # PyTorch's bias bound, the basis' N(0, 0.1) at the same RMS): sqrt(3) x its RMS.
  limits = np.array([np.sqrt(3.0) * np.sqrt(np.mean(np.square(v.numpy()))) for v in variables],
                    np.float32)
  start = initial_weights([v.shape for v in variables], limits)
  for variable, value in zip(variables, start):
    variable.assign(value)
  indices = kept_indices([int(np.prod(v.shape)) for v in variables])
  kept = [[w.reshape(-1)[i] for w, i in zip(start, indices)]]
  images = batches()
  train_steps(vae, images, lambda step: kept.append(
      [v.numpy().reshape(-1)[i] for v, i in zip(variables, indices)]))
  noise, use_eg_path = step_draws(vae, STEPS)
  names = [v.name for v in variables]
  out = dict(images=np.packbits(images.astype(bool)), images_shape=np.array(images.shape),
             names=np.array(names), init_limits=limits,
             init_check=np.array([np.sum(np.abs(w), dtype=np.float64) for w in start]),
             draws_noise=noise, draws_use_eg_path=use_eg_path,
             made_with=np.array(f"python {sys.version.split()[0]}, tensorflow {tf.__version__}"))
  for k, index in enumerate(indices):  # by position: layer names repeat (dense_1 in both nets)
    out[f"index/{k}"] = index.astype(np.int32)
    out[f"weights/{k}"] = np.stack([step[k] for step in kept])
  tmp = args.out + ".tmp.npz"
  np.savez_compressed(tmp, **out)
  os.replace(tmp, args.out)
  print(f"{args.out}: {os.path.getsize(args.out)} bytes, {len(names)} variables, "
        f"{sum(len(i) for i in indices)} weights kept, paths {use_eg_path.tolist()}")


if __name__ == "__main__":
  main()

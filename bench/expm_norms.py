"""The norms of the matrices a trained LieGroupVAE exponentiates, per checkpoint of a run.

  source .venv/bin/activate
  python bench/expm_norms.py --model_dir=runs/dsprites_seed0 --gin_config=gin_configs/dsprites.gin

For each checkpoint in model_dir/tf_checkpoint (oldest first), the exponential map's inputs
sum_j z_j A_j of `--batches` batches drawn as training draws them (z = mu + sigma * noise, the
reparameterised sample of a training step, and z = mu): the largest Frobenius and l1 norms, and
the squarings tf.linalg.expm / lie_group.fixed_expm need there (floor(log2(||.||_1 / 3.93))).
These bound what `LieGroupVAE.expm = 'fixed'` must be exact for (tests/test_fixed_expm.py).
"""

import argparse
import json
import math
import os

import numpy as np

import core


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--gin_config", action="append", default=[])
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args()

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.models import lie_group  # pylint: disable=g-import-not-at-top
  vae, data, *_ = core.build(args.gin_config, args.gin_bindings)
  checkpoint = tf.train.Checkpoint(model=vae)
  state = tf.train.get_checkpoint_state(os.path.join(args.model_dir, "tf_checkpoint"))
  batches = list(data_lib.make_input_fn(data, args.batch_size, seed=1)().take(args.batches))
  rng = np.random.default_rng(0)
  rows = []
  for path in state.all_model_checkpoint_paths:
    checkpoint.restore(path).expect_partial()
    frobenius, l1 = {"sample": 0.0, "mean": 0.0}, {"sample": 0.0, "mean": 0.0}
    for images in batches:
      _, mu, logvar = vae.encode(images)
      noise = rng.normal(size=mu.shape).astype(np.float32)
      for kind, z in (("sample", mu + tf.exp(logvar / 2) * noise), ("mean", mu)):
        for z_i, basis in zip(tf.split(z, vae.exp_map.subspace_sizes, axis=-1), vae.exp_map.bases):
          algebra = lie_group.lie_algebra_element(z_i, basis).numpy().astype(np.float64)
          frobenius[kind] = max(frobenius[kind], float(np.linalg.norm(algebra, axis=(1, 2)).max()))
          l1[kind] = max(l1[kind], float(np.abs(algebra).sum(axis=1).max()))
    squarings = max(0, math.floor(math.log2(max(l1["sample"], 1e-30) / lie_group.PADE7_MAX_NORM)))
    rows.append(dict(checkpoint=os.path.basename(path), max_frobenius=frobenius,
                     max_l1=l1, squarings_needed=squarings,
                     basis_frobenius=[float(np.linalg.norm(b.numpy())) for b in vae.exp_map.bases]))
    print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
  main()

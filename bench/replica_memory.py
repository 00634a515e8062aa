"""Memory one replica needs for a training step of the paper's settings, measured on the CPU.

  python bench/replica_memory.py [--global_batch=256] [--steps=6]

For a global batch B over N replicas (1, 2, 4, 8), each replica steps on B / N images. This builds the
real `LieGroupVAE` of gin_configs/dsprites.gin and shapes3d.gin, runs Keras' training step (the one
`lievae_train` runs) on B / N random images, and reads TensorFlow's own CPU allocator statistics:
  - weights + Adam: the variables (weights, Adam's two moments) that live on every replica;
  - step peak: the most the step allocates on top of them (activations kept for the gradient,
    the gradients, temporaries), the largest over `--steps` steps (the step takes one of two
    reconstruction paths at random, with different memory).
Each measurement runs in a process of its own, whose peak resident memory is printed as a cross-check:
what the allocator does not see (malloc's slack, oneDNN's caches) shows in how it grows with the batch.
It is an estimate of what a GPU replica needs: a GPU adds the CUDA context, cuDNN's workspaces and
its allocator's rounding, and TF reserves most of a GPU's memory unless told otherwise.
Random images: memory depends on the shapes, not the pixels; no dataset is needed.
"""

import argparse
import concurrent.futures
import multiprocessing
import resource

import tensorflow as tf

import core

SETTINGS = {"dsprites": ("dsprites.gin", [64, 64, 1]), "shapes3d": ("shapes3d.gin", [64, 64, 3])}
MIB = 2.0**20


def measure(setting, per_replica_batch, steps):
  """Bytes of (weights + Adam, step peak, process peak RSS) of one replica stepping on
  `per_replica_batch`."""
  gin_file, image_shape = SETTINGS[setting]
  vae = core.build([core.gin_config(gin_file)], image_shape=image_shape).vae
  vae.optimizer.build(vae.trainable_variables)
  state_bytes = sum(v.numpy().nbytes for v in vae.variables + vae.optimizer.variables)
  images = tf.random.stateless_uniform([per_replica_batch] + image_shape, seed=[0, 0])
  iterator = iter(tf.data.Dataset.from_tensors(images).repeat())
  train_function = vae.make_train_function()
  train_function(iterator)  # traces; its one-off allocations are not the step's
  tf.config.experimental.reset_memory_stats("CPU:0")
  before = tf.config.experimental.get_memory_info("CPU:0")["current"]
  for _ in range(steps):
    train_function(iterator)
  peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
  return state_bytes, peak - before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--global_batch", type=int, default=256)
  parser.add_argument("--steps", type=int, default=6)
  args = parser.parse_args()
  print(f"Per replica, global batch {args.global_batch}, float32, TF {tf.__version__} CPU allocator "
        f"(an estimate for a GPU):\n")
  print("| setting | replicas | images per replica | weights + Adam (MiB) | step peak (MiB) | "
        "total (MiB) | process peak RSS (MiB) |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for setting in SETTINGS:
    for replicas in (1, 2, 4, 8):
      per_replica = args.global_batch // replicas
      with concurrent.futures.ProcessPoolExecutor(
          1, mp_context=multiprocessing.get_context("spawn")) as process:
        state, step, rss = process.submit(measure, setting, per_replica, args.steps).result()
      print(f"| {setting} | {replicas} | {per_replica} | {state / MIB:.0f} | {step / MIB:.0f} | "
            f"{(state + step) / MIB:.0f} | {rss / MIB:.0f} |", flush=True)


if __name__ == "__main__":
  main()

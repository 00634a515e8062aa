"""Images/s of the training step: one CPU device versus MirroredStrategy over 2 logical CPUs.

  DISENTANGLEMENT_LIB_DATA=... python bench/strategies.py [batch] [steps] [rounds]

The model of gin_configs/dsprites.gin as lievae_train builds it, in each strategy's scope. Both
runs share the same cores, so this measures the overhead of splitting a step in two (replica
dispatch, gradient all-reduce), not a speed-up. Rounds alternate to even out other load.
"""
import sys
import time

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from lievae_tf import training  # pylint: disable=g-import-not-at-top,wrong-import-position

import core  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  batch, steps, rounds = (int(a) for a in (sys.argv[1:] + ["64", "30", "3"][len(sys.argv[1:]):]))
  runs, first = {}, None
  for name in ("default", "mirrored"):
    built = core.build([core.gin_config("dsprites.gin")], strategy=training.make_strategy(name),
                       image_shape=first and first.image_shape)  # the data are loaded once
    built = built._replace(data=(first or built).data)
    first = first or built
    dataset = core.input_dataset(built, batch)
    built.vae.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)  # tracing
    runs[name] = (built.vae, dataset)
  rates = {name: [] for name in runs}
  for _ in range(rounds):
    for name, (vae, dataset) in runs.items():
      start = time.perf_counter()
      vae.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
      rates[name].append(steps * batch / (time.perf_counter() - start))
  for name, values in rates.items():
    print(f"{name:9s} batch {batch}: median {np.median(values):.0f} img/s "
          f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
  main()

"""Images/s of the training step: one CPU device versus MirroredStrategy over 2 logical CPUs.

  DISENTANGLEMENT_LIB_DATA=... python bench/strategies.py [batch] [steps] [rounds]

Both runs share the same cores, so this measures the overhead of splitting a step in two
(replica dispatch, gradient all-reduce), not a speed-up. Rounds alternate to even out other load.
"""
import sys
import time

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import gin  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=unused-import,g-import-not-at-top,wrong-import-position
from lievae_tf import models, training  # pylint: disable=g-import-not-at-top,wrong-import-position
from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  batch, steps, rounds = (int(a) for a in (sys.argv[1:] + ["64", "30", "3"][len(sys.argv[1:]):]))
  gin.bind_parameter("dataset.name", "dsprites_full")
  data = data_lib.load_ground_truth_data()
  runs = {}
  for name in ("default", "mirrored"):
    strategy = training.make_strategy(name)
    with strategy.scope():
      vae = models.LieGroupVAE(num_channels=1)
      vae.build_variables([64, 64, 1])
      vae.compile(optimizer=training.make_optimizer())
    dataset = strategy.distribute_datasets_from_function(data_lib.make_input_fn(data, batch, 0))
    vae.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)  # tracing
    runs[name] = (vae, dataset)
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

"""The Keras this project is written for: Keras 2, wherever TensorFlow keeps it.

Up to TF 2.15 (the pinned stack) `tf.keras` is Keras 2. From TF 2.16 on (the current stack) it is
Keras 3, whose `train_step`, optimizers, loss scaling and checkpoint layout differ from the code
here; Keras 2 lives on as the `tf_keras` package, which tensorflow-hub's `KerasLayer` also takes
in that case (docs/environment.md says why Keras 2). Use `from lievae_tf.keras2 import keras`.
"""

import tensorflow as tf

if tf.keras.__name__ != "tf_keras" and getattr(tf.keras, "version", lambda: "2")().startswith("3."):
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
else:
  keras = tf.keras

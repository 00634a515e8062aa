"""lievae_tf: the Commutative Lie Group VAE (Zhu, Xu & Tao, ICML 2021) in TF 2 / Keras, for
disentanglement_lib.

Importing the package changes nothing: the disentanglement_lib shims are `lievae_tf.dlib.shims`'s,
applied by our commands and by the environment's `.pth` hook (docs/environment.md).
"""

__version__ = "0.1.0"

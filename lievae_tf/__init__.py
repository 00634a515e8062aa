"""lievae_tf: the Commutative Lie Group VAE (Zhu, Xu & Tao, ICML 2021) in TF 2 / Keras, for
disentanglement_lib.

Importing the package applies the disentanglement_lib compatibility shims (see `compat`); it does
not import TensorFlow, so that the shims can run first.
"""

from lievae_tf import compat

compat.apply()

__version__ = "0.1.0"

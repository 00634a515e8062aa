"""The old name of `lievae_tf.dlib.speedups`, for scripts that import it by this name. Importing
it gives that very module, not a copy."""

import sys

from lievae_tf.dlib import speedups

sys.modules[__name__] = speedups

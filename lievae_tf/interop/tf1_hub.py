"""The old name of `lievae_tf.dlib.tf1_hub`, for scripts that import it by this name. Importing
it gives that very module, not a copy."""

import sys

from lievae_tf.dlib import tf1_hub

sys.modules[__name__] = tf1_hub

"""The old name of `lievae_tf.dlib.frozen_scoring`, for scripts that import it by this name.
Importing it gives that very module, not a copy."""

import sys

from lievae_tf.dlib import frozen_scoring

sys.modules[__name__] = frozen_scoring

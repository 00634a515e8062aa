"""The old name of `lievae_tf.dlib.shims`: the `.pth` files of earlier installs say
`import lievae_tf.compat as _c; _c.apply()`, and scripts may import it. Importing this name gives
that very module (one module, one `apply()` state), not a copy."""

import sys

from lievae_tf.dlib import shims

sys.modules[__name__] = shims

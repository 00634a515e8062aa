"""The models `lievae_train` trains: every module of this package is imported with it, so that
each model class registers its gin configurable (`@LieGroupVAE`, `@BetaVAE`, ...) with no edit
elsewhere. The shared interface is `base.GaussianEncoderVAE` (see docs/extending.md)."""

import importlib
import pkgutil

from lievae_tf.models.base import GaussianEncoderVAE
from lievae_tf.models.beta_vae import BetaVAE
from lievae_tf.models.lie_vae import LieGroupVAE

__all__ = ["GaussianEncoderVAE", "BetaVAE", "LieGroupVAE"]

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

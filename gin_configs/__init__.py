"""The shipped gin configs, as the package `lievae_tf.gin_configs` of an installed lievae_tf.

setup.py maps this directory into the package (in a wheel and in an editable install alike), so
the files stay here, where docs, tests and `include` lines name them by path, and an installed
lievae_tf finds them through importlib.resources, with no repository around it. A bare name
such as `--gin_config=dsprites.gin` resolves here when no such file is in the working directory.
"""

import importlib.resources
import os


def directory():
  """Where the shipped configs are. An installed package is a directory on disk (pip never
  installs one zipped), so gin reads them there, and their `include` lines resolve beside them."""
  return os.fspath(importlib.resources.files(__name__))


def names():
  """The shipped configs' file names, e.g. ['beta_vae_dsprites.gin', ...]."""
  return sorted(f for f in os.listdir(directory()) if f.endswith(".gin"))


def path(name):
  """The path of the shipped config `name` (e.g. 'dsprites.gin')."""
  if name not in names():
    from lievae_tf.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f"{name} is no shipped gin config; they are {', '.join(names())}.")
  return os.path.join(directory(), name)


def resolve(config):
  """`--gin_config`'s value as a file: itself if it exists, else a shipped config of that bare name
  (so `dsprites.gin` works outside a checkout); otherwise as given, for the caller's error."""
  if os.path.isfile(config) or os.path.dirname(config) or config not in names():
    return config
  return path(config)

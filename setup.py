"""What goes into lievae_tf's wheel, and from where; the metadata is pyproject.toml's.

Code, not pyproject.toml tables, for three things: the packages are found (a new subpackage
needs no entry here), plus `lievae_tf.gin_configs` mapped from the repository's `gin_configs/`
(the files stay where docs, tests and `include` lines name them); the commands are bin/'s
scripts (as disentanglement_lib's own `dlib_*`; docs/install.md); and the `.pth` hook goes to
the top of the wheel, i.e. into site-packages (BuildPyWithSiteHook).
"""

import glob
import os

import setuptools
from setuptools.command import build_py

SITE_HOOK = "lievae_tf_dlib_compat.pth"  # lievae_tf.dlib.shims.PTH_NAME, a file of the package


class BuildPyWithSiteHook(build_py.build_py):
  """Also puts lievae_tf/lievae_tf_dlib_compat.pth at the top of the build, which a wheel installs
  into site-packages: `site` then runs it at every start-up of the environment, so the stock
  dlib_* commands get lievae_tf.dlib.shims' shims with no step after `pip install`, and
  `pip uninstall` removes it. An editable install (scripts/setup_env.sh) has no such top level;
  there `lievae_tf.dlib.shims.install_site_hook()` writes the same file."""

  def run(self):
    super().run()
    if not self.editable_mode:
      self.copy_file(os.path.join("lievae_tf", SITE_HOOK), os.path.join(self.build_lib, SITE_HOOK))

  def get_outputs(self, include_bytecode=True):
    outputs = super().get_outputs(include_bytecode)
    if not self.editable_mode:
      outputs.append(os.path.join(self.build_lib, SITE_HOOK))
    return outputs


setuptools.setup(
    packages=setuptools.find_packages(include=["lievae_tf", "lievae_tf.*"]) +
    ["lievae_tf.gin_configs"],
    package_dir={"lievae_tf.gin_configs": "gin_configs"},
    package_data={
        "lievae_tf": [SITE_HOOK, "evaluation/metric_configs/*.gin"],  # ours, for dlib_evaluate
        "lievae_tf.gin_configs": ["*.gin"],
    },
    # Thin absl binaries, as disentanglement_lib's bin/ (docs/install.md: why not entry points).
    scripts=sorted(glob.glob("bin/lievae_*")),
    cmdclass={"build_py": BuildPyWithSiteHook},
)

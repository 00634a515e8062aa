"""Installs lievae_tf. See README.md: `bash scripts/setup_env.sh` does the whole set-up."""

import glob
import os

import setuptools

_HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements(name):
  """The requirement lines of `name`, without comments and `-r` includes."""
  with open(os.path.join(_HERE, name)) as f:
    lines = (line.split("#")[0].strip() for line in f)
    return [line for line in lines if line and not line.startswith("-")]


setuptools.setup(
    name="lievae_tf",
    version="0.1.0",
    description=("Commutative Lie Group VAE (Zhu, Xu & Tao, ICML 2021) in TensorFlow 2 / Keras, "
                 "exported for disentanglement_lib"),
    packages=setuptools.find_packages(include=["lievae_tf", "lievae_tf.*"]),
    package_data={"lievae_tf": ["evaluation/metric_configs/*.gin"]},  # our metrics, for dlib_evaluate
    # Thin absl binaries as in disentanglement_lib's bin/.
    scripts=sorted(glob.glob("bin/lievae_*")),
    python_requires=">=3.9,<3.12",
    # disentanglement-lib 1.5 itself is installed with --no-deps (requirements-dlib.txt): its
    # metadata pins tensorflow_probability==0.7, which does not import on TF 2.15.
    # Everything but TensorFlow, whose CPU and GPU builds are different distributions that must not
    # share an environment: pick one with the extra `cpu` or `gpu` (scripts/setup_env.sh does).
    install_requires=_requirements("requirements-common.txt"),
    # torch (CPU build) only for importing the paper's PyTorch checkpoints and the parity tests:
    # `pip install -e ".[torch]"`. Pinned: an unpinned torch pulls a CUDA build of several GB.
    extras_require={"test": ["pytest==8.4.2", "pytest-xdist==3.8.0"], "torch": ["torch==2.13.0"],
                    "cpu": _requirements("requirements.txt"),
                    "gpu": _requirements("requirements-gpu.txt")},
)

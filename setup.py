"""Installs lievae_tf. See README.md: `bash scripts/setup_env.sh` does the whole set-up."""

import glob

import setuptools

# What lievae_tf imports, in ranges both supported stacks satisfy. The exact, tested sets (and
# TensorFlow itself, whose CPU and GPU builds are different distributions) are the stacks'
# requirement files, which scripts/setup_env.sh installs first (docs/environment.md).
# tensorflow-hub is there too: hub 0.16 requires tf-keras, which requires the `tensorflow`
# distribution, so naming it here would add TF's CUDA wheel beside the current stack's tensorflow-cpu.
_INSTALL_REQUIRES = [
    "gin-config>=0.4,<0.6",
    "numpy>=1.26",
    "wrapt>=1.14",
    "absl-py",
    "tqdm",
    "h5py",
    "scikit-learn",
    "scipy",
    "pandas",
    "simplejson",
    "six",
    "matplotlib",
    "seaborn",
    "pillow",
    "imageio",
    "submitit>=1.5,<2",  # lievae_sweep --launcher=slurm
]


setuptools.setup(
    name="lievae_tf",
    version="0.1.0",
    description=("Commutative Lie Group VAE (Zhu, Xu & Tao, ICML 2021) in TensorFlow 2 / Keras, "
                 "exported for disentanglement_lib"),
    packages=setuptools.find_packages(include=["lievae_tf", "lievae_tf.*"]),
    package_data={"lievae_tf": ["evaluation/metric_configs/*.gin"]},  # our metrics, for dlib_evaluate
    # Thin absl binaries as in disentanglement_lib's bin/.
    scripts=sorted(glob.glob("bin/lievae_*")),
    # 3.9-3.11: the pinned stack (TF 2.15); 3.10-3.13: the current stack (TF 2.21).
    python_requires=">=3.9,<3.14",
    # disentanglement-lib 1.5 itself is installed with --no-deps (requirements-dlib.txt): its
    # metadata pins tensorflow_probability==0.7, which imports on neither stack's TF.
    install_requires=_INSTALL_REQUIRES,
    # torch (CPU build) only for importing the paper's PyTorch checkpoints and the parity tests:
    # `pip install -e ".[torch]"`. Pinned: an unpinned torch pulls a CUDA build of several GB.
    extras_require={"test": ["pytest==8.4.2", "pytest-xdist==3.8.0"], "torch": ["torch==2.13.0"]},
)

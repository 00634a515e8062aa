"""The fixed SYNTHETIC inputs behind tests/data/paper_*.{npz,json}: ground-truth factors in
dlib's order and representations that are exact functions of them.

Numpy only: tests/data/make_paper_vectors.py imports it in an environment that runs the paper
code (torch, no disentanglement_lib), and tests/test_paper_metrics.py imports it to replay the
very same factors through our functions and dlib's.
"""

import numpy as np

DSPRITES_SIZES = (3, 6, 40, 32, 32)  # shape, scale, orientation, posX, posY
SHAPES3D_SIZES = (10, 10, 10, 8, 4, 15)  # floor, wall and object hue, scale, shape, orientation
NUM_CODES = 10


def _hash_noise(factors, salt):
  """Uniform noise in [-0.5, 0.5) per (point, code) from integer arithmetic alone, so that it is
  the same number in every environment (a pure function of the factor tuple)."""
  h = np.asarray(factors, np.int64) @ salt[:-1] + salt[-1]
  h = (h * 2654435761) % 2**32
  h = ((h ^ (h >> 13)) * 1274126177) % 2**32
  return h / 2.0**32 - 0.5


def representation(factors, params):
  """Codes (num_points, NUM_CODES) for factor classes (num_points, num_factors).

  Rounded to float16 values (held in float64) so that the stored codes are exact in 2 bytes."""
  sizes = np.asarray(params["sizes"], np.float64)
  unit = np.asarray(factors, np.float64) / np.maximum(sizes - 1, 1)
  codes = unit @ params["weights"] + _hash_noise(factors, params["salt"]) * params["noise_scale"]
  return codes.astype(np.float16).astype(np.float64)


def make_params(sizes, kind, seed):
  """Representation parameters of one case.

  kinds: 'random' (codes are noise), 'copies' (code k is a noisy, scaled copy of factor k; the
  codes beyond the factors are noise, among them one with a standard deviation between 0.05 and
  0.1 and one below 0.05, so that the two FactorVAE pruning thresholds differ), 'noisy_copies'
  (the same with noise as large as the signal, so that votes and classifiers err), 'constant'
  (copies with the last code constant), 'first_only' (only the first factor, which the paper's
  MIG and factor leakage drop, is encoded)."""
  rs = np.random.RandomState(seed)
  num_factors = len(sizes)
  weights = np.zeros((num_factors, NUM_CODES))
  noise_scale = np.ones(NUM_CODES)
  if kind in ("copies", "noisy_copies", "constant"):
    for k in range(num_factors):
      weights[k, k] = (1.0 + 0.5 * k) * (-1) ** k
      noise_scale[k] = (1.0 + 0.5 * k) if kind == "noisy_copies" else 0.05 + 0.05 * k
    noise_scale[NUM_CODES - 2] = 0.1   # std 0.029: pruned by both thresholds
    noise_scale[NUM_CODES - 1] = 0.25  # std 0.072: pruned by 0.1, kept by 0.05
    if kind == "constant":
      noise_scale[NUM_CODES - 1] = 0.0
  elif kind == "first_only":
    weights[0, 0] = 1.0
    noise_scale[0] = 0.02
  elif kind != "random":
    raise ValueError(kind)
  salt = rs.randint(1, 2**20, size=(num_factors + 1, NUM_CODES)).astype(np.int64)
  return {"sizes": np.asarray(sizes, np.int64), "weights": weights,
          "noise_scale": noise_scale, "salt": salt}


def sample_factors(sizes, num_points, seed):
  """Factor classes (num_points, num_factors), uniform per factor, as uint8."""
  rs = np.random.RandomState(seed)
  return np.stack([rs.randint(size, size=num_points) for size in sizes], axis=1).astype(np.uint8)


# Arrays for the pure MIG / factor leakage cores: (name, sizes, kind, seed), 1,000 points each.
ARRAY_CASES = (
    ("dsprites_random", DSPRITES_SIZES, "random", 1),
    ("dsprites_copies", DSPRITES_SIZES, "copies", 2),
    ("dsprites_constant_code", DSPRITES_SIZES, "constant", 3),
    ("dsprites_first_factor_only", DSPRITES_SIZES, "first_only", 4),
    ("shapes3d_copies", SHAPES3D_SIZES, "copies", 5),
    ("shapes3d_random", SHAPES3D_SIZES, "random", 6),
)
ARRAY_POINTS = 1000

# Sampled metrics, replayed: every metric draws its factor rows in order from one stored queue.
REPLAY_CASES = (
    ("dsprites_noisy_copies", DSPRITES_SIZES, "noisy_copies", 11),
    ("shapes3d_noisy_copies", SHAPES3D_SIZES, "noisy_copies", 12),
)
# Smaller than the paper's sizes to keep the files small; the sizes the paper uses are checked
# separately (protocol.json).
REPLAY_SIZES = {
    "factor_vae": {"num_variance_estimate": 500, "num_train": 150, "num_eval": 100,
                   "batch_size": 16},
    "beta_vae": {"num_train": 200, "num_eval": 200, "batch_size": 5},
    "sap": {"num_train": 500, "num_test": 500},
    "dci": {"num_train": 300, "num_test": 300},
    "modularity": {"num_train": 500, "num_test": 500},
    "unsupervised": {"num_train": 500},
}
REPLAY_SEED = 7  # the global numpy seed (paper) = dlib's random_state seed (votes, GBT)


def replay_rows_needed():
  s = REPLAY_SIZES
  return max(s["factor_vae"]["num_variance_estimate"]
             + (s["factor_vae"]["num_train"] + s["factor_vae"]["num_eval"])
             * s["factor_vae"]["batch_size"],
             (s["beta_vae"]["num_train"] + s["beta_vae"]["num_eval"])
             * 2 * s["beta_vae"]["batch_size"],
             s["sap"]["num_train"] + s["sap"]["num_test"],
             s["dci"]["num_train"] + s["dci"]["num_test"],
             s["modularity"]["num_train"] + s["modularity"]["num_test"])

"""MIG of one trained model under both protocols, split into the protocol's two differences.

On one sample of 10,000 points of the model's mean representation (dlib's sampling, seed 0):
dlib's MIG (every factor) and the paper code's (first factor left out), on all 10,000 points and
on the first 1,000; then the paper's MIG over 10 disjoint 1,000-point samples (its sampling
spread). The dataset is dlib's `--dataset` (default dsprites_full), its files under
$DISENTANGLEMENT_LIB_DATA.

  source .venv/bin/activate
  python bench/protocol_gap.py --model_dir=DIR    # after lievae_evaluate --model_dir=DIR
"""

import argparse
import os

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--dataset", default="dsprites_full", help="dlib's dataset name.")
  args = parser.parse_args()
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.evaluation.metrics import mig, utils  # pylint: disable=g-import-not-at-top
  from lievae_tf.evaluation import paper_metrics  # pylint: disable=g-import-not-at-top
  gin.parse_config(["discretizer.discretizer_fn = @histogram_discretizer",
                    "discretizer.num_bins = 20"])  # dlib's mig.gin
  data = named_data.get_named_ground_truth_data(args.dataset)
  module = os.path.join(args.model_dir, "postprocessed", "mean", "tfhub")
  with hub.eval_function_for_module(module) as f:
    representation = lambda x: np.array(
        f(dict(images=x), signature="representation", as_dict=True)["default"])
    mus, factors = utils.generate_batch_factor_code(data, representation, 10000,
                                                    np.random.RandomState(0), 64)
  for n in (10000, 1000):
    every = mig._compute_mig(mus[:, :n], factors[:, :n])["discrete_mig"]  # pylint: disable=protected-access
    paper = paper_metrics.mig(mus[:, :n], factors[:, :n])["discrete_mig"]
    print(f"{n:>6} points: every factor (dlib) {every:.4f}   first left out (paper) {paper:.4f}")
  samples = [paper_metrics.mig(mus[:, k * 1000:(k + 1) * 1000],
                               factors[:, k * 1000:(k + 1) * 1000])["discrete_mig"]
             for k in range(10)]
  print(f"paper MIG over 10 disjoint 1,000-point samples: mean {np.mean(samples):.4f}, "
        f"std {np.std(samples, ddof=1):.4f}, range {min(samples):.4f} to {max(samples):.4f}")


if __name__ == "__main__":
  main()

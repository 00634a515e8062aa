"""The cross-stack test vectors (tests/data/stack_vectors/): what they hold and how they are computed.

`python tests/stack_vectors.py --out=tests/data/stack_vectors`, run on the PINNED stack (Python 3.11,
TF 2.15.1, tensorflow-hub 0.15), trains a small model of the paper's dSprites setting on the test
suite's SYNTHETIC dSprites grid with the real `lievae_train`, and records:
  model/            its model_dir's `tfhub/` and `results/` (what dlib's steps read);
  outputs.npz       fixed images and latents, and the module's outputs on them (every signature),
                    and the `representation` of the module the stock `dlib_postprocess` writes
                    (tensorflow-hub 0.15's own export there);
  scores.json       MIG, FactorVAE, DCI and paper_mig by the stock `dlib_evaluate` (NumPy's global
                    random state seeded as lievae_evaluate seeds it), and the command line.
tests/test_stack_parity.py computes the same on whatever stack runs the suite and compares.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)

# The training run: the paper's dSprites gin file, made small (subgroup 16, 4 latents), trained
# long enough on the tiny grid that every score is well above chance (as generated: MIG 0.26,
# FactorVAE 0.64, DCI 0.29; 20 steps gave DCI 0.02): 2,000 steps at batch 32 and learning rate
# 5e-4, ~3 minutes of a CPU (run it under `flock /tmp/lievae_heavy.lock` on a shared machine).
TRAIN_BINDINGS = [
    "model.training_steps = 2000", "model.batch_size = 32", "model.eval_steps = 2",
    "optimizer.learning_rate = 5e-4", "training.log_every = 100", "training.image_every = 0",
    "LieGroupVAE.subgroup_sizes = [16]", "LieGroupVAE.subspace_sizes = [4]",
    "LieGroupVAE.lie_alg_init_scale = 0.1",
]
# Scores at sizes a CPU computes in seconds; seeded, so each is a deterministic function of the module.
SCORES = {
    "mig": ("dlib", "mig.gin", "discrete_mig", ["mig.num_train = 1000"]),
    "factor_vae": ("dlib", "factor_vae_metric.gin", "eval_accuracy",
                   ["factor_vae_score.num_variance_estimate = 1000",
                    "factor_vae_score.num_train = 300", "factor_vae_score.num_eval = 200",
                    # Keep every code: a short run's codes all vary less than dlib's 0.05, and a
                    # score of 0 (all pruned) would compare nothing.
                    "prune_dims.threshold = 0.0"]),
    "dci": ("dlib", "dci.gin", "disentanglement", ["dci.num_train = 500", "dci.num_test = 300"]),
    "paper_mig": ("own", "paper_mig.gin", "discrete_mig", []),
}


def images_and_latents():
  rng = np.random.default_rng(2026)
  images = (rng.uniform(size=(16, 64, 64, 1)) < 0.1).astype(np.float32)
  latents = rng.normal(size=(16, 4)).astype(np.float32)
  return images, latents


def module_outputs(module_path, images, latents):
  """{signature/output: array} of every signature of the module at `module_path`."""
  from lievae_tf.dlib import tf1_hub  # pylint: disable=g-import-not-at-top
  inputs = {"images": images, "latent_vectors": latents}
  found = {}
  with tf1_hub.eval_function_for_module(module_path) as evaluate:
    for signature in tf1_hub.load_module_spec(module_path).get_signature_names():
      if signature == "reconstructions":
        continue  # it samples: not a function of its input alone
      names = tf1_hub.load_module_spec(module_path).get_input_info_dict(signature)
      out = evaluate({n: inputs[n] for n in names}, signature=signature, as_dict=True)
      found.update({f"{signature}/{k}": np.asarray(v) for k, v in out.items()})
  return found


def run(command, env):
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
  if result.returncode != 0:
    raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-3000:]}")


def postprocess(model_dir, output_dir, env):
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  config = os.path.join(registry.dlib_config_dir(), "postprocess_configs", "mean.gin")
  run([os.path.join(BIN, "dlib_postprocess"), f"--model_dir={model_dir}",
       f"--output_dir={output_dir}", f"--gin_config={config}"], env)


def score(representation_dir, work_dir, env):
  """{metric: score} of the stock dlib_evaluate, seeded as lievae_evaluate seeds it."""
  from lievae_tf.evaluation import registry, suite  # pylint: disable=g-import-not-at-top
  scores = {}
  for name, (where, config, key, bindings) in SCORES.items():
    config = os.path.join(registry.dlib_config_dir(), "metric_configs", config) \
        if where == "dlib" else os.path.join(registry.OWN_CONFIG_DIR, config)
    output_dir = os.path.join(work_dir, name)
    command = [os.path.join(BIN, "dlib_evaluate"), f"--input_dir={representation_dir}",
               f"--output_dir={output_dir}", f"--gin_config={config}",
               f"--gin_bindings=evaluation.name = '{name}'"] + [
                   f"--gin_bindings={b}" for b in bindings]
    run(suite.seeded_stock_command(command, config), env)
    with open(os.path.join(output_dir, "results", "json", "evaluation_results.json")) as f:
      scores[name] = json.load(f)[key]
  return scores


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  sys.path.insert(0, HERE)
  import conftest  # pylint: disable=g-import-not-at-top (sets DISENTANGLEMENT_LIB_DATA to the synthetic grid)
  env = dict(os.environ)
  work = tempfile.mkdtemp(prefix="stack_vectors_")
  try:
    model_dir = os.path.join(work, "model")
    run([os.path.join(BIN, "lievae_train"), f"--model_dir={model_dir}",
         f"--gin_config={os.path.join(conftest.GIN_CONFIGS, 'dsprites.gin')}"] +
        [f"--gin_bindings={b}" for b in TRAIN_BINDINGS], env)
    postprocessed = os.path.join(work, "postprocessed", "mean")
    postprocess(model_dir, postprocessed, env)
    images, latents = images_and_latents()
    outputs = module_outputs(os.path.join(model_dir, "tfhub"), images, latents)
    outputs.update({f"postprocessed/{k}": v for k, v in module_outputs(
        os.path.join(postprocessed, "tfhub"), images, latents).items()})
    scores = score(postprocessed, os.path.join(work, "metrics"), env)
    if os.path.exists(args.out):
      shutil.rmtree(args.out)
    os.makedirs(args.out)
    for part in ("tfhub", "results"):
      shutil.copytree(os.path.join(model_dir, part), os.path.join(args.out, "model", part))
    np.savez_compressed(os.path.join(args.out, "outputs.npz"), images=images, latents=latents,
                        **outputs)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with open(os.path.join(args.out, "scores.json"), "w") as f:
      json.dump({"scores": scores, "made_with": {
          "python": sys.version.split()[0], "tensorflow": tf.__version__,
          "command": "python tests/stack_vectors.py --out=tests/data/stack_vectors",
          "train_bindings": TRAIN_BINDINGS}}, f, indent=2)
    print(json.dumps(scores, indent=2))
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()

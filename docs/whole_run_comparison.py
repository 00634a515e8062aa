"""The whole-run comparison of docs/whole_run_comparison.md: this port vs the paper's step in PyTorch.

For each seed, both sides start from the SAME weights (a PyTorch model initialised as the paper
code's LieCeleb, imported into Keras with `lievae_import_torch`'s mapping), see the SAME batches
(`training.batch_order = 'epochs'`, as `lievae_train` draws them) and the SAME per-step draws
(the Keras model's reparameterisation noise and gE/gG path choice, handed to PyTorch), and take
their own steps for `--steps` steps:
  - the port: `LieGroupVAE.train_step` (Keras), Adam with `epsilon_placement = 'pytorch'`;
  - PyTorch: `tests/torch_reference.py`'s `PaperTrainStep`, the paper code's step (torch.optim.Adam).
Recorded: every loss term of both at every step (the step's loss, before its update), and every
`--every` steps the relative L2 distance of the weights. At the end both models are exported
and scored by the stock `dlib_postprocess` / `dlib_evaluate` (`--metrics`).

Run from the repository root inside .venv (see docs/whole_run_comparison.md for the command);
writes `--output_dir`/{summary.json, seed_<s>.csv, whole_run_comparison.png} and model_dirs under
`--work_dir`. Needs torch (`pip install -e ".[torch]"`).
"""

import argparse
import csv
import json
import os
import shutil
import sys
import time

import numpy as np

TERMS = ("loss", "recon_loss", "total_kl", "gfeat_rec_loss", "hessian_loss", "group_loss")


def parse_flags():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="DISENTANGLEMENT_LIB_DATA (synthetic)")
  parser.add_argument("--output_dir", default="docs/whole_run_comparison")
  parser.add_argument("--work_dir", default="runs/whole_run_comparison")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--every", type=int, default=50)
  parser.add_argument("--epsilon_placement", default="pytorch", choices=["pytorch", "keras"],
                      help="the port's Adam ('keras': the control run without PyTorch's placement)")
  parser.add_argument("--combine_only", action="store_true",
                      help="only write summary.json and the plot from the seeds' files")
  parser.add_argument("--metrics", default="mig,factor_vae",
                      help="registry metric names, scored with their small_bindings")
  return parser.parse_args()


def relative_gap(ours, theirs):
  return abs(ours - theirs) / max(abs(theirs), 1e-30)


def weight_gap(vae, torch_model, config, torch_import):
  """(relative L2 distance of all weights, largest per-tensor relative L2 distance, its tensor)."""
  state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  squared, total, worst, worst_name = 0.0, 0.0, 0.0, None
  for variable, value in torch_import.converted_weights(vae, state, config):
    difference = np.linalg.norm(variable.numpy() - value)
    squared += difference**2
    total += np.linalg.norm(value)**2
    if difference / max(np.linalg.norm(value), 1e-30) > worst:
      worst, worst_name = difference / max(np.linalg.norm(value), 1e-30), variable.name
  return float(np.sqrt(squared / total)), float(worst), worst_name


def run_seed(seed, flags, ground_truth_data):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from lievae_tf import random_streams  # pylint: disable=g-import-not-at-top
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.interop import torch_import  # pylint: disable=g-import-not-at-top
  # The PyTorch reference lives with the tests, beside this directory.
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "tests"))
  import torch_reference  # pylint: disable=g-import-not-at-top
  from lievae_tf.models import base  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import options  # pylint: disable=g-import-not-at-top

  work = os.path.join(flags.work_dir, f"seed_{seed}")
  shutil.rmtree(work, ignore_errors=True)
  torch.manual_seed(seed)
  torch_model = torch_reference.LieGroupVAE([100], [10], nc=1, recons_loss_type="bce")
  initial = torch_reference.save_checkpoint(torch_model, os.path.join(work, "initial"),
                                            "dsprites")
  vae, config = torch_import.load_checkpoint(initial)
  config = {k: v for k, v in config.items() if k not in ("dataset_name", "paper_args")}
  vae.seed = seed  # the per-step draws' seed, as model.random_seed sets it
  vae.compile(optimizer=options.make_optimizer(epsilon_placement=flags.epsilon_placement))
  paper_step = torch_reference.PaperTrainStep(torch_model)

  batches = iter(data_lib.make_input_fn(
      ground_truth_data, flags.batch_size,
      random_streams.batch_seed(seed, random_streams.TRAINING_BATCHES), order="epochs")())

  @tf.function
  def keras_step(images):
    return vae.train_step(images)

  @tf.function
  def draws(images, step):
    key = random_streams.step_key(seed, step)
    noise, _ = base.replica_noise(images, vae.num_latents, key)
    return noise, vae.training_draws(key)["use_eg_path"]

  rows, max_gaps = [], {t: (0.0, 0) for t in TERMS}
  started = time.time()
  csv_file = open(os.path.join(flags.output_dir, f"seed_{seed}.csv"), "w", newline="")  # pylint: disable=consider-using-with
  writer = None
  for step in range(flags.steps):
    images = next(batches)
    noise, use_eg_path = draws(images, tf.constant(step, tf.int64))
    for tracker in vae.metrics:
      tracker.reset_state()  # the trackers' result is then this step's terms
    ours = {k: float(v) for k, v in keras_step(images).items()}
    theirs = paper_step(torch.from_numpy(images.numpy().transpose(0, 3, 1, 2)),
                        noise=torch.from_numpy(noise.numpy()),
                        use_eg_path=bool(use_eg_path.numpy()))
    theirs = {k: float(theirs[k]) for k in TERMS}
    for term in TERMS:
      gap = relative_gap(ours[term], theirs[term])
      if gap > max_gaps[term][0]:
        max_gaps[term] = (gap, step)
    if step % flags.every == 0 or step == flags.steps - 1:
      # The weights the step was taken from are gone; these are after it (step + 1 updates).
      weights, worst_tensor, worst_name = weight_gap(vae, torch_model, config, torch_import)
      row = dict(step=step, use_eg_path=int(use_eg_path.numpy()), weight_gap=weights,
                 worst_tensor_gap=worst_tensor, worst_tensor=worst_name)
      for term in TERMS:
        row.update({f"port_{term}": ours[term], f"paper_{term}": theirs[term],
                    f"gap_{term}": relative_gap(ours[term], theirs[term])})
      rows.append(row)
      if writer is None:
        writer = csv.DictWriter(csv_file, fieldnames=list(row))
        writer.writeheader()
      writer.writerow(row)
      csv_file.flush()  # a stopped run keeps its curves so far
      print(f"seed {seed} step {step}: loss {ours['loss']:.3f} vs {theirs['loss']:.3f}, "
            f"weight gap {weights:.2e} ({time.time() - started:.0f} s)", flush=True)

  csv_file.close()
  # Both trained models as model_dirs that the stock dlib commands score.
  trained = [v.numpy() for v in vae.weights]
  port_dir = os.path.join(work, "port")
  torch_import.write_model_dir(
      config, "dsprites_full", port_dir,
      lambda new: [v.assign(w) for v, w in zip(new.weights, trained)],
      dict(study="whole_run_comparison", side="port", seed=seed))
  final = torch_reference.save_checkpoint(torch_model, os.path.join(work, "final"), "dsprites")
  paper_dir = os.path.join(work, "paper_step")
  torch_import.import_checkpoint(final, paper_dir)
  return rows, max_gaps, {"port": port_dir, "paper_step": paper_dir}


def score(model_dir, metric_names, data_dir):
  from lievae_tf import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.evaluation import registry  # pylint: disable=g-import-not-at-top
  from lievae_tf.pipeline import scoring  # pylint: disable=g-import-not-at-top
  metrics = registry.lookup(metric_names)
  scoring.score_model(model_dir, [registry.BoundMetric(m, m.small_bindings) for m in metrics],
                      env=dict(os.environ, DISENTANGLEMENT_LIB_DATA=data_dir))
  scores = {}
  for metric in metrics:
    path = model_dir_lib.finished_marker(scoring.metric_dir(model_dir, metric), "evaluation")
    with open(path) as f:
      results = json.load(f)
    scores[metric.name] = results[f"evaluation_results.{metric.score_key}"]
  return scores


def plot(all_rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(2, 3, figsize=(15, 8))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for panel, term in zip(axes[0], ("recon_loss", "total_kl", "gfeat_rec_loss")):
    for k, (seed, rows) in enumerate(sorted(all_rows.items())):
      steps = [r["step"] for r in rows]
      panel.plot(steps, [r[f"port_{term}"] for r in rows], color=colours[k],
                 label=f"seed {seed}: port (Keras)")
      panel.plot(steps, [r[f"paper_{term}"] for r in rows], color=colours[k], linestyle="--",
                 label=f"seed {seed}: paper step (PyTorch)")
    panel.set_title(term)
    panel.set_xlabel("step")
  axes[0][0].legend(fontsize=7)
  for panel, term in zip(axes[1][:2], ("loss", "total_kl")):
    for k, (seed, rows) in enumerate(sorted(all_rows.items())):
      panel.semilogy([r["step"] for r in rows], [max(r[f"gap_{term}"], 1e-10) for r in rows],
                     color=colours[k], label=f"seed {seed}")
    panel.set_title(f"relative gap of {term}, |port - paper| / |paper|")
    panel.set_xlabel("step")
    panel.legend(fontsize=7)
  for k, (seed, rows) in enumerate(sorted(all_rows.items())):
    axes[1][2].semilogy([r["step"] for r in rows], [r["weight_gap"] for r in rows],
                        color=colours[k], label=f"seed {seed}: all weights")
    axes[1][2].semilogy([r["step"] for r in rows], [r["worst_tensor_gap"] for r in rows],
                        color=colours[k], linestyle=":", label=f"seed {seed}: worst tensor")
  axes[1][2].set_title("relative L2 distance of the weights")
  axes[1][2].set_xlabel("step")
  axes[1][2].legend(fontsize=7)
  figure.suptitle("Port vs the paper's step in PyTorch: same start, batches and draws "
                  "(SYNTHETIC dSprites-format data)")
  figure.tight_layout()
  figure.savefig(path, dpi=80)


def combine(output_dir):
  """summary.json and the plot from every seed_<s>.csv / summary_seed_<s>.json in output_dir (the
  seeds may have run in separate processes)."""
  import glob  # pylint: disable=g-import-not-at-top
  summary, all_rows = None, {}
  for path in sorted(glob.glob(os.path.join(output_dir, "summary_seed_*.json"))):
    with open(path) as f:
      part = json.load(f)
    summary = summary or {k: v for k, v in part.items() if k not in ("seeds", "steps")}
    summary.setdefault("seeds", {}).update(
        {seed: dict(entry, steps=part["steps"]) for seed, entry in part["seeds"].items()})
  for seed in summary["seeds"]:
    with open(os.path.join(output_dir, f"seed_{seed}.csv")) as f:
      all_rows[int(seed)] = [{k: (v if k == "worst_tensor" else float(v)) for k, v in row.items()}
                             for row in csv.DictReader(f)]
  with open(os.path.join(output_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  plot(all_rows, os.path.join(output_dir, "whole_run_comparison.png"))
  return summary


def main():
  flags = parse_flags()
  if flags.combine_only:
    print(json.dumps(combine(flags.output_dir), indent=1))
    return
  os.environ["DISENTANGLEMENT_LIB_DATA"] = os.path.abspath(flags.data_dir)
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top,unused-import (registers `dataset`)
  from lievae_tf.data import ground_truth as data_lib  # pylint: disable=g-import-not-at-top
  # One thread each: the two sides run in turn on a shared 2-core machine.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  torch.set_num_threads(1)
  gin.bind_parameter("dataset.name", "dsprites_full")
  ground_truth_data = data_lib.load_ground_truth_data()
  gin.clear_config()

  os.makedirs(flags.output_dir, exist_ok=True)
  metric_names = flags.metrics.split(",") if flags.metrics else []
  for seed in [int(s) for s in flags.seeds.split(",")]:
    rows, max_gaps, model_dirs = run_seed(seed, flags, ground_truth_data)
    summary = dict(
        steps=flags.steps, batch_size=flags.batch_size, epsilon_placement=flags.epsilon_placement,
        num_images=len(data_lib.image_grid(ground_truth_data)),
        seeds={seed: dict(
            max_relative_gap={t: dict(gap=g, step=s) for t, (g, s) in max_gaps.items()},
            final_weight_gap=rows[-1]["weight_gap"],
            scores={side: score(d, metric_names, flags.data_dir)
                    for side, d in model_dirs.items()})})
    with open(os.path.join(flags.output_dir, f"summary_seed_{seed}.json"), "w") as f:
      json.dump(summary, f, indent=1)
  print(json.dumps(combine(flags.output_dir), indent=1))


if __name__ == "__main__":
  main()

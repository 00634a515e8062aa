"""Makes the tests/data/paper_*/ fixtures: a checkpoint written by the paper code itself, and its
outputs, for each setting of SETTINGS.

Runs the unmodified paper code (CommutativeLieGroupVAE-Pytorch, given by --paper_code; nothing of
it is copied here): its `main.py` argument parser with the setting's flags (the published dSprites
or 3DShapes command, changed where the setting says), its `LieCeleb`, its `set_to_loader`, its
training loop `trainin_loop.train` (Adam as its trainer makes it) for a few steps on SYNTHETIC
images, and its `save_model` (model.pt + args.pt). Then it reloads the checkpoint with the paper
code's `model_loader` and records what the paper code's `main_step` gives on fixed synthetic
images: in eval mode (z = mu) and in train mode with known reparameterisation noise on both
reconstruction paths.

Needs torch, numpy, tqdm, tensorboard and matplotlib (the paper code imports them). The commands
that made the stored files are in tests/data/README.md.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile
import types

import numpy as np

# The paper code's README commands, with fewer epochs and no data path.
PUBLISHED_FLAGS = {
    "dsprites": dict(
        model="lie_group", epochs="2", **{"batch-size": "256", "learning-rate": "1e-4"},
        latents="10", subgroup_sizes_ls="[100]", subspace_sizes_ls="[10]",
        lie_alg_init_scale="0.001", hy_hes="40", hy_rec="0.1", hy_commute="0",
        forward_eg_prob="0.2", recons_loss_type="bce", dataset="dsprites",
        eval_dataset="dsprites", split="0"),
    "shapes3d": dict(
        model="lie_group", epochs="2", **{"batch-size": "256", "learning-rate": "1e-4"},
        latents="10", subgroup_sizes_ls="[400]", subspace_sizes_ls="[10]",
        lie_alg_init_scale="0.001", hy_hes="20", hy_rec="0.1", hy_commute="0",
        forward_eg_prob="0.2", recons_loss_type="l2", dataset="shapes3d",
        eval_dataset="shapes3d", split="0"),
}
# Not in the published commands: no images or metrics during these short runs, a relative log path.
RUN_FLAGS = {"log-path": "paper_run", "visualise": "False", "end-metrics": "False"}

# Each setting: the published command it starts from, the flags it changes, and its sizes.
# 3 steps of batch 256 per epoch over NUM_TRAIN_IMAGES, 2 epochs: 6 optimiser steps each.
NUM_TRAIN_IMAGES = 768
SETTINGS = {
    # The published dSprites model (tests/data/paper_lie_celeb).
    "dsprites": dict(published="dsprites", changes={}, fixed_images=8),
    # The published 3DShapes model: l2, one subgroup of 400 (20 x 20 matrices), 3 channels.
    "shapes3d": dict(published="shapes3d", changes={}, fixed_images=4),
    # Two subgroups of different matrix sizes (8 x 8 and 6 x 6) and latent counts; beta != 1 and
    # hy_commute > 0, so that a beta or commutator-form difference shows in the loss; and a basis
    # 200x the published scale, so that expm(sum_j z_j A_j) is far from I + sum_j z_j A_j.
    "two_subgroups": dict(published="dsprites", fixed_images=8, changes=dict(
        subgroup_sizes_ls="[64, 36]", subspace_sizes_ls="[6, 4]", beta="4", hy_commute="5",
        lie_alg_init_scale="0.2")),
    # The paper's ablation: an MLP instead of the exponential map.
    "no_exp": dict(published="dsprites", changes=dict(no_exp="True"), fixed_images=8),
}


def paper_flags(setting):
  """The command-line flags of `setting` for the paper code's main.py."""
  flags = dict(PUBLISHED_FLAGS[SETTINGS[setting]["published"]], **SETTINGS[setting]["changes"],
               **RUN_FLAGS)
  out = []
  for name, value in flags.items():
    out += [f"--{name}", value]
  return out


def synthetic_sprites(num, seed):
  """Binary 64x64 images of one filled ellipse or rectangle each: (num, 1, 64, 64) float32."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:64, 0:64]
  images = np.zeros((num, 1, 64, 64), np.float32)
  for i in range(num):
    cy, cx = rng.uniform(12, 52, size=2)
    ry, rx = rng.uniform(3, 11, size=2)
    if rng.uniform() < 0.5:
      mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    else:
      mask = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
    images[i, 0] = mask
  return images


def synthetic_scenes(num, seed):
  """3DShapes-like 64x64 RGB scenes, uint8 (num, 3, 64, 64): a wall and a floor of random colours
  split at a random horizon, and one ellipse or rectangle of a third colour on them."""
  rng = np.random.default_rng(seed)
  yy, _ = np.mgrid[0:64, 0:64]
  masks = synthetic_sprites(num, seed + 1000)[:, 0] > 0
  images = np.zeros((num, 3, 64, 64), np.uint8)
  for i in range(num):
    wall, floor, shape = rng.integers(0, 256, size=(3, 3))
    horizon = rng.integers(28, 44)
    image = np.where((yy < horizon)[None], wall[:, None, None], floor[:, None, None])
    images[i] = np.where(masks[i][None], shape[:, None, None], image)
  return images


def images_for(dataset, num, seed):
  """(uint8 images as stored, float32 images as the paper code's ToTensor gives them), NCHW."""
  if dataset == "dsprites":
    images = synthetic_sprites(num, seed)  # dSprites' pixels are 0 or 1
    return images.astype(np.uint8), images
  images = synthetic_scenes(num, seed)
  return images, images.astype(np.float32) / 255  # ToTensor of a uint8 RGB image


def stub_torchvision():
  """The paper code imports torchvision for image logging (off here) and for dataset classes this
  script does not use (the images are synthetic). PyPI's torchvision wheels link CUDA libraries
  and do not load beside the CPU build of torch; these placeholders fail loudly if anything calls
  them."""
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
    return
  except Exception:  # pylint: disable=broad-except
    for name in list(sys.modules):
      if name.startswith("torchvision"):
        del sys.modules[name]

  def unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is a placeholder in make_paper_checkpoint.py")

  package = types.ModuleType("torchvision")
  package.__path__ = []
  for name, attributes in (("utils", ("save_image", "make_grid")),
                           ("transforms", ("ToTensor", "Lambda")), ("datasets", ("CIFAR10",))):
    module = types.ModuleType(f"torchvision.{name}")
    for attribute in attributes:
      setattr(module, attribute, unavailable)
    setattr(package, name, module)
    sys.modules[f"torchvision.{name}"] = module
  sys.modules["torchvision"] = package


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--paper_code", required=True, help="checkout of the paper code")
  parser.add_argument("--out", required=True, help="output directory (replaced)")
  parser.add_argument("--setting", default="dsprites", choices=sorted(SETTINGS))
  flags = parser.parse_args()
  paper_code, out = os.path.abspath(flags.paper_code), os.path.abspath(flags.out)
  setting = SETTINGS[flags.setting]

  stub_torchvision()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  sys.path.insert(0, paper_code)
  sys.argv = ["main.py"] + paper_flags(flags.setting)
  import main as paper_main  # parses sys.argv at import, as when run  # pylint: disable=g-import-not-at-top
  from datasets.datasets import dataset_meta, set_to_loader  # pylint: disable=g-import-not-at-top
  from logger.tb import Logger  # pylint: disable=g-import-not-at-top
  from models.models import models  # pylint: disable=g-import-not-at-top
  from models.utils import model_loader  # pylint: disable=g-import-not-at-top
  from trainin_loop import train  # pylint: disable=g-import-not-at-top

  args = paper_main.args
  # As the paper code's trainer.run does before it builds the model.
  args.nc, args.factors = dataset_meta[args.dataset]["nc"], dataset_meta[args.dataset]["factors"]

  torch.manual_seed(0)
  np.random.seed(0)
  random.seed(0)
  images = torch.from_numpy(images_for(args.dataset, NUM_TRAIN_IMAGES, seed=1)[1])
  labels = torch.zeros(NUM_TRAIN_IMAGES, args.factors - 1, dtype=torch.int64)  # unused by the loss
  trainloader, valloader = set_to_loader(torch.utils.data.TensorDataset(images, labels), None,
                                         args)
  model = models[args.model](args)
  optimiser = torch.optim.Adam(model.parameters(), lr=args.learning_rate)  # as trainer.run
  # trainer.run's loss_fn for its --recons_loss_type.
  if args.recons_loss_type == "l2":
    loss_fn = lambda x_hat, x: (x_hat.sigmoid() - x).pow(2).sum() / x.shape[0]
  else:
    loss_fn = lambda x_hat, x: torch.nn.functional.binary_cross_entropy_with_logits(
        x_hat.view(x_hat.size(0), -1), x.view(x.size(0), -1), reduction="sum") / x.shape[0]

  workdir = tempfile.mkdtemp()
  cwd = os.getcwd()
  os.chdir(workdir)  # args.log_path is relative: the stored args.pt names no local path
  try:
    logger = Logger(args.log_path)
    train(args, args.epochs, trainloader, valloader, model, optimiser, loss_fn, logger, None,
          cuda=False)
    checkpoint_dir = os.path.join(logger.log_dir, "checkpoints")
    if os.path.isdir(out):
      shutil.rmtree(out)
    shutil.copytree(checkpoint_dir, os.path.join(out, "checkpoints"))
  finally:
    os.chdir(cwd)
    shutil.rmtree(workdir)

  # The saved checkpoint, reloaded the paper code's way.
  state, _ = model_loader(os.path.join(out, "checkpoints"))
  # The paper code's own torch.load of args.pt (torch 1.7) fails under torch >= 2.6, whose
  # default is weights_only=True; this file is the one written just above.
  saved_args = torch.load(os.path.join(out, "checkpoints", "args.pt"), weights_only=False)
  model = models[saved_args.model](saved_args)
  model.load_state_dict(state, strict=True)
  num_fixed = setting["fixed_images"]
  stored, fixed = images_for(saved_args.dataset, num_fixed, seed=2)
  fixed = torch.from_numpy(fixed)
  batch = (fixed, torch.zeros(num_fixed, saved_args.factors - 1, dtype=torch.int64))
  record = dict(images=stored, paper_commit=np.array(
      os.popen(f"git -C {paper_code} rev-parse HEAD").read().strip()))
  if saved_args.dataset != "dsprites":
    record["image_scale"] = np.array(1 / 255, np.float32)  # the model's input is images / 255

  def keep(prefix, out_dict, state_keys):
    logs, st = out_dict["out"], out_dict["state"]
    for key, value in logs.items():
      record[f"{prefix}/{key.split('/', 1)[1]}"] = np.asarray(value.detach().numpy(), np.float64)
    for key in state_keys:
      record[f"{prefix}/{key}"] = st[key].detach().numpy()

  with torch.no_grad():
    model.eval()
    keep("eval", model.main_step(batch, 0, loss_fn),
         ("mu", "lv", "z", "x_eg", "x_gg", "x_z_rec", "x_eg_rec"))
    model.train()
    for name, np_seed in (("train_gg", 0), ("train_eg", 7)):
      # main_step draws its path with np.random.uniform() and its noise with torch.randn_like.
      np.random.seed(np_seed)
      use_eg = np.random.uniform() < saved_args.forward_eg_prob
      torch.manual_seed(100 + np_seed)
      noise = torch.randn(num_fixed, saved_args.latents)
      torch.manual_seed(100 + np_seed)
      np.random.seed(np_seed)
      # What depends on the noise (the encoder's outputs and x_eg_rec are those of "eval").
      keep(name, model.main_step(batch, 0, loss_fn), ("mu", "lv", "z", "x_gg", "x_z_rec"))
      record[f"{name}/noise"] = noise.numpy()
      record[f"{name}/use_eg_path"] = np.array(use_eg)
      z_check = record[f"{name}/mu"] + np.exp(0.5 * record[f"{name}/lv"]) * noise.numpy()
      assert np.allclose(z_check, record[f"{name}/z"], atol=1e-6), "noise was not the recorded"
  assert not record["train_gg/use_eg_path"] and record["train_eg/use_eg_path"]
  np.savez_compressed(os.path.join(out, "expected_outputs.npz"), **record)
  print("wrote", out, sorted(record))


if __name__ == "__main__":
  main()

"""Makes tests/data/paper_lie_celeb/: a checkpoint written by the paper code itself, and its outputs.

Runs the unmodified paper code (CommutativeLieGroupVAE-Pytorch, given by --paper_code; nothing of
it is copied here): its `main.py` argument parser with the published dSprites flags, its
`LieCeleb`, its `set_to_loader`, its training loop `trainin_loop.train` (Adam as its trainer
makes it) for a few steps on SYNTHETIC images, and its `save_model` (model.pt + args.pt). Then it
reloads the checkpoint with the paper code's `model_loader` and records what the paper code's
`main_step` gives on fixed synthetic images: in eval mode (z = mu) and in train mode with known
reparameterisation noise on both reconstruction paths.

Needs torch, numpy, tqdm, tensorboard and matplotlib (the paper code imports them). The command
that made the stored files is in tests/data/README.md.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile
import types

import numpy as np

# The published dSprites command (the paper code's README) with fewer epochs and no data path.
PAPER_FLAGS = [
    "--model=lie_group", "--epochs=2", "--batch-size=256", "--latents", "10",
    "--learning-rate=1e-4", "--subgroup_sizes_ls", "[100]", "--subspace_sizes_ls", "[10]",
    "--lie_alg_init_scale", "0.001", "--hy_hes", "40", "--hy_rec", "0.1", "--hy_commute", "0",
    "--forward_eg_prob=0.2", "--recons_loss_type=bce", "--log-path=paper_run",
    "--dataset=dsprites", "--eval_dataset=dsprites", "--split=0",
    # Not in the published command: no images or metrics during this short run.
    "--visualise=False", "--end-metrics=False",
]
NUM_TRAIN_IMAGES = 768  # 3 steps of batch 256 per epoch, 2 epochs: 6 optimiser steps
NUM_FIXED_IMAGES = 8


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


def stub_torchvision():
  """The paper code imports torchvision for image logging (off here) and for dataset classes this
  script does not use (the images come from `synthetic_sprites`). PyPI's torchvision wheels link
  CUDA libraries and do not load beside the CPU build of torch; these placeholders fail loudly if
  anything calls them."""
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
  flags = parser.parse_args()
  paper_code, out = os.path.abspath(flags.paper_code), os.path.abspath(flags.out)

  stub_torchvision()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  sys.path.insert(0, paper_code)
  sys.argv = ["main.py"] + PAPER_FLAGS
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
  images = torch.from_numpy(synthetic_sprites(NUM_TRAIN_IMAGES, seed=1))
  labels = torch.zeros(NUM_TRAIN_IMAGES, 4, dtype=torch.int64)  # unused by the loss
  trainloader, valloader = set_to_loader(torch.utils.data.TensorDataset(images, labels), None,
                                         args)
  model = models[args.model](args)
  optimiser = torch.optim.Adam(model.parameters(), lr=args.learning_rate)  # as trainer.run
  # trainer.run's loss_fn for --recons_loss_type=bce.
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
  fixed = torch.from_numpy(synthetic_sprites(NUM_FIXED_IMAGES, seed=2))
  batch = (fixed, torch.zeros(NUM_FIXED_IMAGES, 4, dtype=torch.int64))
  record = dict(images=fixed.numpy().astype(np.uint8), paper_commit=np.array(
      os.popen(f"git -C {paper_code} rev-parse HEAD").read().strip()))

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
      noise = torch.randn(NUM_FIXED_IMAGES, saved_args.latents)
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

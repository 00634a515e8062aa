"""`lievae_import_torch` on a checkpoint written by the paper code itself reproduces the paper
code's own outputs.

tests/data/paper_lie_celeb/ holds a `LieCeleb` checkpoint that the paper code's training loop
wrote after 6 Adam steps on synthetic images (its `save_model` format: model.pt + args.pt), and
what the paper code's `main_step` gave on 8 fixed synthetic images: in eval mode (z = mu) and in
train mode with recorded noise on either reconstruction path. tests/data/README.md has the
command that made them. The other parity tests compare with the project's own PyTorch reference;
this one needs no PyTorch at all.

The paper code logs its group-loss terms after weighting them (`rec_loss *= hy_rec` multiplies
the logged tensor in place), where our `loss_terms` keep them unweighted: they are compared
weighted.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from lievae_tf.interop import torch_import

tf1 = tf.compat.v1

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "paper_lie_celeb")
CHECKPOINT = os.path.join(DATA, "checkpoints")
RTOL = 1e-5


@pytest.fixture(scope="module")
def recorded():
  with np.load(os.path.join(DATA, "expected_outputs.npz")) as f:
    return dict(f)


@pytest.fixture(scope="module")
def imported():
  vae, config = torch_import.load_checkpoint(CHECKPOINT)
  return vae, config


def _images(recorded):
  return tf.constant(recorded["images"].astype(np.float32).transpose(0, 2, 3, 1))  # NCHW -> NHWC


def _close(ours, theirs, name):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, name
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * np.abs(theirs).max(),
                             err_msg=name)


def _nchw(logits):
  return np.asarray(logits).transpose(0, 3, 1, 2)


def _check_loss_terms(terms, recorded, prefix, config):
  weights = dict(gfeat_rec_loss=config["hy_rec"], hessian_loss=config["hy_hes"],
                 commute_loss=config["hy_commute"])
  for name in ("loss", "recon_loss", "beta_kl", "total_kl", "group_loss", "gfeat_rec_loss",
               "hessian_loss", "commute_loss"):
    ours = float(terms[name]) * weights.get(name, 1.0)
    _close(ours, float(np.ravel(recorded[f"{prefix}/{name}"])[0]), f"{prefix}/{name}")
  _close(terms["group_feats_mse"], recorded[f"{prefix}/mse_x_gg_eg"], f"{prefix}/mse_x_gg_eg")
  kl_per_latent = [recorded[f"{prefix}/latent_{i}"] for i in range(len(terms["kl_per_latent"]))]
  _close(terms["kl_per_latent"], kl_per_latent, f"{prefix}/latent_i")


def test_the_checkpoint_is_the_paper_codes_dsprites_model(imported, recorded):
  _, config = imported
  assert config["dataset_name"] == "dsprites_full"
  assert config["subgroup_sizes"] == [100] and config["subspace_sizes"] == [10]
  assert config["recons_loss_type"] == "bce" and config["hy_hes"] == 40.0
  assert config["paper_args"]["model"] == "lie_group"
  assert len(str(recorded["paper_commit"])) == 40


def test_eval_outputs_match_the_paper_code(imported, recorded):
  vae, config = imported
  images = _images(recorded)
  terms = vae.loss_terms(images, tf.zeros([images.shape[0], vae.num_latents]))
  _close(terms["mu"], recorded["eval/mu"], "mu")
  _close(terms["logvar"], recorded["eval/lv"], "logvar")
  _close(terms["group_feats_E"], recorded["eval/x_eg"], "group features gE")
  _close(terms["group_feats_G"], recorded["eval/x_gg"], "group features gG")
  _close(_nchw(terms["logits"]), recorded["eval/x_z_rec"], "logits decoded from gG")
  _close(_nchw(vae.decode(terms["group_feats_E"])), recorded["eval/x_eg_rec"],
         "logits decoded from gE")
  _check_loss_terms(terms, recorded, "eval", config)


@pytest.mark.parametrize("prefix", ["train_gg", "train_eg"])
def test_training_mode_outputs_with_the_recorded_noise_match(imported, recorded, prefix):
  vae, config = imported
  use_eg_path = bool(recorded[f"{prefix}/use_eg_path"])
  assert use_eg_path == (prefix == "train_eg")
  terms = vae.loss_terms(_images(recorded), tf.constant(recorded[f"{prefix}/noise"]),
                         use_eg_path=use_eg_path)
  _close(terms["z"], recorded[f"{prefix}/z"], "z")
  _close(terms["group_feats_G"], recorded[f"{prefix}/x_gg"], "group features gG")
  expected_logits = recorded["eval/x_eg_rec" if use_eg_path else f"{prefix}/x_z_rec"]
  _close(_nchw(terms["logits"]), expected_logits, "the reconstruction's logits")
  _check_loss_terms(terms, recorded, prefix, config)


def test_the_exported_module_gives_the_paper_codes_mean_and_logvar(recorded, tmp_path):
  """Through `import_checkpoint` (the command's function) to the TF-Hub module dlib reads."""
  model_dir = str(tmp_path / "imported")
  torch_import.import_checkpoint(CHECKPOINT, model_dir)
  images = recorded["images"].astype(np.float32).transpose(0, 2, 3, 1)
  with tf.Graph().as_default():
    module = hub.Module(os.path.join(model_dir, "tfhub"))
    outputs = module(dict(images=images), signature="gaussian_encoder", as_dict=True)
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      outputs = session.run(outputs)
  _close(outputs["mean"], recorded["eval/mu"], "exported mean")
  _close(outputs["logvar"], recorded["eval/lv"], "exported logvar")

"""Number-for-number parity with PyTorch: random models of `tests/torch_reference.py` (docs/model.md
in PyTorch, the paper code's parameter names) are saved in the paper code's checkpoint format,
imported, and every quantity of a step is compared, as are the exported module's signatures,
the gradients and one Adam step.

"Agree to 1e-5" is relative to each tensor's scale: max |ours - torch| <= 1e-5 max |torch|
(elementwise relative errors are meaningless for entries that cross zero).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from lievae_tf.interop import torch_import
from lievae_tf.models import lie_group
from lievae_tf import training

import conftest  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason=conftest.TORCH_MISSING)
import torch_reference  # pylint: disable=g-import-not-at-top,g-bad-import-order (needs torch)

tf1 = tf.compat.v1
RTOL = 1e-5
LEARNING_RATE = 1e-4

# The four settings of the issue: the paper's dSprites and 3DShapes models, two subgroups, and the
# no_exp ablation. hy_commute > 0 where set, so that the commutator enters the loss.
SETTINGS = {
    "dsprites": dict(dataset="dsprites", subgroup_sizes_ls=[100], subspace_sizes_ls=[10], nc=1,
                     recons_loss_type="bce", hy_hes=40.0),
    "shapes3d": dict(dataset="shapes3d", subgroup_sizes_ls=[400], subspace_sizes_ls=[10], nc=3,
                     recons_loss_type="l2", hy_hes=20.0),
    "two_subgroups": dict(dataset="dsprites", subgroup_sizes_ls=[100, 64],
                          subspace_sizes_ls=[6, 4], nc=1, recons_loss_type="bce", hy_hes=40.0,
                          hy_commute=5.0),
    "no_exp": dict(dataset="dsprites", subgroup_sizes_ls=[100], subspace_sizes_ls=[10], nc=1,
                   recons_loss_type="bce", hy_hes=40.0, hy_commute=3.0, no_exp=True),
}
# Far above the published 0.001, so that the Hessian and commutator penalties are not ~0.
BASIS_SCALE = 0.1


def assert_close(ours, theirs, name, rtol=RTOL):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, name
  scale = np.abs(theirs).max()
  error = np.abs(ours - theirs).max()
  assert error <= rtol * scale, f"{name}: max difference {error:.3g} > {rtol} x {scale:.3g}"


def nhwc(array):
  """torch's (B, C, H, W) -> (B, H, W, C); other arrays unchanged."""
  array = array.detach().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
  return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


@pytest.fixture(scope="module", params=list(SETTINGS))
def setting(request, tmp_path_factory):
  """A random torch model saved in the paper code's format, and fixed images and noise."""
  settings = dict(SETTINGS[request.param])
  dataset = settings.pop("dataset")
  torch.manual_seed(sorted(SETTINGS).index(request.param))
  model = torch_reference.LieGroupVAE(lie_alg_init_scale=BASIS_SCALE, **settings)
  with torch.no_grad():
    # Larger means and log-variances than at init, so that the KL is far from 0 and float32
    # cancellation in 1 + logvar - exp(logvar) does not dominate the comparison.
    for head in list(model.encoder.to_means) + list(model.encoder.to_logvar):
      head[2].weight.mul_(10.0)
  log_path = str(tmp_path_factory.mktemp(request.param) / "log")
  checkpoint_dir = torch_reference.save_checkpoint(model, log_path, dataset)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(8, 64, 64, settings["nc"])).astype(np.float32)
  if dataset == "dsprites":
    images = (images > 0.7).astype(np.float32)  # binary, as dSprites
  noise = rng.normal(size=(8, sum(settings["subspace_sizes_ls"]))).astype(np.float32)
  return dict(name=request.param, model=model, dataset=dataset, checkpoint_dir=checkpoint_dir,
              images=images, noise=noise, log_path=log_path)


def torch_terms(setting, use_eg_path):
  model = setting["model"]
  with torch.no_grad():
    terms = model.loss_terms(torch.from_numpy(setting["images"].transpose(0, 3, 1, 2)),
                             torch.from_numpy(setting["noise"]), use_eg_path=use_eg_path)
  return {k: nhwc(v) for k, v in terms.items()}


def test_checkpoint_is_in_the_paper_codes_layout(setting):
  checkpoint_dir = setting["checkpoint_dir"]
  assert checkpoint_dir.endswith("version_0/checkpoints")
  state = torch.load(f"{checkpoint_dir}/model.pt", weights_only=True)
  settings = SETTINGS[setting["name"]]
  num_latents = sum(settings["subspace_sizes_ls"])
  # The paper code's LieCeleb names: one (1, m, m) basis per latent, convs at 0/2/4/6, linears
  # at 9/11 of prior_group, transposed convs at 5/7/9/11 of post_exp.
  assert [k for k in state if "lie_alg_basis_ls" in k] == [
      f"decoder.lie_alg_basis_ls.{k}" for k in range(num_latents)]
  m = int(settings["subgroup_sizes_ls"][0]**0.5)
  assert state["decoder.lie_alg_basis_ls.0"].shape == (1, m, m)
  assert state["encoder.prior_group.0.weight"].shape == (32, settings["nc"], 4, 4)
  assert state["encoder.prior_group.9.weight"].shape == (256, 1024)
  assert state["decoder.post_exp.11.weight"].shape == (32, settings["nc"], 4, 4)
  assert ("decoder.fake_exp.0.weight" in state) == bool(settings.get("no_exp"))
  args = torch_import.read_args(f"{checkpoint_dir}/args.pt")
  assert (args.model, args.dataset, args.subgroup_sizes_ls) == (
      "lie_group", setting["dataset"], settings["subgroup_sizes_ls"])


def test_every_keras_weight_comes_from_the_checkpoint(setting):
  vae, config = torch_import.load_checkpoint(setting["checkpoint_dir"])
  layout = torch_import.torch_layout(config)
  layers = [torch_import.keras_layer(vae, path) for _, path, _, _ in layout]
  assigned = {id(v) for layer in layers for v in (layer.kernel, layer.bias)}
  assigned |= {id(b) for b in vae.exp_map.bases}
  assert assigned == {id(w) for w in vae.trainable_weights}
  state = torch.load(f"{setting['checkpoint_dir']}/model.pt", weights_only=True)
  assert len(state) == len(vae.trainable_weights) + sum(
      d - 1 for d in config["subspace_sizes"])  # one torch tensor per latent's basis


@pytest.mark.parametrize("use_eg_path", [False, True], ids=["gG_path", "gE_path"])
def test_every_quantity_of_a_step_agrees(setting, use_eg_path):
  vae, config = torch_import.load_checkpoint(setting["checkpoint_dir"])
  ours = vae.loss_terms(setting["images"], setting["noise"], use_eg_path=use_eg_path)
  theirs = torch_terms(setting, use_eg_path)
  assert set(ours) == set(theirs)
  for name in theirs:
    assert_close(ours[name], theirs[name], name)
  # The penalties are really exercised (a basis scale of 0.001 would make them ~1e-10).
  assert theirs["hessian_loss"] > 1e-3 and theirs["commute_loss"] > 1e-3
  assert config["dataset_name"] == {"dsprites": "dsprites_full",
                                    "shapes3d": "shapes3d"}[setting["dataset"]]


def test_exported_signatures_agree(setting, tmp_path):
  model_dir = str(tmp_path / "imported")
  torch_import.import_checkpoint(setting["checkpoint_dir"], model_dir)
  with open(f"{model_dir}/results/gin/train.gin") as f:
    operative = f.read()
  dataset_name = {"dsprites": "dsprites_full", "shapes3d": "shapes3d"}[setting["dataset"]]
  assert f"dataset.name = '{dataset_name}'" in operative  # what dlib_postprocess reads
  assert f"LieGroupVAE.no_exp = {bool(SETTINGS[setting['name']].get('no_exp'))}" in operative
  theirs = torch_terms(setting, use_eg_path=False)
  latents = setting["noise"]  # any latent vectors
  with torch.no_grad():
    model = setting["model"]
    decoded = nhwc(model.decoder(model.decoder.group_map(torch.from_numpy(latents))))
  with tf.Graph().as_default():
    module = hub.Module(f"{model_dir}/tfhub")  # as dlib_postprocess loads it
    encoded = module(dict(images=setting["images"]), signature="gaussian_encoder", as_dict=True)
    images = module(dict(latent_vectors=latents), signature="decoder", as_dict=True)["images"]
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      got = session.run(dict(mean=encoded["mean"], logvar=encoded["logvar"], decoded=images))
  assert_close(got["mean"], theirs["mu"], "gaussian_encoder mean")
  assert_close(got["logvar"], theirs["logvar"], "gaussian_encoder logvar")
  assert_close(got["decoded"], decoded, "decoder images")


def _keras_layout(config, state):
  """The torch arrays `state` (parameters or their gradients) in Keras' trainable_weights order."""
  vae = torch_import._new_model(config)  # pylint: disable=protected-access
  torch_import.assign_weights(vae, state, config)
  return [w.numpy() for w in vae.trainable_weights]


@pytest.mark.parametrize("use_eg_path", [False, True], ids=["gG_path", "gE_path"])
def test_gradients_and_one_adam_step_agree(setting, use_eg_path):
  """Gradients agree to 1e-5. Adam differs by design: Keras adds epsilon to sqrt(v) before the
  bias correction ("epsilon hat"), PyTorch after, so Keras with epsilon e steps as PyTorch with
  e / sqrt(1 - 0.999**t). With that correspondence one step agrees to 1e-5 on every weight
  whose gradient is above float32 noise; below it, Adam turns noise into a step of up to lr."""
  vae, config = torch_import.load_checkpoint(setting["checkpoint_dir"])
  model_config = {k: v for k, v in config.items() if k not in ("dataset_name", "paper_args")}
  images, noise = setting["images"], setting["noise"]
  before = [w.numpy() for w in vae.trainable_weights]

  # The paper code's step (three decodes, torch Adam with epsilon 1e-8) on a copy of the model.
  model = torch_reference.LieGroupVAE(**setting["model"].settings)
  model.load_state_dict(setting["model"].state_dict())
  torch_reference.PaperTrainStep(model, learning_rate=LEARNING_RATE)(
      torch.from_numpy(images.transpose(0, 3, 1, 2)), torch.from_numpy(noise),
      use_eg_path=use_eg_path)
  state_after = {k: v.numpy() for k, v in model.state_dict().items()}
  torch_gradients = _keras_layout(model_config, {
      **state_after, **{k: p.grad.numpy() for k, p in model.named_parameters()}})
  torch_after = _keras_layout(model_config, state_after)

  with tf.GradientTape() as tape:
    loss = vae.loss_terms(images, noise, use_eg_path=use_eg_path)["loss"]
  gradients = tape.gradient(loss, vae.trainable_variables)
  for weight, ours, theirs in zip(vae.trainable_weights, gradients, torch_gradients):
    assert_close(ours, theirs, f"gradient of {weight.name}")

  bias_correction = np.sqrt(1 - 0.999)  # step 1
  noise_level = total = 0
  for epsilon, torch_epsilon in ((1e-8 * bias_correction, 1e-8), (1e-8, None)):
    for weight, value in zip(vae.trainable_weights, before):
      weight.assign(value)
    # lievae_train's optimizer (gin `optimizer`), with the given epsilon.
    training.make_optimizer(learning_rate=LEARNING_RATE, epsilon=epsilon).apply_gradients(
        zip(gradients, vae.trainable_variables))
    for weight, theirs, gradient, old in zip(vae.trainable_weights, torch_after, torch_gradients,
                                             before):
      ours = weight.numpy()
      # Adam's first step moves each weight by at most lr (plus float32 rounding of w - step).
      assert np.abs(ours - old).max() <= LEARNING_RATE * 1.01
      assert np.abs(theirs - old).max() <= LEARNING_RATE * 1.01
      if torch_epsilon is None:
        continue
      above_noise = np.abs(gradient) >= 1e-5 * np.abs(gradient).max()
      assert_close(ours[above_noise], theirs[above_noise], f"Adam step of {weight.name}")
      noise_level += np.sum(~above_noise & (gradient != 0))
      total += gradient.size
  # Gradients at float32 noise level are a tiny fraction (the other small ones are exact zeros).
  assert noise_level / total < 0.005


def test_commutator_forms():
  """Commuting bases (polynomials of one matrix) have no bracket A_j A_k - A_k A_j, but their
  products are not symmetric: the paper code's form (the default, each product minus its
  transpose) is not zero here. The Keras model computes the same with either form."""
  m = torch.tensor(np.random.default_rng(0).normal(size=(4, 4)), dtype=torch.float32)
  basis = torch.stack([m, m @ m, 0.5 * m + torch.eye(4)])
  products = torch_reference.basis_products(basis)
  paper_codes_form = (products - products.transpose(2, 3)).square().sum(dim=(2, 3)).mean()
  hessian, commute = torch_reference.group_penalties([basis])
  assert commute.item() == paper_codes_form.item()  # the same operations
  assert commute.item() > 1.0
  _, bracket = torch_reference.group_penalties([basis], "bracket")
  assert bracket.item() < 1e-6 * hessian.item()
  for form, value in (("paper_code", commute), ("bracket", bracket)):
    ours = lie_group.commutator_penalty(tf.constant(basis.numpy()), form).numpy()
    assert abs(ours - value.item()) <= 1e-5 * hessian.item(), form
